"""DeepFM (Guo et al., IJCAI 2017) as EasyRec defines it: a single-output rank model over
the feature groups "wide" (WIDE), "deep" and optionally "fm".

  wide = the wide group's per-id weights summed        (batch, 1); per class (batch,
                                                       num_class) when wide_output_dim is
                                                       num_class > 1
  fm   = FM per dimension over the fm group's          (batch, dim)   (group "deep" when
         embeddings (its raw values left out)                          there is no "fm")
  deep = dnn(deep group)                               (batch, d)
  with final_dnn:  logits = tower(final_dnn([wide, fm, deep]))
  without:         logits = tower(deep) + wide + (sum of fm, or Dense(fm) when num_class > 1)
"""
import keras
import tensorflow as tf

from mtrec.layers.dnn import DNN
from mtrec.layers.fm import FM
from mtrec.models.base import MultiTaskModel


class DeepFM(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p, l2 = self.params, self.l2_regularization
        self.num_class = self.tower_configs[0].num_class
        self.fm_group = "fm" if "fm" in self.feature_groups.groups else "deep"
        self.fm_layer = FM(use_variant=True, name="fm_feature")
        self.deep = DNN.from_config_proto(p.dnn, l2, name="deep_feature")
        self.final_dnn = (DNN.from_config_proto(p.final_dnn, l2, name="final_dnn")
                          if p.final_dnn.hidden_units else None)
        self.fm_logits = None
        if self.final_dnn is None and self.num_class > 1:
            regularizer = keras.regularizers.L2(l2) if l2 else None
            self.fm_logits = keras.layers.Dense(self.num_class, kernel_regularizer=regularizer,
                                                name="fm_logits")

    def wide_width(self):
        return self.params.wide_output_dim

    def _wide(self, groups):
        """(batch, num_class) per-class sums when wide_output_dim is num_class > 1, else the
        total (batch, 1), as EasyRec."""
        wide = tf.add_n(groups["wide"])                       # (batch, wide_output_dim)
        if self.num_class > 1 and wide.shape[-1] == self.num_class:
            return wide
        return tf.reduce_sum(wide, axis=-1, keepdims=True)

    def _fm(self, groups):
        """(batch, dim): the FM's per-dimension terms over the fm group's embeddings."""
        fg = self.feature_groups
        names = fg.groups[self.fm_group][0]
        return self.fm_layer([t for t, f in zip(groups[self.fm_group], names)
                              if fg.feature_set[f].kind != "values"])

    def tower_inputs(self, groups, training):
        deep = self.deep(self.group_tensor(groups, ["deep"]), training=training)  # (batch, d)
        if self.final_dnn is None:
            return [deep]
        x = tf.concat([self._wide(groups), self._fm(groups), deep], axis=-1)
        return [self.final_dnn(x, training=training)]

    def extra_logits(self, groups):
        if self.final_dnn is not None:
            return None
        fm = self._fm(groups)
        fm = (self.fm_logits(fm) if self.fm_logits is not None
              else tf.reduce_sum(fm, axis=-1, keepdims=True))  # (batch, num_class)
        return [self._wide(groups) + fm]
