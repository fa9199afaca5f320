"""PLE model: DEEP groups -> extraction levels (CGC: task + shared experts) -> one tower per task."""
from mtrec.errors import ConfigError
from mtrec.layers.cgc import PLE as PLELayer
from mtrec.layers.dnn import dnn_args
from mtrec.models.base import MultiTaskModel


class PLE(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        # Config validation (mtrec.models.checks.check_ple) checked the levels.
        levels = []
        for net in self.params.extraction_networks:
            levels.append({"expert_num_per_task": net.expert_num_per_task,
                           "share_num": net.share_num,
                           "task_expert_net": dnn_args(net.task_expert_net),
                           "share_expert_net": dnn_args(net.share_expert_net)})
        try:
            self.ple = PLELayer(len(self.tower_configs), levels, self.l2_regularization,
                                name="ple")
        except ValueError as e:  # e.g. an unknown activation or bad dropout_ratio
            raise ConfigError(f"ple.extraction_networks: {e}") from None

    def tower_inputs(self, groups, training):
        return self.ple(self.group_tensor(groups), training=training)
