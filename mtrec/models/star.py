"""STAR model: DEEP groups -> [partitioned norm] -> star topology layers (shared weights
times the row's domain weights) -> the same representation to every task tower.

With aux_dnn, an auxiliary network on the domain embedding and the main input adds one
logit per tower, so p = sigmoid(s_main + s_aux) as in the paper.
"""
import keras
import tensorflow as tf

from mtrec.errors import ConfigError
from mtrec.layers.dnn import DNN
from mtrec.layers.star import STAR as STARLayer
from mtrec.models.base import MultiTaskModel


class STAR(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p = self.params
        try:
            self.star = STARLayer(list(p.hidden_units), self.num_domains,
                                  partitioned_norm=p.partitioned_norm,
                                  l2_regularization=self.l2_regularization, name="star")
            self.aux = (DNN.from_config_proto(p.aux_dnn, self.l2_regularization, name="aux_dnn")
                        if p.HasField("aux_dnn") else None)
        except ValueError as e:
            raise ConfigError(f"star: {e}") from None
        regularizer = (keras.regularizers.L2(self.l2_regularization)
                       if self.l2_regularization else None)
        # One auxiliary logit per tower: column i goes to tower i.
        self.aux_logits = (keras.layers.Dense(len(self.tower_configs),
                                              kernel_regularizer=regularizer, name="aux_logits")
                           if self.aux is not None else None)

    def tower_inputs(self, groups, training):
        x = self.star(self.main_tensor(groups), self.domain_index(groups), training=training)
        return [x] * len(self.tower_configs)  # (batch, hidden_units[-1]) per tower

    def tower_logits(self, groups, training):
        # The auxiliary logits are added here rather than in extra_logits, which gets no
        # `training` flag: the aux DNN's dropout and batch norm need it.
        logits = super().tower_logits(groups, training)
        if self.aux is None:
            return logits
        x = tf.concat([self.domain_embedding(groups), self.main_tensor(groups)], axis=-1)
        aux = self.aux_logits(self.aux(x, training=training))  # (batch, num_towers)
        return [s + aux[:, i:i + 1] for i, s in enumerate(logits)]
