"""Gate NU: the two-layer gate PEPNet's EPNet and PPNet personalise with (Chang et al., KDD 2023).

delta = gamma * sigmoid(W2 relu(W1 x + b1) + b2), so delta lies in [0, gamma] and scales the
tensor it gates element-wise; gamma = 2 lets a gate amplify as well as damp (1 at init).
"""
import keras
from keras import ops


class GateNU(keras.layers.Layer):
    """(batch, d_in) -> (batch, output_dim) gate values in [0, gamma]."""

    def __init__(self, hidden_dim, output_dim, gamma=2.0, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if hidden_dim < 1 or output_dim < 1:
            raise ValueError(f"GateNU needs hidden_dim >= 1 and output_dim >= 1, got "
                             f"{hidden_dim} and {output_dim}.")
        if gamma <= 0:
            raise ValueError(f"GateNU gamma must be positive, got {gamma}.")
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.gamma = float(gamma)
        self.l2_regularization = l2_regularization
        regularizer = keras.regularizers.L2(l2_regularization) if l2_regularization else None
        self.hidden = keras.layers.Dense(self.hidden_dim, activation="relu",
                                         kernel_regularizer=regularizer, name="hidden")
        self.gate = keras.layers.Dense(self.output_dim, kernel_regularizer=regularizer,
                                       name="gate")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.gate.build(tuple(input_shape[:-1]) + (self.hidden_dim,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def call(self, x):
        return self.gamma * ops.sigmoid(self.gate(self.hidden(x)))

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim,
                "output_dim": self.output_dim, "gamma": self.gamma,
                "l2_regularization": self.l2_regularization}
