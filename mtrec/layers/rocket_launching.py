"""Rocket Launching (Zhou et al., AAAI 2018): a booster (teacher) net and a light (student)
net on one input, trained together; the light net sees only a stop-gradient copy of the
input, so it learns from its own loss and from hints of the booster, never trains the
shared layers.

  booster = DNN_b(x), light = DNN_l(stop_gradient(x))
  hint loss (logits):  mean over rows of mean_c (z_light - stop_gradient(z_booster))^2
  feature hints: light layer i is matched with the first booster layer j of its width;
    COSINE  per row cos(h_light_i, stop_gradient(h_booster_j)), term -0.1 * its mean;
    EUCLID  per row |h_light_i - stop_gradient(h_booster_j)|^2, term 0.1 * sqrt(its sum).
"""
import keras
import tensorflow as tf

from mtrec.layers.dnn import DNN

SIMILARITIES = ("cosine", "euclid")


def _layer_stack(args: dict, l2_regularization: float, prefix: str) -> list:
    """One single-layer DNN per hidden layer of DNN keyword arguments `args` (the same maths
    as DNN(**args)), so every hidden output can be read."""
    units = args["hidden_units"]
    rates = list(args["dropout_ratio"])
    if len(rates) == 1:
        rates = rates * len(units)
    if rates and len(rates) != len(units):
        raise ValueError(f"{prefix}: dropout_ratio needs 1 or {len(units)} values, got "
                         f"{len(rates)}.")
    return [DNN([u], args["activation"], args["use_bn"], rates[i:i + 1] if rates else (),
                l2_regularization, name=f"{prefix}_{i}") for i, u in enumerate(units)]


class BoosterLightNets(keras.layers.Layer):
    """x (batch, d) -> (booster output (batch, b), light output (batch, l), feature hints:
    [(batch,) per matched layer pair] when `similarity` is "cosine" or "euclid", else [])."""

    def __init__(self, booster_args: dict, light_args: dict, l2_regularization=0.0,
                 similarity=None, **kwargs):
        super().__init__(**kwargs)
        if not booster_args["hidden_units"] or not light_args["hidden_units"]:
            raise ValueError("BoosterLightNets needs hidden_units for both nets.")
        if similarity is not None and similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES} or None, not "
                             f"{similarity!r}.")
        self.similarity = similarity
        self.booster = _layer_stack(booster_args, l2_regularization, "booster_dnn")
        self.light = _layer_stack(light_args, l2_regularization, "light_dnn")
        booster_units = list(booster_args["hidden_units"])
        # (light layer, booster layer) pairs of one width: the first booster layer per light.
        self.pairs = [(i, booster_units.index(u))
                      for i, u in enumerate(light_args["hidden_units"]) if u in booster_units]

    def build(self, input_shape):
        for stack in (self.booster, self.light):
            shape = tuple(input_shape)
            for layer in stack:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    @staticmethod
    def _run(stack, x, training):
        hidden = []
        for layer in stack:
            x = layer(x, training=training)
            hidden.append(x)
        return hidden

    def call(self, x, training=False):
        booster = self._run(self.booster, x, training)
        light = self._run(self.light, tf.stop_gradient(x), training)
        hints = []
        if self.similarity is not None:
            for i, j in self.pairs:
                teacher = tf.stop_gradient(booster[j])  # (batch, u)
                if self.similarity == "cosine":
                    hints.append(tf.reduce_sum(tf.math.l2_normalize(teacher, axis=1)
                                               * tf.math.l2_normalize(light[i], axis=1), axis=1))
                else:
                    hints.append(tf.reduce_sum(tf.square(teacher - light[i]), axis=1))
        return booster[-1], light[-1], hints

    def get_config(self):
        return {**super().get_config(), "similarity": self.similarity}


def feature_hint_loss(hint, similarity: str):
    """Scalar term of one matched layer pair's per-row hint values (see the module doc)."""
    if similarity == "cosine":
        return -0.1 * tf.reduce_mean(hint)
    # The epsilon keeps the gradient finite when the nets agree exactly.
    return 0.1 * tf.sqrt(tf.reduce_sum(hint) + 1e-12)


def logit_hint_loss(light_logits, booster_logits, weights=None):
    """Mean over rows (weighted by `weights`) of the mean squared difference between the
    light logits and the stop-gradient booster logits; (batch,) or (batch, c) logits."""
    diff = tf.square(light_logits - tf.stop_gradient(booster_logits))
    if diff.shape.rank == 2:
        diff = tf.reduce_mean(diff, axis=1)  # (batch,)
    if weights is None:
        return tf.reduce_mean(diff)
    return tf.reduce_sum(diff * weights) / tf.maximum(tf.reduce_sum(weights), 1e-12)
