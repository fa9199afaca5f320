"""FM (Rendle 2010) as EasyRec defines it: a single-output rank model over the feature
groups "wide" (WIDE, num_class weights per id) and "deep" (the FM's embeddings).

  logits = FMLogits([wide summed per class, FM per dimension of the deep embeddings])
"""
import tensorflow as tf

from mtrec.layers.fm import FM as FMLayer
from mtrec.layers.fm_logits import FMLogits
from mtrec.models.base import MultiTaskModel


class FM(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        self.num_class = self.tower_configs[0].num_class
        self.fm_layer = FMLayer(use_variant=True, name="fm_feature")
        self.logits = FMLogits(self.num_class, self.l2_regularization, name="fm_output")

    def wide_width(self):
        return self.tower_configs[0].num_class

    def tower_logits(self, groups, training):
        fg = self.feature_groups
        embeddings = [t for t, f in zip(groups["deep"], fg.groups["deep"][0])
                      if fg.feature_set[f].kind != "values"]
        wide = tf.add_n(groups["wide"])                       # (batch, num_class)
        return [self.logits([wide, self.fm_layer(embeddings)])]
