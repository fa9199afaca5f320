"""Compressed Interaction Network of xDeepFM (Lian et al. 2018, "xDeepFM: Combining
Explicit and Implicit Feature Interactions for Recommender Systems").

Input x0: (batch, h0, d), h0 field embeddings of one width d. Layer k (sizes h_1 .. h_K):
  x_k[b, m, :] = relu( sum_{i, j} W_k[m, i, j] * x_{k-1}[b, i, :] * x0[b, j, :] + c_k[m] )
with W_k of shape (h_k, h_{k-1}, h0). Output: the sum over d of every layer's feature
maps, concatenated: (batch, h_1 + ... + h_K).
"""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtrec")
class CIN(keras.layers.Layer):
    """(batch, h0, d) -> (batch, sum(hidden_feature_sizes))."""

    def __init__(self, hidden_feature_sizes, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        sizes = [int(h) for h in hidden_feature_sizes]
        if not sizes or any(h < 1 for h in sizes):
            raise ValueError(f"CIN needs hidden_feature_sizes: at least one positive size, got "
                             f"{sizes}.")
        self.hidden_feature_sizes = sizes
        self.l2_regularization = float(l2_regularization)
        self.kernels, self.biases = [], []

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None:
            raise ValueError(f"CIN takes (batch, fields, d) with a known number of fields, got "
                             f"{tuple(input_shape)}.")
        sizes = [int(input_shape[1])] + self.hidden_feature_sizes
        reg = keras.regularizers.L2(self.l2_regularization) if self.l2_regularization else None
        for k in range(len(self.hidden_feature_sizes)):
            self.kernels.append(self.add_weight(
                shape=(sizes[k + 1], sizes[k], sizes[0]), initializer="he_normal",
                regularizer=reg, name=f"kernel_{k}"))
            self.biases.append(self.add_weight(shape=(sizes[k + 1],), initializer="zeros",
                                               name=f"bias_{k}"))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], sum(self.hidden_feature_sizes))

    def call(self, x0):
        x = x0
        pooled = []
        for kernel, bias in zip(self.kernels, self.biases):
            outer = ops.einsum("bid,bjd->bijd", x, x0)                  # (batch, h_k-1, h0, d)
            x = ops.einsum("mij,bijd->bmd", kernel, outer)              # (batch, h_k, d)
            x = ops.relu(x + bias[None, :, None])
            pooled.append(ops.sum(x, axis=-1))                          # (batch, h_k)
        return ops.concatenate(pooled, axis=-1)

    def get_config(self):
        return {**super().get_config(), "hidden_feature_sizes": self.hidden_feature_sizes,
                "l2_regularization": self.l2_regularization}
