"""M2M model: a scenario representation S = DNN([scenario_dim])(domain embedding [|| the
scenario_group_name group]); main DEEP groups -> M2M (experts, attention and tower meta
networks generated from S) -> one tower per task."""
import tensorflow as tf

from mtrec.errors import ConfigError
from mtrec.layers.dnn import DNN, dnn_args
from mtrec.layers.m2m import M2M as M2MLayer
from mtrec.models.base import MultiTaskModel


class M2M(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p = self.params
        expert = dnn_args(p.expert_dnn)
        try:
            self.scenario = DNN([p.scenario_dim], l2_regularization=self.l2_regularization,
                                name="scenario")
            self.m2m = M2MLayer(len(self.tower_configs), p.num_expert,
                                expert["hidden_units"], p.view_dim, p.meta_unit_depth,
                                p.tower_depth, p.residual,
                                l2_regularization=self.l2_regularization,
                                expert_activation=expert["activation"],
                                expert_use_bn=expert["use_bn"],
                                expert_dropout=expert["dropout_ratio"], name="m2m")
        except ValueError as e:  # e.g. an unknown activation or bad dropout_ratio
            raise ConfigError(f"m2m.expert_dnn: {e}") from None

    def scenario_representation(self, groups, training=False):
        """(batch, scenario_dim)."""
        parts = [self.domain_embedding(groups)]
        if self.params.scenario_group_name:
            parts.append(self.group_tensor(groups, [self.params.scenario_group_name]))
        return self.scenario(tf.concat(parts, axis=-1), training=training)

    def tower_inputs(self, groups, training):
        scenario = self.scenario_representation(groups, training)
        return self.m2m(self.main_tensor(groups), scenario, training=training)
