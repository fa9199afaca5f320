"""HMoE model: DEEP groups -> shared experts -> per domain and task a gate and a tower ->
per task, scenario-weighted sum of all domains' towers (other domains' towers under
stop-gradient).

The per-domain towers replace the base model's task towers: self.task_towers stay
unused and, never called, create no weights.
"""
from mtrec.errors import ConfigError
from mtrec.layers.dnn import dnn_args
from mtrec.layers.hmoe import HMoE as HMoELayer
from mtrec.models.base import MultiTaskModel


class HMoE(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p = self.params
        expert = dnn_args(p.expert_dnn)
        towers = [{**dnn_args(t.dnn), "num_class": t.num_class} for t in self.tower_configs]
        try:
            self.hmoe = HMoELayer(self.num_domains, p.num_expert, expert["hidden_units"],
                                  expert["activation"], expert["use_bn"],
                                  expert["dropout_ratio"], towers, self.l2_regularization,
                                  name="hmoe")
        except ValueError as e:  # e.g. an unknown activation or bad dropout_ratio
            raise ConfigError(f"hmoe: {e}") from None

    def tower_logits(self, groups, training):
        return self.hmoe(self.main_tensor(groups), self.domain_index(groups), training=training)
