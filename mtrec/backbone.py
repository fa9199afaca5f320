"""The backbone: `model_config.backbone` blocks run as one Keras layer.

Blocks run in topological order (mtrec.backbone_spec.plan, the same plan config
validation checked). A block merges its inputs (feature-group tensors or other blocks'
outputs: tensors concatenated along input_concat_axis, lists joined, or a list of the
inputs with merge_inputs_into_list), then applies its input_layer, its registered
keras_layer, or its `layers` one after the other. The output is the merged concat_blocks
(then top_mlp) or the list of output_blocks.

Only registered layers can be named (`BUILDERS` below, the same names as
backbone_spec.LAYERS); every layer is named after its block (`<block>_l<i>` inside
`layers`), so checkpoint paths are stable.
"""
import keras
from keras import ops

from mtrec import backbone_spec
from mtrec.errors import ConfigError
from mtrec.layers.aitm import AITModule
from mtrec.layers.cgc import CGC, PLE
from mtrec.layers.cross import Cross
from mtrec.layers.dnn import DebiasedBatchNormalization
from mtrec.layers.dot_interaction import DotInteraction
from mtrec.layers.fm import FM
from mtrec.layers.gate_nu import GateNU
from mtrec.layers.input_layer import GroupInput
from mtrec.layers.masknet import MaskBlock, MaskNet
from mtrec.layers.mlp import MLP
from mtrec.layers.mmoe import MMoE
from mtrec.layers.pepnet import PPNet
from mtrec.layers.senet import SENet


# ---------------------------------------------------------------------------
# Registered layers: (params, l2, name, input spec) -> layer, or None for the identity.
# params is the class's typed message (backbone_spec.layer_params), or a kwargs dict for
# a built-in Keras layer.

def _dnn_args(dnn) -> dict:
    """An mtrec DNN message -> the DNN argument dict CGC/PLE take."""
    return {"hidden_units": list(dnn.hidden_units), "activation": dnn.activation,
            "use_bn": dnn.use_bn, "dropout_ratio": list(dnn.dropout_ratio)}


def _mmoe(p, l2, name, x):
    if not p.HasField("expert_mlp"):
        return MMoE(p.num_task, p.num_expert, [], l2_regularization=l2,
                    experts_from_inputs=True, name=name)
    kwargs = MLP.dnn_kwargs(p.expert_mlp)
    units, activation = kwargs.pop("hidden_units"), kwargs.pop("activation")
    use_bn, dropout = kwargs.pop("use_bn"), kwargs.pop("dropout_ratio")
    return MMoE(p.num_task, p.num_expert, units, activation, use_bn, dropout, l2,
                expert_kwargs=kwargs, name=name)


def _aitm(p, l2, name, x):
    if not isinstance(x, list):  # a single input: nothing to transfer, the input itself
        return None
    transfer = MLP.dnn_kwargs(p.transfer_mlp) if p.HasField("transfer_mlp") else None
    return AITModule(len(x) - 1, p.project_dim, query="own", stop_gradient=p.stop_gradient,
                     l2_regularization=l2, use_transfer=transfer is not None,
                     transfer_kwargs=transfer, name=name)


def _mask_block_args(p) -> dict:
    return {"output_size": p.output_size, "aggregation_size": p.aggregation_size,
            "reduction_factor": p.reduction_factor if p.HasField("reduction_factor") else 0.0,
            "input_layer_norm": p.input_layer_norm, "projection_dim": p.projection_dim}


def _builtin(cls):
    def build(kwargs, l2, name, x):
        return cls(**kwargs, name=name)
    return build


BUILDERS = {
    "MLP": lambda p, l2, name, x: MLP.from_config_proto(p, l2, name=name),
    "SENet": lambda p, l2, name, x: SENet(p.reduction_ratio, p.num_squeeze_group,
                                          p.use_skip_connection, p.use_output_layer_norm, l2,
                                          name=name),
    "FM": lambda p, l2, name, x: FM(p.use_variant, name=name),
    "DotInteraction": lambda p, l2, name, x: DotInteraction(p.self_interaction, p.skip_gather,
                                                            name=name),
    "Cross": lambda p, l2, name, x: Cross(p.projection_dim, p.diag_scale, p.use_bias,
                                          p.preactivation or None, l2, name=name),
    "MMoE": _mmoe,
    "CGC": lambda p, l2, name, x: CGC(
        p.num_task, p.expert_num_per_task, p.share_num, _dnn_args(p.task_expert_net),
        _dnn_args(p.share_expert_net) if p.HasField("share_expert_net") else None,
        p.shared_gate, l2, name=name),
    "PLE": lambda p, l2, name, x: PLE(
        p.num_task, [{"expert_num_per_task": n.expert_num_per_task, "share_num": n.share_num,
                      "task_expert_net": _dnn_args(n.task_expert_net),
                      "share_expert_net": _dnn_args(n.share_expert_net)}
                     for n in p.extraction_networks], l2, name=name),
    # One task of mtrec's PPNet; its one-element output list is unwrapped (_SINGLE_OUTPUT).
    "PPNet": lambda p, l2, name, x: PPNet(**backbone_spec.ppnet_options(p),
                                          l2_regularization=l2, name=name),
    "GateNU": lambda p, l2, name, x: GateNU(p.hidden_dim, p.output_dim or x.width, p.gamma, l2,
                                            name=name),
    "AITMTower": _aitm,
    "MaskBlock": lambda p, l2, name, x: MaskBlock(**_mask_block_args(p), l2_regularization=l2,
                                                  name=name),
    "MaskNet": lambda p, l2, name, x: MaskNet(
        [_mask_block_args(b) for b in p.mask_blocks], p.use_parallel,
        MLP.proto_kwargs(p.mlp) if p.HasField("mlp") else None, p.input_layer_norm, l2,
        name=name),
    "Dense": _builtin(keras.layers.Dense),
    "Dropout": _builtin(keras.layers.Dropout),
    "Activation": _builtin(keras.layers.Activation),
    "LayerNormalization": _builtin(keras.layers.LayerNormalization),
    "BatchNormalization": _builtin(DebiasedBatchNormalization),
    "Add": _builtin(keras.layers.Add),
    "Multiply": _builtin(keras.layers.Multiply),
    "Concatenate": _builtin(keras.layers.Concatenate),
}
assert set(BUILDERS) == set(backbone_spec.LAYERS), "backbone_spec.LAYERS and BUILDERS differ"

# Layers whose output is a one-element list standing for a tensor.
_SINGLE_OUTPUT = {"PPNet"}

_INPUT_FORMS = (("only_output_feature_list", "feature_list"),
                ("only_output_3d_tensor", "tensor_3d"),
                ("output_2d_tensor_and_feature_list", "2d_and_list"))


def group_widths(feature_groups) -> dict:
    """{group: [width of each feature]} as FeatureGroups outputs them."""
    return {name: [feature_groups.wide_output_dim if wide
                   else feature_groups.feature_set[f].embedding_dim for f in names]
            for name, (names, wide) in feature_groups.groups.items()}


def merge(values: list, axis: int, into_list: bool):
    """A block's inputs -> its input (see backbone_spec.merge_specs)."""
    if into_list:
        return list(values)
    if len(values) == 1:
        return values[0]
    if any(isinstance(v, (list, tuple)) for v in values):
        return [item for v in values for item in (v if isinstance(v, (list, tuple)) else [v])]
    return ops.concatenate(values, axis=axis)


def take(value, input_slice: str):
    """input_slice "[i]" or "[a:b]" of a list value (parsed, never evaluated)."""
    index = backbone_spec.parse_slice(input_slice)
    return list(value)[index] if isinstance(index, slice) else value[index]


class Backbone(keras.layers.Layer):
    """call({group: [per-feature tensors]}) -> a (batch, d) tensor, or a list of tensors
    (output_blocks, or a last block with several outputs)."""

    def __init__(self, config, feature_groups, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        self.plan = backbone_spec.plan(config, group_widths(feature_groups))
        if self.plan.errors:  # config validation reports these with their lines first
            raise ConfigError("backbone: " + " ".join(m for m, *_ in self.plan.errors))
        self.l2_regularization = l2_regularization
        # Sub-layers by name (block name, or <block>_l<i> in `layers`); None: identity.
        self.block_layers = {}
        self.layer_names = {}  # block -> [(layer name, class name)]
        for block in self.plan.blocks:
            if block.config.WhichOneof("layer") == "input_layer":
                c = block.config.input_layer
                form = next((f for field, f in _INPUT_FORMS if getattr(c, field)), "2d")
                self.block_layers[block.name] = GroupInput(
                    form, c.do_batch_norm, c.do_layer_norm, c.dropout_rate,
                    c.feature_dropout_rate, name=block.name)
                continue
            names = []
            for i, (keras_layer, params) in enumerate(block.layers):
                name = f"{block.name}_l{i}" if block.config.layers else block.name
                try:
                    layer = BUILDERS[keras_layer.class_name](params, l2_regularization, name,
                                                             block.layer_specs[i])
                except ValueError as e:
                    raise ConfigError(f"backbone block {block.name!r} "
                                      f"({keras_layer.class_name}): {e}") from None
                if layer is not None:
                    self.block_layers[name] = layer
                names.append((name, keras_layer.class_name))
            self.layer_names[block.name] = names
        self.top_mlp = (MLP.from_config_proto(config.top_mlp, l2_regularization, name="top_mlp")
                        if config.HasField("top_mlp") else None)
        # Sub-layers build on their first call, from the tensors they receive.
        self.built = True

    def call(self, groups, training=False):
        outputs = {}
        for block in self.plan.blocks:
            if block.name in self.block_layers and isinstance(self.block_layers[block.name],
                                                              GroupInput):
                features = groups[block.inputs[0].name]
                outputs[block.name] = self.block_layers[block.name](features, training=training)
                continue
            values = []
            for ref in block.inputs:
                value = (outputs[ref.name] if ref.kind == "block"
                         else ops.concatenate(list(groups[ref.name]), axis=-1))
                if ref.slice is not None:
                    value = take(value, ref.slice)
                if not ref.ignore:
                    values.append(value)
            x = merge(values, block.config.input_concat_axis, block.config.merge_inputs_into_list)
            for name, class_name in self.layer_names.get(block.name, []):
                layer = self.block_layers.get(name)
                if layer is None:
                    continue
                x = layer(x, training=training)
                if class_name in _SINGLE_OUTPUT:
                    x = x[0]
            outputs[block.name] = list(x) if isinstance(x, tuple) else x
        results = [outputs[n] for n in self.plan.output_names]
        if self.plan.as_list:
            return results
        out = merge(results, -1, False)
        if self.top_mlp is not None:
            out = self.top_mlp(out, training=training)
        return out
