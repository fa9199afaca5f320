"""CL4SRec's sequence augmentation (Xie et al. 2022, "Contrastive Learning for Sequential
Recommendation"), EasyRec's SeqAugment layer.

The input is what an input_layer with output_seq_and_normal_feature gives:
[history (batch, len, d), mask (batch, len) bool, optional target (batch, d_t)], the real
positions first (the mask is True on a prefix of each row). While training, each row gets
one transformation, picked uniformly among those enabled (as EasyRec does per row):

  crop     (crop_rate < 1)    keep a random contiguous c = floor(n * crop_rate) positions
                              starting at s ~ U{0..n-c-1} (s = 0 when n = c), moved to the
                              front; the row then has c real positions
  mask     (mask_rate > 0)    replace floor(n * mask_rate) real positions, chosen uniformly,
                              by a learned mask embedding (d,)
  reorder  (reorder_rate > 0) shuffle a random contiguous r = floor(n * reorder_rate)
                              positions starting at s ~ U{0..n-r-1}

where n is the row's number of real positions. Outside training the input passes unchanged
(the augmentation only feeds a training loss). The output has the input's structure: the
augmented history, its mask, and the target unchanged.
"""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtrec")
class SeqAugment(keras.layers.Layer):
    """[hist (batch, len, d), mask (batch, len) bool, (target (batch, d_t))] -> the same
    list with the history augmented while training."""

    def __init__(self, mask_rate=0.6, crop_rate=0.2, reorder_rate=0.6, seed=None, **kwargs):
        super().__init__(**kwargs)
        for field, rate in (("mask_rate", mask_rate), ("crop_rate", crop_rate),
                            ("reorder_rate", reorder_rate)):
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"SeqAugment {field} must be in [0, 1], got {rate}.")
        self.mask_rate = float(mask_rate)
        self.crop_rate = float(crop_rate)
        self.reorder_rate = float(reorder_rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # The transformations in EasyRec's order; a row picks one of them.
        self.transforms = ([name for name, on in (("crop", self.crop_rate < 1.0),
                                                  ("mask", self.mask_rate > 0.0),
                                                  ("reorder", self.reorder_rate > 0.0)) if on])
        self.mask_embedding = None

    @staticmethod
    def _parts(inputs, shapes=False):
        ok = isinstance(inputs, (list, tuple)) and len(inputs) in (2, 3) and (
            not shapes or all(isinstance(s, (list, tuple)) for s in inputs))
        if not ok:
            raise ValueError("SeqAugment takes [history (batch, len, d), mask (batch, len)] or "
                             "[history, mask, target] (an input_layer with "
                             "output_seq_and_normal_feature).")
        return list(inputs)

    def build(self, input_shape):
        hist = self._parts(input_shape, shapes=True)[0]
        if len(hist) != 3 or hist[-1] is None:
            raise ValueError(f"SeqAugment needs a history of shape (batch, len, d) with a "
                             f"known d, got {tuple(hist)}.")
        if "mask" in self.transforms:
            self.mask_embedding = self.add_weight(shape=(int(hist[-1]),),
                                                  initializer="glorot_uniform",
                                                  name="mask_embedding")

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in self._parts(input_shape, shapes=True)]

    def call(self, inputs, training=False):
        parts = self._parts(inputs)
        if not training or not self.transforms:
            return parts
        hist, mask = parts[0], ops.cast(parts[1], "bool")                 # (batch, len, d)
        batch, length = ops.shape(hist)[0], ops.shape(hist)[1]
        n = ops.sum(ops.cast(mask, "int32"), axis=1)                      # (batch,)
        pos = ops.arange(length, dtype="int32")[None]                     # (1, len)
        outputs = {}
        if "crop" in self.transforms:
            outputs["crop"] = self._crop(hist, n, pos)
        if "mask" in self.transforms:
            outputs["mask"] = (self._mask(hist, mask, n), mask)
        if "reorder" in self.transforms:
            outputs["reorder"] = (self._reorder(hist, n, pos), mask)
        which = self._uniform_int((batch,), len(self.transforms))        # (batch,)
        out_hist, out_mask = outputs[self.transforms[0]]
        for k, name in enumerate(self.transforms[1:], 1):
            pick = ops.equal(which, k)                                    # (batch,)
            out_hist = ops.where(pick[:, None, None], outputs[name][0], out_hist)
            out_mask = ops.where(pick[:, None], outputs[name][1], out_mask)
        return [out_hist, out_mask] + parts[2:]

    def _uniform(self, shape):
        return keras.random.uniform(shape, dtype="float32", seed=self.seed_generator)

    def _uniform_int(self, shape, high):
        """Integers uniform in [0, high) (high: an int or an int32 tensor of shape)."""
        high = ops.cast(high, "float32")
        return ops.cast(ops.minimum(ops.floor(self._uniform(shape) * high), high - 1.0),
                        "int32")

    def _count(self, n, rate):
        """floor(n * rate) per row, as EasyRec computes it (float32)."""
        return ops.cast(ops.floor(ops.cast(n, "float32") * rate), "int32")

    def _start(self, n, count):
        """A start uniform in [0, n - count), or 0 when count = n."""
        room = ops.maximum(n - count, 1)
        return self._uniform_int(ops.shape(n), room)

    def _crop(self, hist, n, pos):
        count = self._count(n, self.crop_rate)                            # (batch,)
        start = self._start(n, count)
        keep = pos < count[:, None]                                       # (batch, len)
        index = ops.minimum(start[:, None] + pos, ops.shape(hist)[1] - 1)  # (batch, len)
        taken = ops.take_along_axis(hist, index[:, :, None], axis=1)      # (batch, len, d)
        return taken * ops.cast(keep[:, :, None], hist.dtype), keep

    def _mask(self, hist, mask, n):
        count = self._count(n, self.mask_rate)                            # (batch,)
        # A uniformly random subset of `count` real positions: those whose random key
        # ranks below count among the row's keys (padding keys rank last).
        key = ops.where(mask, self._uniform(ops.shape(mask)), 2.0)        # (batch, len)
        rank = ops.argsort(ops.argsort(key, axis=1), axis=1)
        chosen = mask & (ops.cast(rank, "int32") < count[:, None])        # (batch, len)
        emb = ops.cast(self.mask_embedding, hist.dtype)[None, None]       # (1, 1, d)
        return ops.where(chosen[:, :, None], emb, hist)

    def _reorder(self, hist, n, pos):
        count = self._count(n, self.reorder_rate)                         # (batch,)
        start = self._start(n, count)[:, None]                            # (batch, 1)
        inside = (pos >= start) & (pos < start + count[:, None])          # (batch, len)
        # Sorting keys: a position outside the segment keeps its index; inside, a random
        # key in [start, start + count - 0.5), so the segment is permuted uniformly and
        # stays in place.
        spread = ops.cast(count[:, None], "float32") - 0.5
        key = ops.where(inside, ops.cast(start, "float32")
                        + self._uniform(ops.shape(inside)) * spread,
                        ops.cast(pos, "float32"))                         # (batch, len)
        index = ops.cast(ops.argsort(key, axis=1), "int32")               # (batch, len)
        return ops.take_along_axis(hist, index[:, :, None], axis=1)

    def compute_mask(self, *args, **kwargs):
        return None

    def get_config(self):
        return {**super().get_config(), "mask_rate": self.mask_rate,
                "crop_rate": self.crop_rate, "reorder_rate": self.reorder_rate,
                "seed": self.seed}
