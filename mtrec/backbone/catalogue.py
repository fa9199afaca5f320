"""The backbone's layer catalogue: the one table of the layers a config can name
(`keras_layer { class_name ... }`), without TensorFlow.

Each row gives the KerasLayer params oneof member it reads, its shape rule
(mtrec.backbone.shapes), its builder, a one-line summary and, for a built-in Keras layer,
the st_params keyword arguments it accepts. Builders are "module:attribute" strings,
imported only when a layer is built, so config validation (`mtrec check`) never imports
TensorFlow. Adding a layer: its file in mtrec/layers/, its params message in
protos/mtrec/protos/ (a KerasLayer oneof member), a shape rule, a builder, and one row here
(docs/contributing.md).
"""
import dataclasses
import importlib
from typing import Callable

from google.protobuf import json_format

from mtrec.backbone import contrastive, shapes


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered keras_layer class."""
    # KerasLayer oneof member of its typed params; None for a built-in Keras layer, which
    # takes st_params as keyword arguments (only those in `kwargs`).
    params: str | None
    # (params message or kwargs dict, input spec) -> output spec; ValueError if unfit.
    infer: Callable
    # "module:attribute": a function (params, l2_regularization, name, input spec) -> layer
    # (None: the block passes its input through); for a built-in Keras layer, the layer
    # class, called with the st_params keyword arguments and the name.
    build: str
    # One line for docs and error messages.
    summary: str
    kwargs: tuple = ()
    # The layer returns a one-element list standing for a tensor (the backbone unwraps it).
    single_output: bool = False

    def builder(self) -> Callable:
        """The object `build` names (imports its module)."""
        module, _, attribute = self.build.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _builder(name: str) -> str:
    return f"mtrec.backbone.builders:{name}"


CATALOGUE = {
    "MLP": Entry("mlp", shapes.infer_mlp, _builder("mlp"), "stack of Dense layers (EasyRec MLP)"),
    "SENet": Entry("senet", shapes.infer_senet, _builder("senet"),
                   "FiBiNet++ squeeze-excitation on field list"),
    "FM": Entry("fm", shapes.infer_fm, _builder("fm"), "second-order factorization machine term"),
    "DotInteraction": Entry("dot_interaction", shapes.infer_dot, _builder("dot_interaction"),
                            "DLRM pairwise dot products"),
    "Cross": Entry("cross", shapes.infer_cross, _builder("cross"), "DCN-v2 cross layer"),
    "MMoE": Entry("mmoe", shapes.infer_mmoe, _builder("mmoe"),
                  "multi-gate mixture of experts, one output per task"),
    "CGC": Entry("cgc", shapes.infer_cgc, _builder("cgc"),
                 "one PLE extraction level (task + shared experts)"),
    "PLE": Entry("ple", shapes.infer_ple, _builder("ple"),
                 "progressive layered extraction, one output per task"),
    # One task of mtrec's PPNet: its one-element output list stands for a tensor.
    "PPNet": Entry("ppnet", shapes.infer_ppnet, _builder("ppnet"),
                   "gated MLP personalised by a gate input", single_output=True),
    "GateNU": Entry("gate_nu", shapes.infer_gate_nu, _builder("gate_nu"),
                    "gate gamma * sigmoid(MLP(x))"),
    "AITMTower": Entry("aitm", shapes.infer_aitm, _builder("aitm"),
                       "AITM attention over [own, parents...]"),
    "MaskBlock": Entry("mask_block", shapes.infer_mask_block, _builder("mask_block"),
                       "MaskNet instance-guided mask"),
    "MaskNet": Entry("masknet", shapes.infer_masknet, _builder("masknet"),
                     "MaskBlocks in parallel or serial + MLP"),
    # Sequence layers: they read an input_layer with output_seq_and_normal_feature.
    "DIN": Entry("din", shapes.infer_din, _builder("din"),
                 "DIN target attention over a sequence input_layer"),
    "BST": Entry("bst", shapes.infer_bst, _builder("bst"),
                 "Behavior Sequence Transformer over a sequence input_layer"),
    # Contrastive learning (CL4SRec): mtrec.backbone.contrastive has their rules.
    "SeqAugment": Entry("seq_aug", contrastive.infer_seq_aug,
                        "mtrec.backbone.contrastive:seq_aug",
                        "CL4SRec crop / mask / reorder of a sequence input_layer (training)"),
    # EasyRec's custom-op form of SeqAugment: the same layer here.
    "SeqAugmentOps": Entry("seq_aug", contrastive.infer_seq_aug,
                           "mtrec.backbone.contrastive:seq_aug",
                           "SeqAugment (EasyRec's custom-op name)"),
    "AuxiliaryLoss": Entry("auxiliary_loss", contrastive.infer_auxiliary_loss,
                           "mtrec.backbone.contrastive:auxiliary_loss",
                           "contrastive loss of two encodings added to training"),
    # Component layers (protos/mtrec/protos/components.proto).
    "FiBiNet": Entry("fibinet", shapes.infer_fibinet, _builder("fibinet"),
                     "FiBiNet: SENet and bilinear interactions of a field list (+ MLP)"),
    "Bilinear": Entry("bilinear", shapes.infer_bilinear, _builder("bilinear"),
                      "FiBiNet bilinear interaction of a field list"),
    "CIN": Entry("cin", shapes.infer_cin, _builder("cin"),
                 "xDeepFM compressed interaction network on (batch, fields, d)"),
    "AutoDisEmbedding": Entry("auto_dis_embedding", shapes.infer_autodis,
                              _builder("auto_dis_embedding"),
                              "AutoDis soft-bucket embeddings of numerical values"),
    "PeriodicEmbedding": Entry("periodic_embedding", shapes.infer_periodic,
                               _builder("periodic_embedding"),
                               "periodic (sin/cos) embeddings of numerical values"),
    "TextCNN": Entry("text_cnn", shapes.infer_text_cnn, _builder("text_cnn"),
                     "1D convolutions + max pooling over a sequence input_layer"),
    "Highway": Entry("highway", shapes.infer_highway, _builder("highway"),
                     "highway network (gated residual Dense layers)"),
    "Gate": Entry("gate", shapes.infer_gate, _builder("gate"),
                  "CDN weighted sum of experts by a weights input"),
    # Built-in Keras layers (st_params are their keyword arguments).
    "Dense": Entry(None, shapes.infer_dense, "keras.layers:Dense", "keras Dense",
                   ("units", "activation", "use_bias", "kernel_initializer",
                    "bias_initializer")),
    "Dropout": Entry(None, shapes.infer_same("Dropout"), "keras.layers:Dropout",
                     "keras Dropout", ("rate",)),
    "Activation": Entry(None, shapes.infer_same("Activation"), "keras.layers:Activation",
                        "keras Activation", ("activation",)),
    "LayerNormalization": Entry(None, shapes.infer_same("LayerNormalization"),
                                "keras.layers:LayerNormalization", "keras LayerNormalization",
                                ("axis", "epsilon", "center", "scale")),
    "BatchNormalization": Entry(None, shapes.infer_same("BatchNormalization"),
                                "mtrec.layers.dnn:DebiasedBatchNormalization",
                                "batch normalisation (debiased moving statistics)",
                                ("axis", "momentum", "epsilon", "center", "scale")),
    "Add": Entry(None, shapes.infer_elementwise("Add"), "keras.layers:Add",
                 "keras Add (element-wise sum)"),
    "Multiply": Entry(None, shapes.infer_elementwise("Multiply"), "keras.layers:Multiply",
                      "keras Multiply"),
    "Concatenate": Entry(None, shapes.infer_concatenate, "keras.layers:Concatenate",
                         "keras Concatenate", ("axis",)),
}


def registered_names() -> str:
    return ", ".join(sorted(CATALOGUE))


def layer_params(keras_layer):
    """KerasLayer -> its params: the class's typed message (from the typed field or
    st_params), or a kwargs dict for a built-in Keras layer. ValueError if unfit."""
    name = keras_layer.class_name
    entry = CATALOGUE.get(name)
    if entry is None:
        raise ValueError(f"unknown class_name {name!r}; a config can only name registered "
                         f"layers: {registered_names()}.")
    which = keras_layer.WhichOneof("params")
    if entry.params is None:
        if which not in (None, "st_params"):
            raise ValueError(f"{name} is a built-in Keras layer: give its arguments as "
                             f"st_params, not `{which}`.")
        kwargs = {k: _plain(v) for k, v in json_format.MessageToDict(
            keras_layer.st_params).items()} if which else {}
        unknown = sorted(set(kwargs) - set(entry.kwargs))
        if unknown:
            allowed = ", ".join(entry.kwargs) or "none"
            raise ValueError(f"{name}: unsupported st_params {unknown}; allowed: {allowed}.")
        return kwargs
    message = type(getattr(keras_layer, entry.params))()
    if which == entry.params:
        message.CopyFrom(getattr(keras_layer, entry.params))
    elif which == "st_params":
        try:
            json_format.ParseDict(json_format.MessageToDict(keras_layer.st_params), message)
        except json_format.ParseError as e:
            raise ValueError(f"{name} st_params do not fit its `{entry.params}` message: "
                             f"{e}") from None
    elif which is not None:
        raise ValueError(f"{name} takes `{entry.params} {{ ... }}` (or st_params), not "
                         f"`{which}`.")
    return message


def _plain(value):
    """Struct numbers are floats; whole numbers become ints (Dense units: 64)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def build_layer(class_name: str, params, l2_regularization: float, name: str, input_spec):
    """The Keras layer of one registered class (None: the identity). Built-in Keras layers
    get no l2_regularization. ValueError for params the layer rejects."""
    entry = CATALOGUE[class_name]
    if entry.params is None:
        return entry.builder()(**params, name=name)
    return entry.builder()(params, l2_regularization, name, input_spec)
