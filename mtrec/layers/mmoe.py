"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018).

f_k(x) = sum_i g_k(x)_i * e_i(x),  g_k(x) = softmax(W_k x)
"""
import keras
from keras import ops

from mtrec.layers.dnn import DNN, dnn_args


class MMoE(keras.layers.Layer):
    """(batch, d_in) -> list of num_task tensors (batch, expert_dim).

    Experts are DNNs (expert_units, expert_activation, ...; expert_kwargs: further DNN
    keyword arguments, e.g. EasyRec MLP settings); each task has a softmax gate over the
    experts.

    With experts_from_inputs (and no expert_units) the experts are computed elsewhere: the
    input is the list [e_1 (batch, expert_dim), ..., e_K, gate_input (batch, d)].
    """

    def __init__(self, num_task, num_expert, expert_units, expert_activation="relu",
                 expert_use_bn=False, expert_dropout=(), l2_regularization=0.0, *,
                 expert_kwargs=None, experts_from_inputs=False, **kwargs):
        super().__init__(**kwargs)
        if num_task < 1 or num_expert < 1:
            raise ValueError(f"MMoE needs num_task >= 1 and num_expert >= 1, got "
                             f"{num_task} and {num_expert}.")
        if experts_from_inputs and expert_units:
            raise ValueError("MMoE with experts_from_inputs takes no expert hidden_units.")
        if not expert_units and not experts_from_inputs:
            raise ValueError("MMoE needs expert hidden_units.")
        self.num_task = num_task
        self.num_expert = num_expert
        self.expert_units = list(expert_units)
        self.expert_activation = expert_activation
        self.expert_use_bn = expert_use_bn
        self.expert_dropout = list(expert_dropout)
        self.l2_regularization = l2_regularization
        self.expert_kwargs = dict(expert_kwargs or {})
        self.experts_from_inputs = bool(experts_from_inputs)
        self.experts = [DNN(expert_units, expert_activation, expert_use_bn, expert_dropout,
                            l2_regularization, name=f"expert_{i}", **self.expert_kwargs)
                        for i in range(0 if experts_from_inputs else num_expert)]
        regularizer = keras.regularizers.L2(l2_regularization) if l2_regularization else None
        self.gates = [keras.layers.Dense(num_expert, kernel_regularizer=regularizer,
                                         name=f"gate_{k}") for k in range(num_task)]

    @classmethod
    def from_config_proto(cls, expert_net, num_task, num_expert, l2_regularization=0.0,
                          **kwargs):
        """MMoE whose experts are the DNN or MLP message expert_net (see dnn_args); None:
        experts_from_inputs. The one config-to-MMoE constructor (models and backbone)."""
        if expert_net is None:
            return cls(num_task, num_expert, [], l2_regularization=l2_regularization,
                       experts_from_inputs=True, **kwargs)
        args = dnn_args(expert_net)
        return cls(num_task, num_expert, args.pop("hidden_units"), args.pop("activation"),
                   args.pop("use_bn"), args.pop("dropout_ratio"), l2_regularization,
                   expert_kwargs=args, **kwargs)

    def build(self, input_shape):
        if self.experts_from_inputs:
            if not isinstance(input_shape[0], (list, tuple)) or \
                    len(input_shape) != self.num_expert + 1:
                raise ValueError(f"MMoE with experts_from_inputs takes [expert_1 .. "
                                 f"expert_{self.num_expert}, gate_input], got shape "
                                 f"{input_shape}.")
            input_shape = tuple(input_shape[-1])
        for expert in self.experts:
            expert.build(input_shape)
        for gate in self.gates:
            gate.build(input_shape)

    def call(self, x, training=False):
        if self.experts_from_inputs:
            experts, x = ops.stack(list(x[:-1]), axis=1), x[-1]
        else:
            experts = ops.stack([e(x, training=training) for e in self.experts], axis=1)
        # experts: (batch, num_expert, expert_dim)
        outputs = []
        for gate in self.gates:
            weights = ops.softmax(gate(x), axis=-1)  # (batch, num_expert)
            outputs.append(ops.sum(experts * weights[:, :, None], axis=1))
        return outputs

    def get_config(self):
        return {**super().get_config(), "num_task": self.num_task, "num_expert": self.num_expert,
                "expert_units": self.expert_units, "expert_activation": self.expert_activation,
                "expert_use_bn": self.expert_use_bn, "expert_dropout": self.expert_dropout,
                "l2_regularization": self.l2_regularization,
                "expert_kwargs": self.expert_kwargs,
                "experts_from_inputs": self.experts_from_inputs}
