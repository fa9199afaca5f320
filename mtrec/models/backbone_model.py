"""Models built from a `backbone` and `model_params` (EasyRec's component models).

model_class "MultiTaskModel": one tower per model_params.task_towers entry on the backbone
output; when the output is a list (output_blocks, or a last block with one output per task
such as MMoE), tower i reads item i. The towers are DBMTL's (RelationTowers): dnn ->
[relation_dnn | AITM attention over relation_tower_names] -> logits, with the
ORDER_CALIBRATE_LOSS label constraint.

model_class "RankModel": the same with a single tower (config fill_defaults creates it from
model_config.loss_type / num_class on the first label field when model_params names none);
the backbone's top_mlp is the usual last hidden layer.
"""
from mtrec.models.base import MultiTaskModel
from mtrec.models.relation_towers import RelationTowers


class BackboneModel(RelationTowers, MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        self.init_relation_towers()

    def tower_inputs(self, groups, training):
        out = self.backbone_output(groups)
        if isinstance(out, (list, tuple)):
            return list(out)
        return [out] * len(self.tower_configs)
