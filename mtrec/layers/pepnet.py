"""PEPNet's two personalisation modules (Chang et al., KDD 2023), both built on GateNU.

EPNet (embedding personalisation): O_ep = GateNU(E_domain ⊕ sg(E)) ⊙ E.
PPNet (parameter personalisation): with prior embeddings O_prior (user/item/author ids),
    delta^(l) = GateNU_l(O_prior ⊕ sg(O_ep)), one gate per tower layer l, its output split
    across the tasks' towers; for task k: H^(l+1) = f((delta_k^(l) ⊙ H^(l)) W_k^(l) + b_k^(l)),
    H^(1) = O_ep. EasyRec's PPNet layer options: mode "lazy" gates each layer's output
    instead, H^(l+1) = delta_k^(l) ⊙ f(H^(l) W_k^(l) + b_k^(l)); without full_gate_input the
    gates read O_prior alone.
The stop-gradients (sg) keep the gates from steering the representations they read.
"""
import keras
from keras import ops

from mtrec.layers.dnn import DebiasedBatchNormalization, activation_name
from mtrec.layers.gate_nu import GateNU


class EPNet(keras.layers.Layer):
    """[domain (batch, d_dom), embeddings (batch, d)] -> (batch, d) gated embeddings."""

    def __init__(self, gate_hidden_dim=64, gamma=2.0, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        self.gate_hidden_dim = gate_hidden_dim
        self.gamma = gamma
        self.l2_regularization = l2_regularization
        self.gate = None

    def build(self, input_shape):
        domain_shape, emb_shape = input_shape
        self.gate = GateNU(self.gate_hidden_dim, emb_shape[-1], self.gamma,
                           self.l2_regularization, name="gate_nu")
        self.gate.build(tuple(emb_shape[:-1]) + (domain_shape[-1] + emb_shape[-1],))

    def call(self, inputs):
        domain, emb = inputs
        delta = self.gate(ops.concatenate([domain, ops.stop_gradient(emb)], axis=-1))
        return delta * emb

    def get_config(self):
        return {**super().get_config(), "gate_hidden_dim": self.gate_hidden_dim,
                "gamma": self.gamma, "l2_regularization": self.l2_regularization}


class PPNet(keras.layers.Layer):
    """[x (batch, d), prior (batch, d_prior)] -> one (batch, tower_units[k][-1]) per task
    (x itself for a task without layers).

    tower_units: per task, the widths of its hidden layers (towers may differ in depth and
    width; layer l's gate covers the tasks that have a layer l).
    gate_hidden_dim: hidden width of every gate; 0 means each gate's output width.
    mode: "eager" gates each layer's input, "lazy" its output.
    full_gate_input: gates read [prior, stop_gradient(x)] (else prior alone).
    use_bias (default: not use_bn) and kernel_initializer: of the tower layers.
    """

    def __init__(self, tower_units, activation="relu", use_bn=False, dropout_ratio=0.0,
                 gate_hidden_dim=64, gamma=2.0, l2_regularization=0.0, *, mode="eager",
                 full_gate_input=True, use_bias=None, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        if mode not in ("eager", "lazy"):
            raise ValueError(f"PPNet mode must be 'eager' or 'lazy', got {mode!r}.")
        if gate_hidden_dim < 0:
            raise ValueError(f"PPNet gate_hidden_dim must be >= 0, got {gate_hidden_dim}.")
        self.mode = mode
        self.full_gate_input = bool(full_gate_input)
        self.use_bias = (not use_bn) if use_bias is None else bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.tower_units = [[int(u) for u in units] for units in tower_units]
        if not self.tower_units:
            raise ValueError("PPNet needs at least one task.")
        if any(u <= 0 for units in self.tower_units for u in units):
            raise ValueError(f"PPNet tower widths must be positive, got {self.tower_units}.")
        if not 0 <= dropout_ratio < 1:
            raise ValueError(f"PPNet dropout_ratio must be in [0, 1), got {dropout_ratio}.")
        self.activation = activation_name(activation)
        self.use_bn = use_bn
        self.dropout_ratio = dropout_ratio
        self.gate_hidden_dim = gate_hidden_dim
        self.gamma = gamma
        self.l2_regularization = l2_regularization
        regularizer = keras.regularizers.L2(l2_regularization) if l2_regularization else None
        self.dense = [[keras.layers.Dense(u, use_bias=self.use_bias,
                                          kernel_initializer=kernel_initializer,
                                          kernel_regularizer=regularizer,
                                          name=f"task_{k}_dense_{l}")
                       for l, u in enumerate(units)] for k, units in enumerate(self.tower_units)]
        self.norms = [[DebiasedBatchNormalization(name=f"task_{k}_bn_{l}") if use_bn else None
                       for l in range(len(units))] for k, units in enumerate(self.tower_units)]
        self.dropout = keras.layers.Dropout(dropout_ratio) if dropout_ratio else None
        self.gates = []

    def _gated_widths(self, d_in):
        """[[(task, width gated at layer l: its input (eager) or output (lazy)), ...] per l]."""
        depth = max(len(units) for units in self.tower_units)
        if self.mode == "lazy":
            return [[(k, units[l]) for k, units in enumerate(self.tower_units)
                     if l < len(units)] for l in range(depth)]
        return [[(k, d_in if l == 0 else units[l - 1]) for k, units in enumerate(self.tower_units)
                 if l < len(units)] for l in range(depth)]

    def build(self, input_shape):
        x_shape, prior_shape = input_shape
        gate_width = prior_shape[-1] + (x_shape[-1] if self.full_gate_input else 0)
        gate_in = tuple(x_shape[:-1]) + (gate_width,)
        self.gates = []
        for l, tasks in enumerate(self._gated_widths(x_shape[-1])):
            width = sum(w for _, w in tasks)
            gate = GateNU(self.gate_hidden_dim or width, width, self.gamma,
                          self.l2_regularization, name=f"gate_nu_{l}")
            gate.build(gate_in)
            self.gates.append(gate)
        for k, units in enumerate(self.tower_units):
            width = x_shape[-1]
            for l, u in enumerate(units):
                self.dense[k][l].build(tuple(x_shape[:-1]) + (width,))
                if self.use_bn:
                    self.norms[k][l].build(tuple(x_shape[:-1]) + (u,))
                width = u

    def call(self, inputs, training=False):
        x, prior = inputs
        gate_input = (ops.concatenate([prior, ops.stop_gradient(x)], axis=-1)
                      if self.full_gate_input else prior)
        act = keras.activations.get(self.activation)
        eager = self.mode == "eager"
        hidden = [x] * len(self.tower_units)
        for l, tasks in enumerate(self._gated_widths(x.shape[-1])):
            delta = self.gates[l](gate_input)  # (batch, sum of the tasks' gated widths)
            start = 0
            for k, width in tasks:
                gate = delta[:, start:start + width]
                start += width
                h = self.dense[k][l](gate * hidden[k] if eager else hidden[k])
                if self.use_bn:
                    h = self.norms[k][l](h, training=training)
                h = act(h)
                if self.dropout is not None:
                    h = self.dropout(h, training=training)
                hidden[k] = h if eager else gate * h
        return hidden

    def get_config(self):
        return {**super().get_config(), "tower_units": self.tower_units,
                "activation": self.activation, "use_bn": self.use_bn,
                "dropout_ratio": self.dropout_ratio, "gate_hidden_dim": self.gate_hidden_dim,
                "gamma": self.gamma, "l2_regularization": self.l2_regularization,
                "mode": self.mode, "full_gate_input": self.full_gate_input,
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer}
