"""MMoE model: DEEP groups -> [bottom DNN] -> MMoE experts and gates -> one tower per task.
The experts are num_expert copies of expert_dnn, or (EasyRec's deprecated form) one DNN per
`experts` entry.

With use_linear_logits / use_fm_logits (the seed's DeepFM-MMoE user model), each tower's
logit also gets a per-task linear term over the WIDE groups and an FM term over the DEEP
groups' embeddings (MultiTaskModel.extra_logits; every multi-task model has the options).
"""
from mtrec.layers.dnn import DNN
from mtrec.layers.mmoe import MMoE as MMoELayer
from mtrec.models.base import MultiTaskModel


class MMoE(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p = self.params
        self.bottom = (DNN.from_config_proto(p.bottom_dnn, self.l2_regularization, name="bottom")
                       if p.HasField("bottom_dnn") else None)
        # EasyRec's deprecated `experts`: one DNN each, mixed by the MMoE gates.
        self.experts = [DNN.from_config_proto(e.dnn, self.l2_regularization,
                                              name=f"expert_{i}")
                        for i, e in enumerate(p.experts)]
        self.mmoe = MMoELayer.from_config_proto(
            None if self.experts else p.expert_dnn, len(self.tower_configs),
            len(self.experts) or p.num_expert, self.l2_regularization, name="mmoe")

    def tower_inputs(self, groups, training):
        x = self.group_tensor(groups)
        if self.bottom is not None:
            x = self.bottom(x, training=training)
        if self.experts:
            return self.mmoe([e(x, training=training) for e in self.experts] + [x],
                             training=training)
        return self.mmoe(x, training=training)
