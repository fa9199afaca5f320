"""Wide & Deep (Cheng et al., 2016) as EasyRec defines it: a single-output rank model over
the feature groups "wide" (WIDE) and "deep".

  wide = the wide group's per-id weights summed per column  (batch, wide_output_dim);
         without final_dnn wide_output_dim is num_class
  deep = dnn(deep group)                                    (batch, d)
  with final_dnn:  logits = tower(final_dnn([wide, deep]))
  without:         logits = tower(deep) + wide
"""
import tensorflow as tf

from mtrec.layers.dnn import DNN
from mtrec.models.base import MultiTaskModel


class WideAndDeep(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p, l2 = self.params, self.l2_regularization
        self.deep = DNN.from_config_proto(p.dnn, l2, name="deep_feature")
        self.final_dnn = (DNN.from_config_proto(p.final_dnn, l2, name="final_dnn")
                          if p.final_dnn.hidden_units else None)

    def wide_width(self):
        if self.params.final_dnn.hidden_units:
            return self.params.wide_output_dim
        return self.tower_configs[0].num_class

    def tower_inputs(self, groups, training):
        deep = self.deep(self.group_tensor(groups, ["deep"]), training=training)  # (batch, d)
        if self.final_dnn is None:
            return [deep]
        wide = tf.add_n(groups["wide"])                          # (batch, wide_output_dim)
        return [self.final_dnn(tf.concat([wide, deep], axis=-1), training=training)]

    def extra_logits(self, groups):
        if self.final_dnn is not None:
            return None
        return [tf.add_n(groups["wide"])]                        # (batch, num_class)
