"""Rocket Launching (Zhou et al., AAAI 2018) as EasyRec defines it: a booster net and a light
net on the feature group "all" (through share_dnn when given), each with a copy of the one
tower, named "booster" and "light" (mtrec.models.checks.output_towers).

  shared  = share_dnn(all)                                (batch, d)
  booster, light, hints = BoosterLightNets(shared)        (mtrec.layers.rocket_launching)
  logits_booster = tower_booster(booster), logits_light = tower_light(light)
  losses: both towers', hint_loss (light logits towards the booster's), and with
          feature_based_distillation similarity_<k> per matched hidden layer pair
"""
from mtrec.layers.dnn import DNN, dnn_args
from mtrec.layers.rocket_launching import (BoosterLightNets, feature_hint_loss,
                                           logit_hint_loss)
from mtrec.models.base import MultiTaskModel

_HINTS = "__rocket_launching_hints__"


class RocketLaunching(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p, l2 = self.params, self.l2_regularization
        self.share = (DNN.from_config_proto(p.share_dnn, l2, name="share_dnn")
                      if p.share_dnn.hidden_units else None)
        self.similarity = None
        if p.feature_based_distillation:
            self.similarity = p.Similarity.Name(p.feature_distillation_function).lower()
        self.nets = BoosterLightNets(dnn_args(p.booster_dnn), dnn_args(p.light_dnn), l2,
                                     self.similarity, name="booster_light")

    def tower_inputs(self, groups, training):
        x = self.group_tensor(groups, ["all"])
        if self.share is not None:
            x = self.share(x, training=training)
        booster, light, groups[_HINTS] = self.nets(x, training=training)
        return [booster, light]

    def extra_outputs(self, groups):
        return {f"similarity_{k}": hint for k, hint in enumerate(groups[_HINTS])}

    def compute_losses(self, outputs, labels):
        losses = super().compute_losses(outputs, labels)
        booster, light = self.tower_configs
        losses["hint_loss"] = logit_hint_loss(outputs[f"logits_{light.tower_name}"],
                                              outputs[f"logits_{booster.tower_name}"],
                                              self._weights(booster, labels))
        for k in range(len(self.nets.pairs) if self.similarity else 0):
            losses[f"similarity_{k}"] = feature_hint_loss(outputs[f"similarity_{k}"],
                                                          self.similarity)
        return losses
