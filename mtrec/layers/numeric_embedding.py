"""Embeddings of numerical features: one learned vector per (feature, value).

Input: (batch, n), one value per feature. Output, by `output`:
  "tensor"  (batch, n * d)
  "3d"      [(batch, n * d), (batch, n, d)]
  "list"    [(batch, n * d), [(batch, d)] * n]

AutoDis (Guo et al. 2021, "An Embedding Learning Framework for Numerical Features in CTR
Prediction"), per feature f with num_bins meta-embeddings E_f (bins, d):
  h   = leaky_relu(w_f * x_f)             w_f (bins,), leaky slope 0.2
  s   = M_f h + keep_prob * h             M_f (bins, bins)
  e_f = softmax(s / temperature) E_f      (d,)
Periodic (Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep
Learning"), per feature f with c_f (d/2,) drawn from N(0, sigma^2):
  e_f = [sin(2 pi c_f x_f), cos(2 pi c_f x_f)]
  e_f = act(e_f A_f + a_f)                with add_linear_layer: A_f (d, d), a_f (d,)
"""
import math

import keras
from keras import ops

from mtrec.layers.dnn import activation_name

OUTPUTS = ("tensor", "3d", "list")


class _NumericEmbedding(keras.layers.Layer):
    """Shared input checks and output forms."""

    def __init__(self, embedding_dim, output="tensor", **kwargs):
        super().__init__(**kwargs)
        if int(embedding_dim) < 1:
            raise ValueError(f"{type(self).__name__} needs embedding_dim >= 1, got "
                             f"{embedding_dim}.")
        if output not in OUTPUTS:
            raise ValueError(f"{type(self).__name__} output must be one of "
                             f"{', '.join(OUTPUTS)}; got {output!r}.")
        self.embedding_dim = int(embedding_dim)
        self.output_form = output
        self.num_features = None

    def _check(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} takes (batch, n) numerical values, got "
                             f"{tuple(input_shape)}.")
        self.num_features = int(input_shape[-1])

    def _outputs(self, emb):
        """(batch, n, d) -> the configured output form."""
        flat = ops.reshape(emb, (-1, self.num_features * self.embedding_dim))
        if self.output_form == "3d":
            return [flat, emb]
        if self.output_form == "list":
            return [flat, [emb[:, i, :] for i in range(self.num_features)]]
        return flat

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "output": self.output_form}


@keras.saving.register_keras_serializable(package="mtrec")
class AutoDisEmbedding(_NumericEmbedding):
    """(batch, n) -> see the module docstring."""

    def __init__(self, embedding_dim, num_bins, temperature, keep_prob=0.8, output="tensor",
                 **kwargs):
        super().__init__(embedding_dim, output, **kwargs)
        if int(num_bins) < 1:
            raise ValueError(f"AutoDisEmbedding needs num_bins >= 1, got {num_bins}.")
        if not temperature > 0:
            raise ValueError(f"AutoDisEmbedding needs temperature > 0, got {temperature}.")
        self.num_bins = int(num_bins)
        self.temperature = float(temperature)
        self.keep_prob = float(keep_prob)

    def build(self, input_shape):
        self._check(input_shape)
        n, k = self.num_features, self.num_bins
        self.meta_embedding = self.add_weight(shape=(n, k, self.embedding_dim),
                                              initializer="glorot_uniform",
                                              name="meta_embedding")
        self.project_w = self.add_weight(shape=(n, k), initializer="glorot_uniform",
                                         name="project_w")
        self.project_mat = self.add_weight(shape=(n, k, k), initializer="glorot_uniform",
                                           name="project_mat")

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        hidden = ops.leaky_relu(self.project_w * x[:, :, None], negative_slope=0.2)  # (b, n, k)
        scores = ops.einsum("nik,bnk->bni", self.project_mat, hidden) + \
            self.keep_prob * hidden                                                  # (b, n, k)
        weights = ops.softmax(scores / self.temperature, axis=-1)
        emb = ops.einsum("bnk,nkd->bnd", weights, self.meta_embedding)              # (b, n, d)
        return self._outputs(emb)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins,
                "temperature": self.temperature, "keep_prob": self.keep_prob}


@keras.saving.register_keras_serializable(package="mtrec")
class PeriodicEmbedding(_NumericEmbedding):
    """(batch, n) -> see the module docstring."""

    def __init__(self, embedding_dim, sigma, add_linear_layer=True, linear_activation="relu",
                 output="tensor", **kwargs):
        super().__init__(embedding_dim, output, **kwargs)
        if self.embedding_dim % 2:
            raise ValueError(f"PeriodicEmbedding needs an even embedding_dim, got "
                             f"{embedding_dim}.")
        if not sigma > 0:
            raise ValueError(f"PeriodicEmbedding needs sigma > 0, got {sigma}.")
        self.sigma = float(sigma)
        self.add_linear_layer = bool(add_linear_layer)
        self.linear_activation = linear_activation
        self.activation = keras.activations.get(activation_name(linear_activation))

    def build(self, input_shape):
        self._check(input_shape)
        n, d = self.num_features, self.embedding_dim
        self.coefficients = self.add_weight(
            shape=(n, d // 2), initializer=keras.initializers.RandomNormal(stddev=self.sigma),
            name="coefficients")
        if self.add_linear_layer:
            self.linear_kernel = self.add_weight(shape=(n, d, d), initializer="glorot_uniform",
                                                 name="linear_kernel")
            self.linear_bias = self.add_weight(shape=(n, d), initializer="zeros",
                                               name="linear_bias")

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        v = 2 * math.pi * self.coefficients * x[:, :, None]                # (b, n, d/2)
        emb = ops.concatenate([ops.sin(v), ops.cos(v)], axis=-1)          # (b, n, d)
        if self.add_linear_layer:
            emb = ops.einsum("bni,nio->bno", emb, self.linear_kernel) + self.linear_bias
            emb = self.activation(emb)
        return self._outputs(emb)

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma,
                "add_linear_layer": self.add_linear_layer,
                "linear_activation": self.linear_activation}
