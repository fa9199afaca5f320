"""DLRM (Naumov et al., 2019) as EasyRec defines it: a single-output rank model over the
feature groups "dense" and "sparse".

  dense  = bot_dnn(dense group)                              (batch, d)
  "dot": [dot products of every pair of [dense, e_1..e_n] (with each itself if
          arch_interaction_itself), e_1..e_n, dense if arch_with_dense_feature]
  "cat": [dense, e_1..e_n]                                   e_i: the sparse embeddings
  logits = tower(top_dnn(that))
"""
import tensorflow as tf

from mtrec.layers.dnn import DNN
from mtrec.layers.dot_interaction import DotInteraction
from mtrec.models.base import MultiTaskModel


class DLRM(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p, l2 = self.params, self.l2_regularization
        self.bot_dnn = DNN.from_config_proto(p.bot_dnn, l2, name="bot_dnn")
        self.top_dnn = DNN.from_config_proto(p.top_dnn, l2, name="top_dnn")
        self.interaction = (DotInteraction(self_interaction=p.arch_interaction_itself,
                                           name="interaction")
                            if p.arch_interaction_op == "dot" else None)

    def tower_inputs(self, groups, training):
        dense = self.bot_dnn(self.group_tensor(groups, ["dense"]), training=training)
        sparse = list(groups["sparse"])                              # [(batch, d)] * n
        if self.interaction is None:
            parts = [dense] + sparse
        else:
            parts = [self.interaction([dense] + sparse)] + sparse    # (batch, pairs), ...
            if self.params.arch_with_dense_feature:
                parts.append(dense)
        return [self.top_dnn(tf.concat(parts, axis=-1), training=training)]
