"""Mixed precision for training (train_config.mixed_precision): the Keras 3 dtype policy the
training model is built under, and dynamic loss scaling for "fp16".

Weights stay float32 (the policy's variable dtype) and Keras layers cast them to the compute
type. Embedding tables are plain float32 variables whose lookups the next layer casts, so
their gradients come back float32. The model casts tower logits to float32, so heads,
losses and metrics are float32. Nothing here has run on a GPU (docs/training.md).
"""
import contextlib
import logging

import keras
import tensorflow as tf

log = logging.getLogger("mtrec")

# train_config.mixed_precision -> Keras dtype policy.
POLICIES = {"": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


@contextlib.contextmanager
def policy_scope(train_config):
    """Layers created inside take train_config.mixed_precision's dtype policy; the global
    policy is restored on exit (evaluation and export build float32 models)."""
    name = POLICIES[train_config.mixed_precision]
    if name == "float32":
        yield
        return
    if train_config.mixed_precision == "fp16" and not tf.config.list_physical_devices("GPU"):
        log.warning("mixed_precision: fp16 without a GPU: CPUs compute float16 slowly; bf16 "
                    "needs no loss scaling and is fast on CPUs with AVX-512 BF16 or AMX.")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class DynamicLossScale(tf.Module):
    """fp16 loss scaling: the loss is multiplied by `scale` before the gradients, which are
    divided by it after. A step whose gradients are not all finite is skipped and halves the
    scale; `growth_interval` finite steps in a row double it (Keras' LossScaleOptimizer's
    rule, here shared by the dense and the sparse embedding gradients)."""

    def __init__(self, initial_scale=2.0 ** 15, growth_interval=2000):
        super().__init__(name="loss_scale")
        if initial_scale <= 0 or growth_interval < 1:
            raise ValueError(f"DynamicLossScale needs initial_scale > 0 and growth_interval "
                             f">= 1, got {initial_scale} and {growth_interval}.")
        self.growth_interval = int(growth_interval)
        self.scale = tf.Variable(float(initial_scale), trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")

    def scale_loss(self, loss):
        return loss * tf.cast(self.scale, loss.dtype)

    def unscale(self, grads):
        """grads (tensors, IndexedSlices or None) of the scaled loss -> (the same divided by
        the scale, whether every one is finite)."""
        inverse = 1.0 / self.scale
        out, finite = [], []
        for g in grads:
            if g is None:
                out.append(None)
                continue
            if isinstance(g, tf.IndexedSlices):
                values = tf.cast(g.values, tf.float32) * inverse
                out.append(tf.IndexedSlices(values, g.indices, g.dense_shape))
            else:
                values = tf.cast(g, tf.float32) * inverse
                out.append(values)
            finite.append(tf.reduce_all(tf.math.is_finite(values)))
        return out, tf.reduce_all(tf.stack(finite)) if finite else tf.constant(True)

    def update(self, finite):
        """After a step: grow the scale after growth_interval finite steps, halve it (not
        below 1) after a non-finite one."""
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_interval)
        new_scale = tf.where(grow, self.scale * 2.0,
                             tf.where(finite, self.scale, tf.maximum(self.scale / 2.0, 1.0)))
        self.scale.assign(new_scale)
        self.good_steps.assign(tf.where(finite & ~grow, self.good_steps + 1,
                                        tf.zeros_like(self.good_steps)))
