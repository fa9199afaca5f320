"""AutoInt (Song et al., CIKM 2019) as EasyRec defines it: a single-output rank model over
the feature group "all".

  fields = the group's outputs as (batch, n, d) tokens (a sequence_features output of
           k * d is k tokens)
  x      = interacting_layer_num InteractingLayers (mtrec.layers.autoint)  (batch, n, h*s)
  logits = tower(flatten(x))
"""
import tensorflow as tf

from mtrec.layers.autoint import InteractingLayer
from mtrec.models.base import MultiTaskModel


class AutoInt(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p = self.params
        self.interacting = [InteractingLayer(p.multi_head_num, p.multi_head_size,
                                             self.l2_regularization, name=f"interacting_{i}")
                            for i in range(p.interacting_layer_num)]

    def tower_inputs(self, groups, training):
        tensors = groups["all"]
        dim = tensors[0].shape[-1]
        x = tf.concat(tensors, axis=-1)                       # (batch, n * d)
        x = tf.reshape(x, [-1, x.shape[-1] // dim, dim])      # (batch, n, d)
        for layer in self.interacting:
            x = layer(x)                                      # (batch, n, h * s)
        return [tf.reshape(x, [-1, x.shape[1] * x.shape[2]])]
