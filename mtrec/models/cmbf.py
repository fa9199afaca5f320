"""CMBF (EasyRec's CMBF), a single-output rank model:

  h = CMBF fusion of the feature groups image / general / text, with the "other" group
      (mtrec.models.multimodal, maths in mtrec.layers.cmbf)
  logits = tower(final_dnn(h))
"""
from mtrec.layers.dnn import DNN
from mtrec.models.base import MultiTaskModel
from mtrec.models.multimodal import MultimodalBottom


class CMBF(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p, l2 = self.params, self.l2_regularization
        self.bottom = MultimodalBottom("cmbf", p.config, self.feature_groups, l2,
                                       name="cmbf_bottom")
        self.final_dnn = DNN.from_config_proto(p.final_dnn, l2, name="final_dnn")

    def tower_inputs(self, groups, training):
        return [self.final_dnn(self.bottom(groups, training=training), training=training)]
