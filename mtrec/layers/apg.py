"""Adaptive Parameter Generation (Yan et al., NeurIPS 2022): a dense layer whose weights
are generated per sample from a condition z_i (domain embedding, domain + user/item, or the
layer input itself).

The weight is low rank, W_i = U S_i V, with only the K x K core S_i generated per sample:
    S_i = reshape(Dense(K*K)(z_i)),  s_i = Dense(K)(z_i)
and, by default (use_uv_shared, use_mf_p), U and V shared and over-parameterised as
products of two matrices through a width P:
    y_i = act( (((x_i V_l + b_l) V_r + b_r) S_i + s_i) U_l + c_l) U_r + c_r )
with V_l (N x P), V_r (P x K), U_l (K x P), U_r (P x units). The input meets one factor at
a time, so no N x units matrix is ever built per sample.

inner_activation g (optional) follows every factor but the last:
    y_i = act( g(g(g(g(x_i V_l + b_l) V_r + b_r) S_i + s_i) U_l + c_l) U_r + c_r )
without it the layer is one affine map per sample followed by act. generate_activation
(optional) is applied to every generator's output (S_i, s_i and, unshared, V_i, U_i and
their biases), as in a one-layer generator MLP.
"""
import math

import keras
import numpy as np
from keras import ops

from mtrec.layers.dnn import activation_name
from mtrec.layers.generated import distinct_rows, per_row_affine, scenario_affine


def _optional_activation(name):
    """'' or None -> None (no activation); otherwise the Keras name (ValueError if unknown)."""
    return activation_name(name) if name else None


class APGDense(keras.layers.Layer):
    """call(x, condition) -> (batch, units); x (batch, N), condition (batch, c).

    With min_dim = min(N, units): K = ceil(min_dim / mf_k), P = ceil(min_dim / mf_p).

    Modes and multiply-adds per sample (generation of the per-sample matrices included):
      use_uv_shared, use_mf_p:      N*P + P*K + K*K + K*P + P*units  +  c*(K*K + K)
      use_uv_shared, not use_mf_p:  N*K + K*K + K*units              +  c*(K*K + K)
      not use_uv_shared:            N*K + K*K + K*units
                                    + c*(N*K + K + K*K + K + K*units + units)
    against N*units to apply and c*N*units to generate a full per-sample matrix. The shared
    matmuls each carry a bias; the generated ones get a generated bias.

    grouped_condition: the condition takes a few distinct values per batch (the domain
    embedding, condition GROUP). The per-sample matrices are then generated once per
    distinct condition row (D of them), and each generated factor is applied as one dense
    matmul against all D matrices, (batch, a) x (D, a, b) -> (batch, D, b), of which each row
    keeps its own: no (batch, a, b) tensor is built, and the generation costs D instead of
    batch times c*(K*K + K). Same values as per-row generation; the application costs D
    times the per-row multiply-adds, so leave it off when the condition is per-row (MIX,
    SELF).

    The core generator's bias starts at the flattened identity (S_i = I at start, so the
    layer starts as the shared U V), and in the unshared mode the N x K and K x units
    generators' biases start Glorot-uniform: a zero start would make the product of
    generated matrices ~0 and its gradients vanish.
    """

    def __init__(self, units, activation="relu", mf_k=4, mf_p=4, use_uv_shared=True,
                 use_mf_p=True, l2_regularization=0.0, inner_activation=None,
                 generate_activation=None, grouped_condition=False, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("units", units), ("mf_k", mf_k), ("mf_p", mf_p)):
            if int(value) != value or value < 1:
                raise ValueError(f"APGDense {name} must be a positive integer, got {value!r}.")
        if l2_regularization < 0:
            raise ValueError(f"APGDense l2_regularization must not be negative, got "
                             f"{l2_regularization}.")
        self.units = int(units)
        self.activation = activation_name(activation or "linear")
        self.inner_activation = _optional_activation(inner_activation)
        self.generate_activation = _optional_activation(generate_activation)
        self.mf_k = int(mf_k)
        self.mf_p = int(mf_p)
        self.use_uv_shared = bool(use_uv_shared)
        self.use_mf_p = bool(use_mf_p)
        self.grouped_condition = bool(grouped_condition)
        self.l2_regularization = l2_regularization
        self._regularizer = (keras.regularizers.L2(l2_regularization)
                             if l2_regularization else None)

    def _dense(self, units, name):
        return keras.layers.Dense(units, activation=self.generate_activation,
                                  kernel_regularizer=self._regularizer, name=name)

    def _shared(self, shape, name):
        # A shared factor and its bias, created as raw weights with stable names.
        kernel = self.add_weight(shape=shape, initializer="glorot_uniform",
                                 regularizer=self._regularizer, name=f"{name}_kernel")
        bias = self.add_weight(shape=(shape[1],), initializer="zeros", name=f"{name}_bias")
        return kernel, bias

    def build(self, x_shape, condition_shape):
        n, c = x_shape[-1], condition_shape[-1]
        if n is None or c is None:
            raise ValueError("APGDense needs known last dimensions of x and condition, got "
                             f"{tuple(x_shape)} and {tuple(condition_shape)}.")
        self.input_dim = int(n)
        min_dim = min(self.input_dim, self.units)
        self.k_dim = math.ceil(min_dim / self.mf_k)
        # P only exists when the shared U and V are over-parameterised.
        self.p_dim = (math.ceil(min_dim / self.mf_p)
                      if self.use_uv_shared and self.use_mf_p else None)
        k = self.k_dim
        self.core_generator = self._dense(k * k, "core_generator")  # -> S_i (K x K)
        self.core_bias_generator = self._dense(k, "core_bias_generator")  # -> s_i (K,)
        self.core_generator.build((None, c))
        self.core_bias_generator.build((None, c))
        self.core_generator.bias.assign(np.eye(k, dtype="float32").reshape(-1))
        if self.use_uv_shared:
            if self.use_mf_p:
                p = self.p_dim
                self.v_left = self._shared((self.input_dim, p), "v_left")
                self.v_right = self._shared((p, k), "v_right")
                self.u_left = self._shared((k, p), "u_left")
                self.u_right = self._shared((p, self.units), "u_right")
            else:
                self.v = self._shared((self.input_dim, k), "v")
                self.u = self._shared((k, self.units), "u")
        else:
            self.v_generator = self._dense(self.input_dim * k, "v_generator")
            self.v_bias_generator = self._dense(k, "v_bias_generator")
            self.u_generator = self._dense(k * self.units, "u_generator")
            self.u_bias_generator = self._dense(self.units, "u_bias_generator")
            for layer, shape in ((self.v_generator, (self.input_dim, k)),
                                 (self.u_generator, (k, self.units))):
                layer.build((None, c))
                start = keras.initializers.GlorotUniform()(shape)
                layer.bias.assign(ops.reshape(start, (-1,)))
            self.v_bias_generator.build((None, c))
            self.u_bias_generator.build((None, c))

    def compute_output_shape(self, x_shape, condition_shape=None):
        return tuple(x_shape[:-1]) + (self.units,)

    def generated(self, condition):
        """The matrices generated from each condition row (generate_activation applied):
        {"core": (rows, K, K), "core_bias": (rows, K)} and, without use_uv_shared,
        "v": (rows, N, K), "v_bias": (rows, K), "u": (rows, K, units),
        "u_bias": (rows, units)."""
        k = self.k_dim
        out = {"core": ops.reshape(self.core_generator(condition), (-1, k, k)),
               "core_bias": self.core_bias_generator(condition)}
        if not self.use_uv_shared:
            out["v"] = ops.reshape(self.v_generator(condition), (-1, self.input_dim, k))
            out["v_bias"] = self.v_bias_generator(condition)
            out["u"] = ops.reshape(self.u_generator(condition), (-1, k, self.units))
            out["u_bias"] = self.u_bias_generator(condition)
        return out

    def call(self, x, condition):
        if self.grouped_condition:
            # Generate once per distinct condition; row_of maps each row to its matrices.
            distinct, row_of = distinct_rows(condition)
            g = self.generated(distinct)
        else:
            g, row_of = self.generated(condition), None
        inner = (keras.activations.get(self.inner_activation) if self.inner_activation
                 else (lambda h: h))

        def generated(h, matrices, bias):
            if row_of is None:  # per-row matrices
                return per_row_affine(h, matrices, bias)
            return scenario_affine(h, matrices, bias, row_of)

        def shared(h, kernel_bias):
            kernel, bias = kernel_bias
            return ops.matmul(h, kernel) + bias

        if self.use_uv_shared and self.use_mf_p:
            h = inner(shared(inner(shared(x, self.v_left)), self.v_right))  # (batch, K)
            h = inner(generated(h, g["core"], g["core_bias"]))  # (batch, K)
            y = shared(inner(shared(h, self.u_left)), self.u_right)  # (batch, units)
        elif self.use_uv_shared:
            h = inner(shared(x, self.v))  # (batch, K)
            h = inner(generated(h, g["core"], g["core_bias"]))  # (batch, K)
            y = shared(h, self.u)  # (batch, units)
        else:
            h = inner(generated(x, g["v"], g["v_bias"]))  # (batch, K)
            h = inner(generated(h, g["core"], g["core_bias"]))  # (batch, K)
            y = generated(h, g["u"], g["u_bias"])  # (batch, units)
        return keras.activations.get(self.activation)(y)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "mf_k": self.mf_k, "mf_p": self.mf_p, "use_uv_shared": self.use_uv_shared,
                "use_mf_p": self.use_mf_p, "l2_regularization": self.l2_regularization,
                "inner_activation": self.inner_activation,
                "generate_activation": self.generate_activation,
                "grouped_condition": self.grouped_condition}
