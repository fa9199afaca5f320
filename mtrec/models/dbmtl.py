"""DBMTL (Deep Bayesian Multi-Target Learning, as in EasyRec), with optional AITM towers.

  x = concat(DEEP groups) -> [bottom_dnn] -> [MMoE: one input per task] -> x_t
      (with bottom_cmbf / bottom_uniter, x is instead the CMBF / UNITER encoding of the
      groups image / general / text / other, mtrec.models.multimodal)
  x_t -> the relation towers (RelationTowers, mtrec/models/relation_towers.py):
         h_t = dnn_t(x_t), r_t from h_t and the parents' r_p, logits_t = Dense(r_t)

AIT towers add the label constraint with alpha = ait_label_constraint_weight; so does a
tower with an ORDER_CALIBRATE_LOSS term (alpha = that term's weight), EasyRec's name for the
same constraint. The backbone MultiTaskModel (mtrec/models/backbone_model.py) shares the
tower wiring.
"""
from mtrec.layers.dnn import DNN
from mtrec.layers.mmoe import MMoE as MMoELayer
from mtrec.models.base import MultiTaskModel
from mtrec.models.multimodal import MultimodalBottom
from mtrec.models.relation_towers import RelationTowers


class DBMTL(RelationTowers, MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p = self.params
        l2 = self.l2_regularization
        self.bottom = (DNN.from_config_proto(p.bottom_dnn, l2, name="bottom")
                       if p.HasField("bottom_dnn") else None)
        self.multimodal = None
        for kind in ("cmbf", "uniter"):
            if p.HasField(f"bottom_{kind}"):
                self.multimodal = MultimodalBottom(kind, getattr(p, f"bottom_{kind}"),
                                                   self.feature_groups, l2,
                                                   name=f"bottom_{kind}")
        self.mmoe = None
        if p.num_expert > 0:
            self.mmoe = MMoELayer.from_config_proto(p.expert_dnn, len(self.tower_configs),
                                                    p.num_expert, l2, name="mmoe")
        self.init_relation_towers()

    def tower_inputs(self, groups, training):
        if self.multimodal is not None:
            x = self.multimodal(groups, training=training)
        else:
            x = self.group_tensor(groups)
        if self.bottom is not None:
            x = self.bottom(x, training=training)
        if self.mmoe is not None:
            return self.mmoe(x, training=training)
        return [x] * len(self.tower_configs)

    def constraint_weight(self, tower) -> float:
        """AIT towers also get ait_label_constraint_weight."""
        ait = self.params.ait_label_constraint_weight if tower.use_ait_module else 0.0
        return max(ait, 0.0) + super().constraint_weight(tower)
