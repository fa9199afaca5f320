"""HMoE: Hybrid of Mixture-of-Experts for multi-scenario ranking (Li et al., CIKM 2020).

Shared experts E(x); for every domain j and task k a softmax gate and a tower give
    S_jk = tower_jk( sum_i g_jk(x)_i * E_i(x) ),
computed for every row. For a row of domain t, its own domain's tower plus the
cross-domain term weighted by w_k = softmax(V_k x):
    logits_k = S_tk + sum_{j != t} w_kj * stop_gradient(S_jk),
so other domains' towers inform a row's prediction but are trained only by their own
domain's rows. (Weighting the own tower by w_kt too gave it ~1/num_domains of the gradient
and measured 0.02-0.05 AUC lower on the multi-domain sample than the own tower alone.)
"""
import keras
import tensorflow as tf
from keras import ops

from mtrec.layers.dnn import DNN
from mtrec.layers.tower import TaskTower

_TOWER_KEYS = ("hidden_units", "activation", "use_bn", "dropout_ratio", "num_class")


def _tower_spec(tower, k: int) -> dict:
    if not isinstance(tower, dict):
        raise ValueError(f"HMoE towers[{k}] must be a dict of {list(_TOWER_KEYS)}, got "
                         f"{type(tower).__name__}.")
    unknown = sorted(set(tower) - set(_TOWER_KEYS))
    if unknown:
        raise ValueError(f"HMoE towers[{k}]: unknown tower arguments {unknown}; expected some "
                         f"of {list(_TOWER_KEYS)}.")
    spec = {"hidden_units": [], "activation": "relu", "use_bn": False, "dropout_ratio": [],
            "num_class": 1, **tower}
    spec["hidden_units"] = [int(u) for u in spec["hidden_units"]]
    spec["dropout_ratio"] = [float(r) for r in spec["dropout_ratio"]]
    spec["num_class"] = int(spec["num_class"])
    return spec


class HMoE(keras.layers.Layer):
    """call(x (batch, d_in), domain (batch,) int in [0, num_domains), training)
    -> list of num_task logits (batch, num_class of the task).

    towers: one dict per task of TaskTower arguments (hidden_units, activation, use_bn,
    dropout_ratio, num_class); every domain gets its own tower of that shape.
    """

    def __init__(self, num_domains, num_expert, expert_units, expert_activation="relu",
                 expert_use_bn=False, expert_dropout=(), towers=(), l2_regularization=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_domains) < 1:
            raise ValueError(f"HMoE needs num_domains >= 1, got {num_domains}.")
        if int(num_expert) < 1:
            raise ValueError(f"HMoE needs num_expert >= 1, got {num_expert}.")
        if not expert_units:
            raise ValueError("HMoE needs expert hidden_units.")
        if not towers:
            raise ValueError("HMoE needs at least one tower (one per task).")
        self.num_domains = int(num_domains)
        self.num_expert = int(num_expert)
        self.expert_units = [int(u) for u in expert_units]
        self.expert_activation = expert_activation
        self.expert_use_bn = expert_use_bn
        self.expert_dropout = list(expert_dropout)
        self.towers = [_tower_spec(t, k) for k, t in enumerate(towers)]
        self.l2_regularization = l2_regularization
        self.num_task = len(self.towers)
        # Explicit names keep variable paths (checkpoint keys) stable across processes.
        self.experts = [DNN(self.expert_units, expert_activation, expert_use_bn,
                            self.expert_dropout, l2_regularization, name=f"expert_{i}")
                        for i in range(self.num_expert)]
        regularizer = keras.regularizers.L2(l2_regularization) if l2_regularization else None
        # [domain][task]
        self.gates = [[keras.layers.Dense(self.num_expert, kernel_regularizer=regularizer,
                                          name=f"gate_domain{j}_task{k}")
                       for k in range(self.num_task)] for j in range(self.num_domains)]
        self.domain_towers = [[TaskTower(**spec, l2_regularization=l2_regularization,
                                         name=f"tower_domain{j}_task{k}")
                               for k, spec in enumerate(self.towers)]
                              for j in range(self.num_domains)]
        self.scenario_gates = [keras.layers.Dense(self.num_domains,
                                                  kernel_regularizer=regularizer,
                                                  name=f"scenario_weight_task{k}")
                               for k in range(self.num_task)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for expert in self.experts:
            expert.build(shape)
        mixture_shape = shape[:-1] + (self.expert_units[-1],)
        for gates, towers in zip(self.gates, self.domain_towers):
            for gate, tower in zip(gates, towers):
                gate.build(shape)
                tower.build(mixture_shape)
        for gate in self.scenario_gates:
            gate.build(shape)

    def compute_output_shape(self, x_shape, domain_shape=None):
        return [tuple(x_shape)[:-1] + (t["num_class"],) for t in self.towers]

    def expert_outputs(self, x, training=False):
        """(batch, num_expert, expert_dim)."""
        return ops.stack([e(x, training=training) for e in self.experts], axis=1)

    def domain_scores(self, x, training=False, experts=None):
        """S: per task k, (batch, num_domains, num_class) of every domain's tower on every
        row (no stop-gradient)."""
        if experts is None:
            experts = self.expert_outputs(x, training)
        scores = []
        for k in range(self.num_task):
            per_domain = []
            for j in range(self.num_domains):
                weights = ops.softmax(self.gates[j][k](x), axis=-1)  # (batch, num_expert)
                mixture = ops.sum(experts * weights[:, :, None], axis=1)  # (batch, expert_dim)
                per_domain.append(self.domain_towers[j][k](mixture, training=training))
            scores.append(ops.stack(per_domain, axis=1))
        return scores

    def scenario_weights(self, x):
        """w: per task k, (batch, num_domains) softmax weights over the domains' towers."""
        return [ops.softmax(gate(x), axis=-1) for gate in self.scenario_gates]

    def call(self, x, domain, training=False):
        domain = tf.cast(tf.reshape(domain, [-1]), tf.int32)  # (batch,)
        experts = self.expert_outputs(x, training)
        # (batch, num_domains, 1): 1 at the row's own domain.
        own = tf.one_hot(domain, self.num_domains, dtype=x.dtype)[:, :, None]
        logits = []
        for scores, weights in zip(self.domain_scores(x, training, experts),
                                   self.scenario_weights(x)):
            # scores: (batch, num_domains, num_class); weights: (batch, num_domains)
            own_score = ops.sum(own * scores, axis=1)
            cross = (1.0 - own) * weights[:, :, None] * tf.stop_gradient(scores)
            logits.append(own_score + ops.sum(cross, axis=1))
        return logits

    def get_config(self):
        return {**super().get_config(), "num_domains": self.num_domains,
                "num_expert": self.num_expert, "expert_units": self.expert_units,
                "expert_activation": self.expert_activation,
                "expert_use_bn": self.expert_use_bn, "expert_dropout": self.expert_dropout,
                "towers": self.towers, "l2_regularization": self.l2_regularization}
