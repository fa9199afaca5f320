"""Highway network (Srivastava et al. 2015, "Highway Networks").

x (batch, d), optionally projected first to emb_size by a Dense layer; each of num_layers:
  T = sigmoid(x W_T + b_T)        b_T starts at init_gate_bias (negative: carry x)
  H = act(x W_H + b_H)            then dropout while training
  x = T * H + (1 - T) * x
"""
import keras

from mtrec.layers.dnn import activation_name


@keras.saving.register_keras_serializable(package="mtrec")
class Highway(keras.layers.Layer):
    """(batch, d) -> (batch, emb_size or d)."""

    def __init__(self, emb_size=0, num_layers=1, activation="relu", dropout_rate=0.0,
                 init_gate_bias=-3.0, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_layers) < 1:
            raise ValueError(f"Highway needs num_layers >= 1, got {num_layers}.")
        if not 0 <= dropout_rate < 1:
            raise ValueError(f"Highway dropout_rate must be in [0, 1), got {dropout_rate}.")
        self.emb_size = int(emb_size)
        self.num_layers = int(num_layers)
        self.activation = activation
        self.act = keras.activations.get(activation_name(activation))
        self.dropout_rate = float(dropout_rate)
        self.init_gate_bias = float(init_gate_bias)
        self.l2_regularization = float(l2_regularization)
        self.dropout = keras.layers.Dropout(dropout_rate) if dropout_rate else None
        self.project = None
        self.gates, self.transforms = [], []

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(f"Highway needs a known input width, got {tuple(input_shape)}.")
        reg = keras.regularizers.L2(self.l2_regularization) if self.l2_regularization else None
        if self.emb_size and self.emb_size != dim:
            self.project = keras.layers.Dense(self.emb_size, kernel_regularizer=reg,
                                              name="input_projection")
            self.project.build(tuple(input_shape))
            dim = self.emb_size
        for i in range(self.num_layers):
            gate = keras.layers.Dense(
                dim, activation="sigmoid", kernel_regularizer=reg,
                bias_initializer=keras.initializers.Constant(self.init_gate_bias),
                name=f"gate_{i}")
            transform = keras.layers.Dense(dim, kernel_regularizer=reg, name=f"transform_{i}")
            gate.build((None, dim))
            transform.build((None, dim))
            self.gates.append(gate)
            self.transforms.append(transform)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.emb_size or input_shape[-1],)

    def call(self, x, training=False):
        if self.project is not None:
            x = self.project(x)                                  # (batch, emb_size)
        for gate, transform in zip(self.gates, self.transforms):
            t = gate(x)
            h = self.act(transform(x))
            if self.dropout is not None:
                h = self.dropout(h, training=training)
            x = t * h + (1.0 - t) * x
        return x

    def get_config(self):
        return {**super().get_config(), "emb_size": self.emb_size,
                "num_layers": self.num_layers, "activation": self.activation,
                "dropout_rate": self.dropout_rate, "init_gate_bias": self.init_gate_bias,
                "l2_regularization": self.l2_regularization}
