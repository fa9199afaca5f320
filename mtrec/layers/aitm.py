"""Adaptive Information Transfer (AITM; Xi et al., KDD 2021).

A task combines its own representation z_0 with the information z_1..z_n transferred
from the tasks before it (each parent's output through a transfer layer g_i):

  q_i = Wq_i z_i,  k_i = Wk_i z_i,  v_i = Wv_i z_i          (projections of width dim)
  a_i = softmax_i(<q_i, k_i> / sqrt(dim))                     query "each" (the paper)
  a_i = softmax_i(<q_0, k_i> / sqrt(dim))                     query "own" (EasyRec's AITMTower)
  out = sum_i a_i v_i

Projections are per input (as EasyRec does), so the inputs may differ in width.
`AITMAttention` is the attention alone; `AITModule` adds the per-parent transfer and is
what DBMTL's `use_ait_module` towers (and a backbone AITMTower) use.
"""
import math

import keras
from keras import ops

from mtrec.layers.dnn import DNN

QUERY_MODES = ("each", "own")


class AITMAttention(keras.layers.Layer):
    """[z_0 (batch, d_0), z_1 (batch, d_1), ...] -> (batch, dim), dim = project_dim or d_0.

    call(..., return_weights=True) also returns the attention weights (batch, n_inputs).
    """

    def __init__(self, project_dim=0, query="each", l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if project_dim < 0:
            raise ValueError(f"project_dim must be >= 0 (0 = width of the first input), "
                             f"got {project_dim}.")
        if query not in QUERY_MODES:
            raise ValueError(f"query must be one of {QUERY_MODES}, got {query!r}.")
        self.project_dim = int(project_dim)
        self.query = query
        self.l2_regularization = l2_regularization
        self.queries, self.keys, self.values = [], [], []
        self.dim = None

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or not input_shape or not isinstance(
                input_shape[0], (list, tuple)):
            raise ValueError("AITMAttention takes a list of (batch, d) tensors "
                             f"[own, transferred...], got shape {input_shape}.")
        for i, shape in enumerate(input_shape):
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(f"AITMAttention input {i} must be (batch, d) with a known d, "
                                 f"got {tuple(shape)}.")
        self.dim = self.project_dim or int(input_shape[0][-1])
        regularizer = (keras.regularizers.L2(self.l2_regularization)
                       if self.l2_regularization else None)
        # Explicit names keep variable paths (checkpoint keys) stable.
        for i, shape in enumerate(input_shape):
            for kind, layers in (("query", self.queries), ("key", self.keys),
                                 ("value", self.values)):
                dense = keras.layers.Dense(self.dim, kernel_regularizer=regularizer,
                                           name=f"{kind}_{i}")
                dense.build(tuple(shape))
                layers.append(dense)

    def compute_output_shape(self, input_shape):
        dim = self.project_dim or input_shape[0][-1]
        return (input_shape[0][0], dim)

    def call(self, inputs, return_weights=False):
        if len(inputs) != len(self.queries):
            raise ValueError(f"AITMAttention was built for {len(self.queries)} inputs, "
                             f"got {len(inputs)}.")
        q = ops.stack([layer(z) for layer, z in zip(self.queries, inputs)], axis=1)  # (b, n, dim)
        k = ops.stack([layer(z) for layer, z in zip(self.keys, inputs)], axis=1)     # (b, n, dim)
        v = ops.stack([layer(z) for layer, z in zip(self.values, inputs)], axis=1)   # (b, n, dim)
        if self.query == "own":
            q = q[:, :1, :]                                   # (b, 1, dim), broadcast over n
        scores = ops.sum(q * k, axis=-1) / math.sqrt(self.dim)  # (b, n)
        weights = ops.softmax(scores, axis=-1)                 # (b, n)
        output = ops.sum(weights[:, :, None] * v, axis=1)      # (b, dim)
        return (output, weights) if return_weights else output

    def get_config(self):
        return {**super().get_config(), "project_dim": self.project_dim, "query": self.query,
                "l2_regularization": self.l2_regularization}


class AITModule(keras.layers.Layer):
    """[own (batch, d), parent_1 (batch, d_1), ...] -> (batch, project_dim or d).

    Each parent's output goes through its own transfer DNN (`transfer_units`; empty =
    one ReLU layer of width d; transfer_kwargs: further DNN keyword arguments, e.g. EasyRec
    MLP settings; use_transfer=False: no transfer), then AITMAttention combines
    [own, transferred...]. With stop_gradient, the parents get no gradient through this tower.
    """

    def __init__(self, num_parents, project_dim=0, transfer_units=(), transfer_activation="relu",
                 query="each", stop_gradient=False, l2_regularization=0.0, *,
                 use_transfer=True, transfer_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        if num_parents < 1:
            raise ValueError(f"AITModule needs at least one parent input, got {num_parents}.")
        self.use_transfer = bool(use_transfer)
        self.transfer_kwargs = dict(transfer_kwargs or {})
        self.num_parents = int(num_parents)
        self.project_dim = int(project_dim)
        self.transfer_units = [int(u) for u in transfer_units]
        self.transfer_activation = transfer_activation
        self.query = query
        self.stop_gradient = stop_gradient
        self.l2_regularization = l2_regularization
        self.attention = AITMAttention(project_dim, query, l2_regularization, name="attention")
        self.transfers = []

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != self.num_parents + 1:
            raise ValueError(f"AITModule takes [own, {self.num_parents} parent(s)] as a list of "
                             f"{self.num_parents + 1} tensors, got shape {input_shape}.")
        own_dim = input_shape[0][-1]
        if own_dim is None:
            raise ValueError("AITModule needs the width of its own input to be known.")
        units = self.transfer_units or [int(own_dim)]
        shapes = [tuple(input_shape[0])]
        for i, shape in enumerate(input_shape[1:]):
            if not self.use_transfer:
                shapes.append(tuple(shape))
                continue
            settings = {"hidden_units": units, "activation": self.transfer_activation,
                        "use_bn": False, **self.transfer_kwargs}
            transfer = DNN(**settings, l2_regularization=self.l2_regularization,
                           name=f"transfer_{i}")
            transfer.build(tuple(shape))
            self.transfers.append(transfer)
            shapes.append(transfer.compute_output_shape(tuple(shape)))
        self.attention.build(shapes)

    def compute_output_shape(self, input_shape):
        return self.attention.compute_output_shape([tuple(input_shape[0])])

    def call(self, inputs, training=False, return_weights=False):
        own, parents = inputs[0], list(inputs[1:])
        if len(parents) != self.num_parents:
            raise ValueError(f"AITModule expects {self.num_parents} parent input(s), "
                             f"got {len(parents)}.")
        if self.stop_gradient:
            parents = [ops.stop_gradient(x) for x in parents]
        transferred = ([t(x, training=training) for t, x in zip(self.transfers, parents)]
                       if self.use_transfer else parents)
        return self.attention([own] + transferred, return_weights=return_weights)

    def get_config(self):
        return {**super().get_config(), "num_parents": self.num_parents,
                "project_dim": self.project_dim, "transfer_units": self.transfer_units,
                "transfer_activation": self.transfer_activation, "query": self.query,
                "stop_gradient": self.stop_gradient,
                "l2_regularization": self.l2_regularization, "use_transfer": self.use_transfer,
                "transfer_kwargs": self.transfer_kwargs}
