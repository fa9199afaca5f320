"""DCN (Wang et al., ADKDD 2017) as EasyRec defines it: a single-output rank model.

  deep  = deep_tower.dnn(deep_tower.input group)                        (batch, d_deep)
  cross = cross_num Cross layers over the cross_tower.input group x_0   (batch, d_0)
          (mtrec.layers.cross of rank 1: x_{l+1} = x_0 * (v (u . x_l) + b) + x_l)
  logits = tower(final_dnn([deep, cross]))
"""
import tensorflow as tf

from mtrec.layers.cross import Cross
from mtrec.layers.dnn import DNN
from mtrec.models.base import MultiTaskModel


class DCN(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p, l2 = self.params, self.l2_regularization
        self.deep = DNN.from_config_proto(p.deep_tower.dnn, l2, name="dnn")
        self.crosses = [Cross(projection_dim=1, l2_regularization=l2, name=f"cross_layer_{i}")
                        for i in range(p.cross_tower.cross_num)]
        self.final_dnn = DNN.from_config_proto(p.final_dnn, l2, name="final_dnn")

    def tower_inputs(self, groups, training):
        p = self.params
        deep = self.deep(self.group_tensor(groups, [p.deep_tower.input]), training=training)
        x0 = x = self.group_tensor(groups, [p.cross_tower.input])   # (batch, d_0)
        for cross in self.crosses:
            x = cross([x0, x])                                       # (batch, d_0)
        return [self.final_dnn(tf.concat([deep, x], axis=-1), training=training)]
