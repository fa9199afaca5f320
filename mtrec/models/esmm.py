"""ESMM (Ma et al., SIGIR 2018): pctcvr = pctr * pcvr over the entire impression space.

The ctr tower learns from clicks on all rows; the cvr tower has no loss of its own and
learns only through ctcvr, whose label is click * conversion.
"""
import tensorflow as tf

from mtrec.layers.dnn import DNN
from mtrec.models.base import MultiTaskModel
from mtrec.models.losses import (L2_LOSS, binary_cross_entropy_on_probs, prediction, tower_loss,
                                 tower_loss_type)


class ESMM(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        self.ctr, self.cvr = self.tower_configs
        self.group_dnns = [(g.input, DNN.from_config_proto(g.dnn, self.l2_regularization,
                                                           name=f"group_{g.input}"))
                           for g in self.params.groups]

    def tower_inputs(self, groups, training):
        if self.group_dnns:
            x = tf.concat([dnn(self.group_tensor(groups, [name]), training=training)
                           for name, dnn in self.group_dnns], axis=-1)
        else:
            x = self.group_tensor(groups)
        return [x, x]

    def call(self, features, training=False):
        outputs = super().call(features, training)
        pctr = outputs[f"probs_{self.ctr.tower_name}"]
        if tower_loss_type(self.cvr) == L2_LOSS:
            outputs["y_ctcvr"] = pctr * outputs[f"y_{self.cvr.tower_name}"]
        else:
            outputs["probs_ctcvr"] = pctr * outputs[f"probs_{self.cvr.tower_name}"]
        return outputs

    def _ctcvr_label(self, labels):
        return (tf.cast(labels[self.ctr.label_name], tf.float32)
                * tf.cast(labels[self.cvr.label_name], tf.float32))

    def compute_losses(self, outputs, labels):
        ctcvr_label = self._ctcvr_label(labels)
        ctr_loss = tower_loss(self.ctr, outputs, labels, self._weights(self.ctr, labels))
        cvr_weights = self._weights(self.cvr, labels)
        if tower_loss_type(self.cvr) == L2_LOSS:
            diff = tf.square(outputs["y_ctcvr"] - ctcvr_label)
            cvr_loss = tf.reduce_mean(diff if cvr_weights is None else diff * cvr_weights)
        else:
            cvr_loss = binary_cross_entropy_on_probs(ctcvr_label, outputs["probs_ctcvr"],
                                                     cvr_weights)
        return {self.ctr.tower_name: self.ctr.weight * ctr_loss,
                self.cvr.tower_name: self.cvr.weight * cvr_loss}

    def eval_targets(self, outputs, labels):
        targets = super().eval_targets(outputs, labels)
        ctcvr = outputs.get("probs_ctcvr", outputs.get("y_ctcvr"))
        clicked = tf.cast(labels[self.ctr.label_name], tf.float32) > 0
        targets["ctcvr"] = (ctcvr, self._ctcvr_label(labels), None, self.cvr)
        targets[f"{self.cvr.tower_name}_masked"] = (prediction(self.cvr, outputs),
                                                    labels[self.cvr.label_name], clicked, self.cvr)
        return targets
