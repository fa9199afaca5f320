"""MaskNet (Wang et al. 2021): instance-guided masks multiply a layer's input element-wise.

MaskBlock on x with mask input m:
  mask = W2 relu(W1 m)                 (W1 optionally low-rank: W1 = A P, P of rank projection_dim)
  h = (LayerNorm(x) if input_layer_norm else x) * mask
  out = relu(LayerNorm(W_o h))         with output_size; else out = h
MaskNet: blocks in parallel on (x, x), outputs concatenated, or serially
h_{k+1} = block_k(h_k, x); then an optional MLP. The input is layer-normalised first when
input_layer_norm.
"""
import keras
from keras import ops

from mtrec.layers.mlp import MLP


class MaskBlock(keras.layers.Layer):
    """x (batch, d) or [x (batch, d), mask_input (batch, m)] -> (batch, output_size or d)."""

    def __init__(self, output_size=0, aggregation_size=0, reduction_factor=0.0,
                 input_layer_norm=False, projection_dim=0, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if not aggregation_size and not reduction_factor:
            raise ValueError("MaskBlock needs aggregation_size or reduction_factor.")
        if min(output_size, aggregation_size, projection_dim, reduction_factor) < 0:
            raise ValueError("MaskBlock sizes must not be negative.")
        self.output_size = int(output_size)
        self.aggregation_size = int(aggregation_size)
        self.reduction_factor = float(reduction_factor)
        self.input_layer_norm = bool(input_layer_norm)
        self.projection_dim = int(projection_dim)
        self.l2_regularization = l2_regularization
        regularizer = keras.regularizers.L2(l2_regularization) if l2_regularization else None
        self._regularizer = regularizer
        self.input_norm = (keras.layers.LayerNormalization(name="input_ln")
                           if input_layer_norm else None)
        self.project = (keras.layers.Dense(projection_dim, use_bias=False,
                                           kernel_regularizer=regularizer, name="project")
                        if projection_dim else None)
        self.output_dense = (keras.layers.Dense(output_size, use_bias=False,
                                                kernel_regularizer=regularizer, name="output")
                             if output_size else None)
        self.output_norm = (keras.layers.LayerNormalization(name="output_ln")
                            if output_size else None)
        self.aggregate = self.weights_dense = None

    def build(self, input_shape):
        if isinstance(input_shape[0], (list, tuple)):
            if len(input_shape) != 2:
                raise ValueError(f"MaskBlock takes x or [x, mask_input], got {len(input_shape)} "
                                 "inputs.")
            x_shape, m_shape = (tuple(s) for s in input_shape)
        else:
            x_shape = m_shape = tuple(input_shape)
        d, m = int(x_shape[-1]), int(m_shape[-1])
        hidden = (int(m * self.reduction_factor) if self.reduction_factor
                  else self.aggregation_size)
        if hidden < 1:
            raise ValueError(f"MaskBlock: reduction_factor {self.reduction_factor} of mask "
                             f"width {m} leaves no hidden units.")
        self.aggregate = keras.layers.Dense(hidden, activation="relu",
                                            kernel_initializer="he_uniform",
                                            kernel_regularizer=self._regularizer,
                                            name="aggregation")
        self.weights_dense = keras.layers.Dense(d, name="mask")
        if self.project is not None:
            self.project.build((None, m))
        self.aggregate.build((None, self.projection_dim or m))
        self.weights_dense.build((None, hidden))
        if self.input_norm is not None:
            self.input_norm.build((None, d))
        if self.output_dense is not None:
            self.output_dense.build((None, d))
            self.output_norm.build((None, self.output_size))

    def compute_output_shape(self, input_shape):
        x_shape = input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        return (x_shape[0], self.output_size or x_shape[-1])

    def call(self, inputs):
        x, m = (inputs[0], inputs[1]) if isinstance(inputs, (list, tuple)) else (inputs, inputs)
        if self.input_norm is not None:
            x = self.input_norm(x)
        if self.project is not None:
            m = self.project(m)
        h = x * self.weights_dense(self.aggregate(m))  # (batch, d)
        if self.output_dense is None:
            return h
        return ops.relu(self.output_norm(self.output_dense(h)))

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size,
                "aggregation_size": self.aggregation_size,
                "reduction_factor": self.reduction_factor,
                "input_layer_norm": self.input_layer_norm,
                "projection_dim": self.projection_dim,
                "l2_regularization": self.l2_regularization}


class MaskNet(keras.layers.Layer):
    """(batch, d) -> (batch, mlp width | sum of block widths (parallel) | last block width).

    blocks: one dict of MaskBlock arguments per block; mlp: None or a dict of MLP arguments.
    """

    def __init__(self, blocks, use_parallel=True, mlp=None, input_layer_norm=True,
                 l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if not blocks:
            raise ValueError("MaskNet needs at least one mask block.")
        self.block_configs = [dict(b) for b in blocks]
        self.use_parallel = bool(use_parallel)
        self.mlp_config = dict(mlp) if mlp else None
        self.input_layer_norm = bool(input_layer_norm)
        self.l2_regularization = l2_regularization
        self.blocks = [MaskBlock(**b, l2_regularization=l2_regularization, name=f"block_{i}")
                       for i, b in enumerate(self.block_configs)]
        self.mlp = (MLP(**self.mlp_config, l2_regularization=l2_regularization, name="mlp")
                    if mlp else None)
        self.input_norm = (keras.layers.LayerNormalization(name="input_ln")
                           if input_layer_norm else None)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.input_norm is not None:
            self.input_norm.build(shape)
        widths = []
        net = shape
        for block in self.blocks:
            block.build([shape, shape] if self.use_parallel else [net, shape])
            out = block.compute_output_shape(shape if self.use_parallel else net)
            widths.append(out[-1])
            net = out
        width = sum(widths) if self.use_parallel else widths[-1]
        if self.mlp is not None:
            self.mlp.build((shape[0], width))

    def call(self, x, training=False):
        if self.input_norm is not None:
            x = self.input_norm(x)
        if self.use_parallel:
            out = ops.concatenate([block([x, x]) for block in self.blocks], axis=-1)
        else:
            out = x
            for block in self.blocks:
                out = block([out, x])
        return self.mlp(out, training=training) if self.mlp is not None else out

    def get_config(self):
        return {**super().get_config(), "blocks": self.block_configs,
                "use_parallel": self.use_parallel, "mlp": self.mlp_config,
                "input_layer_norm": self.input_layer_norm,
                "l2_regularization": self.l2_regularization}
