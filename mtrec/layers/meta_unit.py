"""The meta unit of M2M (Zhang et al., WSDM 2022): an MLP whose weights are generated per
sample from a scenario representation s.

For each of `depth` layers l (widths d_l, d_0 = the input width):
    W_l = reshape(V_w s + v_w)  (d_{l-1} x d_l),   b_l = V_b s + v_b  (d_l,)
    h_l = act(h_{l-1} W_l + b_l)
"""
import keras
from keras import ops

from mtrec.layers.dnn import activation_name
from mtrec.layers.generated import distinct_rows, scenario_affine


class MetaUnit(keras.layers.Layer):
    """call(h, scenario) -> (batch, [n,] d_out); h (batch, d_in) or (batch, n, d_in),
    scenario (batch, s).

    A 3-D h runs its n vectors through the same per-row weights: generating the weights
    costs s * d_in * d_out per row, so it is done once per row, not once per vector.
    Every layer has width `units`, or keeps the input width when units is None.
    activation None (or "linear") makes each layer affine.

    The kernel generators' biases start Glorot-uniform, so W_l starts as an ordinary
    random layer plus a scenario-dependent part; with the usual zero start W_l ~ 0 and a
    stack of generated layers passes neither signal nor gradient.
    """

    def __init__(self, depth, activation="relu", units=None, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if int(depth) != depth or depth < 1:
            raise ValueError(f"MetaUnit depth must be a positive integer, got {depth!r}.")
        if units is not None and (int(units) != units or units < 1):
            raise ValueError(f"MetaUnit units must be a positive integer or None, got "
                             f"{units!r}.")
        if l2_regularization < 0:
            raise ValueError(f"MetaUnit l2_regularization must not be negative, got "
                             f"{l2_regularization}.")
        self.depth = int(depth)
        self.activation = activation_name(activation or "linear")
        self.units = None if units is None else int(units)
        self.l2_regularization = l2_regularization
        self._regularizer = (keras.regularizers.L2(l2_regularization)
                             if l2_regularization else None)
        # Filled in build: their sizes depend on the input width.
        self.kernel_generators = []
        self.bias_generators = []

    def build(self, h_shape, scenario_shape):
        d_in, s = h_shape[-1], scenario_shape[-1]
        if d_in is None or s is None:
            raise ValueError("MetaUnit needs known last dimensions of h and scenario, got "
                             f"{tuple(h_shape)} and {tuple(scenario_shape)}.")
        if len(h_shape) not in (2, 3):
            raise ValueError(f"MetaUnit takes h of rank 2 or 3, got shape {tuple(h_shape)}.")
        d_out = self.units or int(d_in)
        self.widths = [int(d_in)] + [d_out] * self.depth
        for i in range(self.depth):
            shape = (self.widths[i], self.widths[i + 1])
            kernel = keras.layers.Dense(shape[0] * shape[1],
                                        kernel_regularizer=self._regularizer,
                                        name=f"kernel_generator_{i}")
            bias = keras.layers.Dense(shape[1], kernel_regularizer=self._regularizer,
                                      name=f"bias_generator_{i}")
            kernel.build((None, s))
            bias.build((None, s))
            kernel.bias.assign(ops.reshape(keras.initializers.GlorotUniform()(shape), (-1,)))
            self.kernel_generators.append(kernel)
            self.bias_generators.append(bias)

    def compute_output_shape(self, h_shape, scenario_shape=None):
        return tuple(h_shape[:-1]) + (self.units or h_shape[-1],)

    def generate(self, scenario):
        """[(W_l (batch, d_{l-1}, d_l), b_l (batch, d_l)) for each layer l]."""
        return [(ops.reshape(kernel(scenario), (-1, self.widths[i], self.widths[i + 1])),
                 bias(scenario))
                for i, (kernel, bias) in enumerate(zip(self.kernel_generators,
                                                       self.bias_generators))]

    def call(self, h, scenario):
        act = keras.activations.get(self.activation)
        # Generate the weights once per distinct scenario row (same values and gradients,
        # which flow through each scenario's first row), then apply each row's own.
        distinct, row_of = distinct_rows(scenario)
        for w, b in self.generate(distinct):
            h = act(scenario_affine(h, w, b, row_of))
        return h

    def get_config(self):
        return {**super().get_config(), "depth": self.depth, "activation": self.activation,
                "units": self.units, "l2_regularization": self.l2_regularization}
