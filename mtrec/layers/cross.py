"""DCN-v2 cross layer (Wang et al., WWW 2021):

  x_{l+1} = x_0 * (W x_l + b + diag_scale * x_l) + x_l

with W full (d x d) or low-rank U V (d x r, r x d); an optional preactivation is applied
to W x_l + b. Stack layers with the same x_0 to get higher-order crosses.
"""
import keras

from mtrec.layers.dnn import activation_name


class Cross(keras.layers.Layer):
    """x (batch, d), meaning x_0 = x_l = x, or [x_0, x_l] -> (batch, d)."""

    def __init__(self, projection_dim=0, diag_scale=0.0, use_bias=True, preactivation=None,
                 l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if projection_dim < 0:
            raise ValueError(f"Cross projection_dim must be >= 0, got {projection_dim}.")
        if diag_scale < 0:
            raise ValueError(f"Cross diag_scale must be >= 0, got {diag_scale}.")
        self.projection_dim = int(projection_dim)
        self.diag_scale = float(diag_scale)
        self.use_bias = bool(use_bias)
        # ValueError if unknown; EasyRec's aliases as every activation field has them.
        self.preactivation = activation_name(preactivation) if preactivation else None
        self.l2_regularization = l2_regularization
        self.project = self.dense = None

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        if len(shapes) not in (1, 2):
            raise ValueError(f"Cross takes x or [x0, x], got {len(shapes)} inputs.")
        widths = {s[-1] for s in shapes}
        if len(widths) != 1 or None in widths:
            raise ValueError(f"Cross: x0 and x must have one known width, got "
                             f"{[tuple(s) for s in shapes]}.")
        d = widths.pop()
        regularizer = (keras.regularizers.L2(self.l2_regularization)
                       if self.l2_regularization else None)
        if self.projection_dim:
            self.project = keras.layers.Dense(self.projection_dim, use_bias=False,
                                              kernel_regularizer=regularizer, name="project")
            self.project.build((None, d))
        self.dense = keras.layers.Dense(d, use_bias=self.use_bias,
                                        activation=self.preactivation,
                                        kernel_initializer="truncated_normal",
                                        kernel_regularizer=regularizer, name="dense")
        self.dense.build((None, self.projection_dim or d))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[-1] if isinstance(input_shape[0], (list, tuple))
                     else input_shape)

    def call(self, inputs):
        x0, x = (inputs[0], inputs[-1]) if isinstance(inputs, (list, tuple)) else (inputs, inputs)
        h = self.dense(self.project(x) if self.project is not None else x)  # (batch, d)
        if self.diag_scale:
            h = h + self.diag_scale * x
        return x0 * h + x

    def get_config(self):
        return {**super().get_config(), "projection_dim": self.projection_dim,
                "diag_scale": self.diag_scale, "use_bias": self.use_bias,
                "preactivation": self.preactivation,
                "l2_regularization": self.l2_regularization}
