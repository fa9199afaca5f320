"""APG model: main DEEP groups -> a stack of APGDense layers whose weights are generated per
sample from a condition -> the same representation to every task tower.

condition GROUP: the domain embedding; MIX: the domain embedding next to the
condition_group_name group (e.g. user/item ids); SELF: each layer's own input.
"""
import tensorflow as tf

from mtrec.errors import ConfigError
from mtrec.layers.apg import APGDense
from mtrec.layers.dnn import activation_name
from mtrec.models.base import MultiTaskModel
from mtrec.protos import models_pb2


class APG(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p = self.params
        try:
            activation_name(p.activation)
        except ValueError as e:
            raise ConfigError(f"apg.activation: {e}") from None
        try:
            self.apg_layers = [APGDense(units, p.activation, p.mf_k, p.mf_p, p.use_uv_shared,
                                        p.use_mf_p, self.l2_regularization, name=f"apg_{i}")
                               for i, units in enumerate(p.hidden_units)]
        except ValueError as e:  # e.g. mf_k 0 in a config that skipped validation
            raise ConfigError(f"apg.hidden_units: {e}") from None

    def condition(self, groups):
        """(batch, c) condition of every layer, or None for SELF (each layer's input)."""
        p = self.params
        if p.condition == models_pb2.APG.SELF:
            return None
        domain = self.domain_embedding(groups)
        if p.condition == models_pb2.APG.MIX:
            return tf.concat([domain, self.group_tensor(groups, [p.condition_group_name])],
                             axis=-1)
        return domain

    def tower_inputs(self, groups, training):
        condition = self.condition(groups)
        h = self.main_tensor(groups)
        for layer in self.apg_layers:
            h = layer(h, h if condition is None else condition)
        return [h] * len(self.tower_configs)
