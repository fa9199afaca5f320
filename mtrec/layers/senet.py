"""SENet as in FiBiNet++ (Huang et al. 2019; Zhang et al. 2022): learn a weight for every
embedding value from per-field statistics.

For field embeddings e_1..e_f, each split into g groups:
  z = [max(group), mean(group) for every group of every field]      (batch, 2 f g)
  a = W2 relu(W1 z)                                                  (batch, sum d_i)
  out = LayerNorm(concat(e) * a + concat(e))   (skip connection and norm are optional)
"""
import keras
from keras import ops


class SENet(keras.layers.Layer):
    """List of f tensors (batch, d_i), each d_i divisible by num_squeeze_group
    -> (batch, sum d_i)."""

    def __init__(self, reduction_ratio=4, num_squeeze_group=2, use_skip_connection=True,
                 use_output_layer_norm=True, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if reduction_ratio < 1 or num_squeeze_group < 1:
            raise ValueError(f"SENet needs reduction_ratio >= 1 and num_squeeze_group >= 1, got "
                             f"{reduction_ratio} and {num_squeeze_group}.")
        self.reduction_ratio = int(reduction_ratio)
        self.num_squeeze_group = int(num_squeeze_group)
        self.use_skip_connection = bool(use_skip_connection)
        self.use_output_layer_norm = bool(use_output_layer_norm)
        self.l2_regularization = l2_regularization
        self.squeeze = self.excite = None
        self.layer_norm = (keras.layers.LayerNormalization(name="output_ln")
                           if use_output_layer_norm else None)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(
                input_shape[0], (list, tuple)):
            raise ValueError(f"SENet takes a list of (batch, d) field embeddings, got shape "
                             f"{input_shape}.")
        g = self.num_squeeze_group
        widths = []
        for i, shape in enumerate(input_shape):
            if len(shape) != 2 or shape[-1] is None or shape[-1] % g:
                raise ValueError(f"SENet field {i} must be (batch, d) with d divisible by "
                                 f"num_squeeze_group {g}, got {tuple(shape)}.")
            widths.append(int(shape[-1]))
        regularizer = (keras.regularizers.L2(self.l2_regularization)
                       if self.l2_regularization else None)
        reduced = max(1, len(widths) * g * 2 // self.reduction_ratio)
        self.squeeze = keras.layers.Dense(reduced, activation="relu",
                                          kernel_initializer="he_normal",
                                          kernel_regularizer=regularizer, name="squeeze")
        self.excite = keras.layers.Dense(sum(widths), kernel_initializer="glorot_normal",
                                         kernel_regularizer=regularizer, name="excite")
        self.squeeze.build((None, len(widths) * g * 2))
        self.excite.build((None, reduced))
        if self.layer_norm is not None:
            self.layer_norm.build((None, sum(widths)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], sum(int(s[-1]) for s in input_shape))

    def call(self, inputs):
        g = self.num_squeeze_group
        stats = []
        for e in inputs:
            groups = ops.reshape(e, (-1, g, e.shape[-1] // g))  # (batch, g, d / g)
            stats += [ops.max(groups, axis=-1), ops.mean(groups, axis=-1)]  # (batch, g) each
        weights = self.excite(self.squeeze(ops.concatenate(stats, axis=-1)))  # (batch, sum d)
        x = ops.concatenate(list(inputs), axis=-1)                            # (batch, sum d)
        out = x * weights
        if self.use_skip_connection:
            out = out + x
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return out

    def get_config(self):
        return {**super().get_config(), "reduction_ratio": self.reduction_ratio,
                "num_squeeze_group": self.num_squeeze_group,
                "use_skip_connection": self.use_skip_connection,
                "use_output_layer_norm": self.use_output_layer_norm,
                "l2_regularization": self.l2_regularization}
