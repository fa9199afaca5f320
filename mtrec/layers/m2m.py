"""M2M: multi-scenario multi-task meta learning (Zhang et al., WSDM 2022).

Backbone, for input x and scenario representation s:
    E_i = expert_i(x)                          i = 1..num_expert,   (batch, view_dim)
    T_t = relu(Dense(task_embedding[t]))       t = 1..num_task,     (view_dim,)
Attention meta network, per task t (Meta_t a MetaUnit of meta_unit_depth layers on s):
    a_ti = v_t . Meta_t([E_i || T_t]; s),   alpha_t = softmax_i(a_ti),   R_t = sum_i alpha_ti E_i
Tower meta network, per task t (Meta_tj one generated affine layer on s):
    L_0 = R_t,  L_j = act(Meta_tj(L_{j-1}) + L_{j-1})   (residual; else act(Meta_tj(L_{j-1})))
The output of task t is L_{tower_depth}. FunRec's M2M drops the tower residual; the paper
(and this layer, with residual=True) keeps it.
"""
import keras
from keras import ops

from mtrec.layers.dnn import DNN, activation_name
from mtrec.layers.meta_unit import MetaUnit


class M2M(keras.layers.Layer):
    """call(x, scenario, training) -> list of num_task tensors (batch, view_dim);
    x (batch, d_in), scenario (batch, s).

    Experts are DNN(expert_units + [view_dim], expert_activation, expert_use_bn,
    expert_dropout); `activation` is the meta units' and the tower meta network's.
    """

    def __init__(self, num_task, num_expert, expert_units, view_dim, meta_unit_depth,
                 tower_depth, residual=True, activation="relu", l2_regularization=0.0,
                 expert_activation="relu", expert_use_bn=False, expert_dropout=(), **kwargs):
        super().__init__(**kwargs)
        for name, value, low in (("num_task", num_task, 1), ("num_expert", num_expert, 1),
                                 ("view_dim", view_dim, 1),
                                 ("meta_unit_depth", meta_unit_depth, 1),
                                 ("tower_depth", tower_depth, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"M2M {name} must be an integer >= {low}, got {value!r}.")
        expert_units = [int(u) for u in expert_units]
        expert_dropout = [float(r) for r in expert_dropout]
        if len(expert_dropout) == 1:
            expert_dropout = expert_dropout * len(expert_units)
        if expert_dropout and len(expert_dropout) != len(expert_units):
            raise ValueError(f"M2M expert_dropout needs 1 or {len(expert_units)} values (one per "
                             f"expert_units layer), got {len(expert_dropout)}.")
        self.num_task = int(num_task)
        self.num_expert = int(num_expert)
        self.expert_units = expert_units
        self.view_dim = int(view_dim)
        self.meta_unit_depth = int(meta_unit_depth)
        self.tower_depth = int(tower_depth)
        self.residual = bool(residual)
        self.activation = activation_name(activation or "linear")
        self.l2_regularization = l2_regularization
        self.expert_activation = activation_name(expert_activation)
        self.expert_use_bn = expert_use_bn
        self.expert_dropout = expert_dropout
        regularizer = keras.regularizers.L2(l2_regularization) if l2_regularization else None
        # The view layer ends every expert, without dropout.
        dropout = expert_dropout + [0.0] if expert_dropout else ()
        self.experts = [DNN(expert_units + [self.view_dim], self.expert_activation, expert_use_bn,
                            dropout, l2_regularization, name=f"expert_{i}")
                        for i in range(self.num_expert)]
        self.task_dense = keras.layers.Dense(self.view_dim, activation="relu",
                                             kernel_regularizer=regularizer, name="task_dense")
        self.attention_meta = [MetaUnit(self.meta_unit_depth, self.activation,
                                        l2_regularization=l2_regularization,
                                        name=f"attention_meta_{t}")
                               for t in range(self.num_task)]
        self.attention_v = [keras.layers.Dense(1, use_bias=False, kernel_regularizer=regularizer,
                                               name=f"attention_v_{t}")
                            for t in range(self.num_task)]
        # Meta_tj: one generated affine layer each; the activation comes after the residual.
        self.tower_meta = [[MetaUnit(1, None, l2_regularization=l2_regularization,
                                     name=f"tower_meta_{t}_{j}")
                            for j in range(self.tower_depth)] for t in range(self.num_task)]

    def build(self, x_shape, scenario_shape):
        x_shape, scenario_shape = tuple(x_shape), tuple(scenario_shape)
        batch = x_shape[:-1]
        self.task_embedding = self.add_weight(shape=(self.num_task, self.view_dim),
                                              initializer="glorot_uniform",
                                              name="task_embedding")
        for expert in self.experts:
            expert.build(x_shape)
        self.task_dense.build((self.num_task, self.view_dim))
        for meta, v in zip(self.attention_meta, self.attention_v):
            meta.build(batch + (self.num_expert, 2 * self.view_dim), scenario_shape)
            v.build(batch + (self.num_expert, 2 * self.view_dim))
        for metas in self.tower_meta:
            for meta in metas:
                meta.build(batch + (self.view_dim,), scenario_shape)

    def compute_output_shape(self, x_shape, scenario_shape=None):
        return [tuple(x_shape[:-1]) + (self.view_dim,)] * self.num_task

    def expert_outputs(self, x, training=False):
        """(batch, num_expert, view_dim)."""
        return ops.stack([e(x, training=training) for e in self.experts], axis=1)

    def task_representations(self):
        """(num_task, view_dim): T_t = relu(Dense(task_embedding[t]))."""
        return self.task_dense(self.task_embedding)

    def attention_weights(self, experts, scenario):
        """num_task tensors (batch, num_expert): alpha_t = softmax_i(v_t . Meta_t([E_i || T_t]))."""
        tasks = self.task_representations()
        weights = []
        for t in range(self.num_task):
            # (batch, num_expert, view_dim): T_t next to every expert of every row.
            task = ops.broadcast_to(tasks[t], ops.shape(experts))
            h = self.attention_meta[t](ops.concatenate([experts, task], axis=-1), scenario)
            scores = ops.squeeze(self.attention_v[t](h), axis=-1)  # (batch, num_expert)
            weights.append(ops.softmax(scores, axis=-1))
        return weights

    def tower(self, t, r, scenario):
        """Task t's tower meta network on R_t (batch, view_dim) -> (batch, view_dim)."""
        act = keras.activations.get(self.activation)
        h = r
        for meta in self.tower_meta[t]:
            h = act(meta(h, scenario) + h) if self.residual else act(meta(h, scenario))
        return h

    def call(self, x, scenario, training=False):
        experts = self.expert_outputs(x, training=training)  # (batch, num_expert, view_dim)
        outputs = []
        for t, alpha in enumerate(self.attention_weights(experts, scenario)):
            r = ops.sum(experts * alpha[:, :, None], axis=1)  # (batch, view_dim)
            outputs.append(self.tower(t, r, scenario))
        return outputs

    def get_config(self):
        return {**super().get_config(), "num_task": self.num_task,
                "num_expert": self.num_expert, "expert_units": self.expert_units,
                "view_dim": self.view_dim, "meta_unit_depth": self.meta_unit_depth,
                "tower_depth": self.tower_depth, "residual": self.residual,
                "activation": self.activation, "l2_regularization": self.l2_regularization,
                "expert_activation": self.expert_activation,
                "expert_use_bn": self.expert_use_bn, "expert_dropout": self.expert_dropout}
