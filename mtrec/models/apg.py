"""APG model: main DEEP groups -> a stack of APGDense layers whose weights are generated per
sample from a condition -> the same representation to every task tower.

condition GROUP: the domain embedding; MIX: the domain embedding next to the
condition_group_name group (e.g. user/item ids); SELF: each layer's own input.
With GROUP the condition has one value per domain, so each layer generates its matrices
once per domain present in the batch (APGDense grouped_condition), not once per row.
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
        for field in ("activation", "inner_activation", "generate_activation"):
            name = getattr(p, field)
            try:
                if name or field == "activation":  # empty inner/generate: none
                    activation_name(name)
            except ValueError as e:
                raise ConfigError(f"apg.{field}: {e}") from None
        # GROUP: the condition is the domain embedding, a handful of distinct rows per
        # batch: the layers generate their matrices once per distinct domain.
        grouped = p.condition == models_pb2.APG.GROUP
        try:
            self.apg_layers = [APGDense(units, p.activation, p.mf_k, p.mf_p, p.use_uv_shared,
                                        p.use_mf_p, self.l2_regularization,
                                        inner_activation=p.inner_activation,
                                        generate_activation=p.generate_activation,
                                        grouped_condition=grouped, name=f"apg_{i}")
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
