"""DLRM's feature interaction (Naumov et al. 2019): the dot products of every pair of
embeddings, e_i . e_j for i > j (i >= j with self_interaction)."""
import keras
import numpy as np
from keras import ops


class DotInteraction(keras.layers.Layer):
    """List of n (batch, d) tensors, or (batch, n, d) -> (batch, n(n-1)/2), (batch, n(n+1)/2)
    with self_interaction, or (batch, n * n) with skip_gather (the full matrix with the
    upper triangle zeroed; the rows stay in place)."""

    def __init__(self, self_interaction=False, skip_gather=False, **kwargs):
        super().__init__(**kwargs)
        self.self_interaction = bool(self_interaction)
        self.skip_gather = bool(skip_gather)

    def _stack(self, inputs):
        if isinstance(inputs, (list, tuple)):
            dims = {int(x.shape[-1]) for x in inputs}
            if len(dims) != 1:
                raise ValueError(f"DotInteraction needs embeddings of one width, got widths "
                                 f"{sorted(dims)}.")
            return ops.stack(list(inputs), axis=1)  # (batch, n, d)
        if len(inputs.shape) != 3:
            raise ValueError("DotInteraction takes a list of (batch, d) tensors or a "
                             f"(batch, n, d) tensor, got shape {inputs.shape}.")
        return inputs

    def _mask(self, n):
        """(n, n) lower triangle: below the diagonal, or including it."""
        return np.tril(np.ones((n, n), dtype=bool), 0 if self.self_interaction else -1)

    def call(self, inputs):
        x = self._stack(inputs)                              # (batch, n, d)
        n = x.shape[1]
        products = ops.matmul(x, ops.transpose(x, (0, 2, 1)))  # (batch, n, n)
        mask = self._mask(n)
        if self.skip_gather:
            products = products * ops.cast(mask, products.dtype)
            return ops.reshape(products, (-1, n * n))
        rows, cols = np.nonzero(mask)  # row-major order of the kept entries
        flat = ops.reshape(products, (-1, n * n))
        return ops.take(flat, rows * n + cols, axis=1)

    def compute_output_shape(self, input_shape):
        n = len(input_shape) if isinstance(input_shape, list) else input_shape[1]
        if self.skip_gather:
            return (None, n * n)
        return (None, n * (n + 1) // 2 if self.self_interaction else n * (n - 1) // 2)

    def get_config(self):
        return {**super().get_config(), "self_interaction": self.self_interaction,
                "skip_gather": self.skip_gather}
