"""The multimodal encoders as a model reads them (CMBF, UNITER, and DBMTL's bottom_cmbf /
bottom_uniter): EasyRec's fixed feature groups

  "image"    raw vectors of one width, stacked          (batch, n_img, d_img)
  "general"  one embedding per feature, of one width    (batch, n_gen, d_gen)
  "text"     SequenceFeatures, unpooled                 [(batch, len_i, d_i), (batch, len_i)]
  "other"    concatenated, through other_feature_dnn    (batch, d_other)

go through mtrec.layers.cmbf.CMBF or mtrec.layers.uniter.Uniter (image / general / text)
and are concatenated with "other" -> (batch, d).
"""
import keras
from keras import ops

from mtrec.layers.cmbf import CMBF
from mtrec.layers.dnn import DNN
from mtrec.layers.uniter import Uniter
from mtrec.models.base import FEATURES

MODAL_GROUPS = ("image", "general", "text")
OTHER_GROUP = "other"


def cmbf_layer(config, l2_regularization, name):
    """A CMBFTower message -> mtrec.layers.cmbf.CMBF."""
    fields = [f.name for f in config.DESCRIPTOR.fields if f.name != "other_feature_dnn"]
    return CMBF(**{f: getattr(config, f) for f in fields},
                l2_regularization=l2_regularization, name=name)


def uniter_layer(config, l2_regularization, name):
    """A UniterTower message -> mtrec.layers.uniter.Uniter."""
    fields = [f.name for f in config.DESCRIPTOR.fields if f.name != "other_feature_dnn"]
    return Uniter(**{f: getattr(config, f) for f in fields},
                  l2_regularization=l2_regularization, name=name)


class _Holder:
    """A plain object: Keras tracks layers held in attributes, lists and dicts, not in
    this, so the model's FeatureGroups is not tracked a second time under the bottom."""

    def __init__(self, value):
        self.value = value


class MultimodalBottom(keras.layers.Layer):
    """call(groups (the model's feature-group outputs, with FEATURES), training) ->
    (batch, d). `kind` is "cmbf" or "uniter"; `config` its CMBFTower / UniterTower;
    `feature_groups` the model's FeatureGroups (for the text group's sequences; kept in a
    plain holder so Keras does not track its tables twice)."""

    def __init__(self, kind, config, feature_groups, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("cmbf", "uniter"):
            raise ValueError(f"MultimodalBottom kind must be 'cmbf' or 'uniter', got {kind!r}.")
        self._feature_groups = _Holder(feature_groups)
        present = feature_groups.groups
        self.modal_groups = [g for g in MODAL_GROUPS if g in present]
        self.has_other = OTHER_GROUP in present
        if not self.modal_groups and not self.has_other:
            raise ValueError(f"{kind} needs at least one of the feature groups "
                             f"{', '.join(MODAL_GROUPS + (OTHER_GROUP,))}.")
        self.encoder = None
        if self.modal_groups:
            make = cmbf_layer if kind == "cmbf" else uniter_layer
            self.encoder = make(config, l2_regularization, kind)
        self.other_dnn = None
        if self.has_other and config.HasField("other_feature_dnn"):
            self.other_dnn = DNN.from_config_proto(config.other_feature_dnn, l2_regularization,
                                                   name="other_dnn")
        self.built = True  # sub-layers build on their first call

    def encoder_inputs(self, groups):
        """{"image": (batch, n_img, d_img), "general": (batch, n_gen, d_gen),
        "text": [((batch, len_i, d_i), (batch, len_i) bool)]} of the groups present."""
        fg = self._feature_groups.value
        inputs = {}
        for name in ("image", "general"):
            if name in self.modal_groups:
                inputs[name] = ops.stack(groups[name], axis=1)
        if "text" in self.modal_groups:
            features = groups[FEATURES]
            inputs["text"] = [fg.dense_sequence(n, features[n]) for n in fg.groups["text"][0]]
        return inputs

    def call(self, groups, training=False):
        parts = []
        if self.encoder is not None:
            parts.append(self.encoder(self.encoder_inputs(groups), training=training))
        if self.has_other:
            other = ops.concatenate(groups[OTHER_GROUP], axis=-1)            # (b, d_other)
            if self.other_dnn is not None:
                other = self.other_dnn(other, training=training)
            parts.append(other)
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
