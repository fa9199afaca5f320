"""Second-order factorization machine term (Rendle 2010):

fm(v_1..v_n) = 1/2 * sum_d [ (sum_i v_id)^2 - sum_i v_id^2 ]  (sum of pairwise <v_i, v_j>)
"""
import keras
from keras import ops


class FM(keras.layers.Layer):
    """List of n (batch, dim) embeddings, or (batch, n, dim) -> (batch, 1); with use_variant
    the per-dimension terms (batch, dim) before the final sum."""

    def __init__(self, use_variant=False, **kwargs):
        super().__init__(**kwargs)
        self.use_variant = bool(use_variant)

    def call(self, embeddings):
        if isinstance(embeddings, (list, tuple)):
            dims = {e.shape[-1] for e in embeddings}
            if len(dims) != 1:
                raise ValueError(f"FM needs embeddings of one width, got widths {sorted(dims)}.")
            embeddings = ops.stack(embeddings, axis=1)  # (batch, n, dim)
        square_of_sum = ops.square(ops.sum(embeddings, axis=1))  # (batch, dim)
        sum_of_square = ops.sum(ops.square(embeddings), axis=1)  # (batch, dim)
        if self.use_variant:
            return 0.5 * (square_of_sum - sum_of_square)
        return 0.5 * ops.sum(square_of_sum - sum_of_square, axis=1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "use_variant": self.use_variant}
