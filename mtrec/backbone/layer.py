"""The backbone as one Keras layer: `model_config.backbone` blocks run in order.

Blocks run in topological order (mtrec.backbone.plan.plan, the same plan config
validation checked). A block merges its inputs (feature-group tensors or other blocks'
outputs: tensors concatenated along input_concat_axis, lists joined, or a list of the
inputs with merge_inputs_into_list), then applies its input_layer, its registered
keras_layer, or its `layers` one after the other. The output is the merged concat_blocks
(then top_mlp) or the list of output_blocks.

An input_layer with output_seq_and_normal_feature reads the group's sequences from the
features themselves (call(..., features=...)), through the FeatureGroups layer that looks
them up: [history (batch, len, d), mask (batch, len), target (batch, d_t)] for the DIN and
BST layers (SequenceSource).

Only the catalogue's layers (mtrec.backbone.catalogue) can be named; every layer is named
after its block (`<block>_l<i>` inside `layers`), so checkpoint paths are stable.
"""
import keras
from keras import ops

from mtrec.backbone.catalogue import CATALOGUE, build_layer
from mtrec.backbone.plan import plan, run_step, sequence_group_widths
from mtrec.backbone.specs import parse_slice
from mtrec.errors import ConfigError
from mtrec.layers.input_layer import GroupInput
from mtrec.layers.mlp import MLP

_INPUT_FORMS = (("only_output_feature_list", "feature_list"),
                ("only_output_3d_tensor", "tensor_3d"),
                ("output_2d_tensor_and_feature_list", "2d_and_list"))


def merge(values: list, axis: int, into_list: bool):
    """A block's inputs -> its input (see mtrec.backbone.specs.merge_specs)."""
    if into_list:
        return list(values)
    if len(values) == 1:
        return values[0]
    if any(isinstance(v, (list, tuple)) for v in values):
        return [item for v in values for item in (v if isinstance(v, (list, tuple)) else [v])]
    return ops.concatenate(values, axis=axis)


class SequenceSource:
    """What an input_layer with output_seq_and_normal_feature reads: a feature group's
    sequences from the FeatureGroups layer (mtrec.features.embedding) that owns their
    tables. A plain object, so Keras does not track the FeatureGroups layer twice."""

    def __init__(self, feature_groups):
        self.feature_groups = feature_groups

    def __call__(self, features: dict, group: str) -> list:
        """[history (batch, len, d), mask (batch, len) bool, target (batch, d_t)]; no target
        when the group has none (mtrec.backbone.plan.sequence_group_widths says which
        features are which)."""
        fg = self.feature_groups
        names, _ = fg.groups[group]
        seq_names = [n for n in names if fg.feature_set[n].kind == "sequence"]
        if not seq_names:  # one sequence_features entry (SeqAttGroupConfig)
            inputs = fg.sequence_inputs(features, group)
            if len(inputs) != 1:
                raise ValueError(f"feature group {group!r} has {len(inputs)} sequence inputs; "
                                 "output_seq_and_normal_feature reads exactly one.")
            return [inputs[0]["hist"], inputs[0]["mask"], inputs[0]["key"]]
        padded = [fg.dense_sequence(n, features[n]) for n in seq_names]
        length = ops.max(ops.stack([ops.shape(seq)[1] for seq, _ in padded]))
        # Pad every sequence to the longest; the first one's positions are the real ones
        # (EasyRec uses the first sequence's length).
        hist = ops.concatenate([_pad_to(seq, length) for seq, _ in padded], axis=-1)
        mask = _pad_to(padded[0][1], length)                        # (batch, len)
        targets = [fg.embed(n, features[n]) for n in names if n not in seq_names]
        return [hist, mask] + ([ops.concatenate(targets, axis=-1)] if targets else [])


def _pad_to(x, length):
    """(batch, len, ...) -> (batch, length, ...) zero-padded at the end."""
    missing = length - ops.shape(x)[1]
    widths = [[0, 0], [0, missing]] + [[0, 0]] * (len(x.shape) - 2)
    return ops.pad(x, widths)


class TensorOps:
    """The backbone functions' operations (mtrec.backbone.functions) on tensors."""

    @staticmethod
    def index(value, k):
        return value[k]

    @staticmethod
    def slice(value, lower, upper):
        return list(value)[lower:upper]

    @staticmethod
    def add_n(values):
        return ops.sum(ops.stack(list(values), axis=0), axis=0)

    @staticmethod
    def stack(values, axis):
        return ops.stack(list(values), axis=axis)

    @staticmethod
    def concat(values, axis):
        return ops.concatenate(list(values), axis=axis)

    @staticmethod
    def reduce(kind, value, axis, keepdims):
        return {"sum": ops.sum, "mean": ops.mean, "max": ops.max}[kind](
            value, axis=axis, keepdims=keepdims)


def take(value, input_slice: str):
    """input_slice "[i]" or "[a:b]" of a list value (parsed, never evaluated)."""
    index = parse_slice(input_slice)
    return list(value)[index] if isinstance(index, slice) else value[index]


class Backbone(keras.layers.Layer):
    """call({group: [per-feature tensors]}, features=...) -> a (batch, d) tensor, or a list
    of tensors (output_blocks, or a last block with several outputs). features (the
    preprocessed inputs) is needed only by input_layer blocks with
    output_seq_and_normal_feature."""

    def __init__(self, config, feature_groups, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        self.plan = plan(config, feature_groups.group_widths(),
                         _sequence_widths(feature_groups))
        self.sequences = SequenceSource(feature_groups)
        self.sequence_blocks = set()  # input_layer blocks with output_seq_and_normal_feature
        if self.plan.errors:  # config validation reports these with their lines first
            raise ConfigError("backbone: " + " ".join(m for m, *_ in self.plan.errors))
        self.l2_regularization = l2_regularization
        # Sub-layers by name (block name, or <block>_l<i> in `layers`); None: identity.
        self.block_layers = {}
        self.layer_names = {}  # block -> [[layer name of each copy] of each step]
        for block in self.plan.blocks:
            if block.config.WhichOneof("layer") == "input_layer" and \
                    block.config.input_layer.output_seq_and_normal_feature:
                self.sequence_blocks.add(block.name)
                continue
            if block.config.WhichOneof("layer") == "input_layer":
                c = block.config.input_layer
                form = next((f for field, f in _INPUT_FORMS if getattr(c, field)), "2d")
                self.block_layers[block.name] = GroupInput(
                    form, c.do_batch_norm, c.do_layer_norm, c.dropout_rate,
                    c.feature_dropout_rate, name=block.name)
                continue
            base = self.plan.shared.get(block.name, block.name)  # package calls share layers
            names = []
            for step in block.steps:
                # Layer names (plan.step_names) start with the block name; shared: base's.
                step_layers = [base + n[len(block.name):] for n in step.names]
                names.append(step_layers)
                for name, spec in zip(step_layers, step.specs):
                    if name in self.block_layers:
                        continue
                    class_name = step.keras_layer.class_name
                    try:
                        layer = build_layer(class_name, step.params, l2_regularization, name,
                                            spec)
                    except ValueError as e:
                        raise ConfigError(f"backbone block {block.name!r} ({class_name}): "
                                          f"{e}") from None
                    if layer is not None:  # None: the identity
                        self.block_layers[name] = layer
            self.layer_names[block.name] = names
        self.top_mlp = (MLP.from_config_proto(config.top_mlp, l2_regularization, name="top_mlp")
                        if config.HasField("top_mlp") else None)
        # Sub-layers build on their first call, from the tensors they receive.
        self.built = True

    def call(self, groups, training=False, features=None):
        outputs = {}
        for block in self.plan.blocks:
            if block.name in self.sequence_blocks:
                if features is None:
                    raise ValueError(f"backbone block {block.name!r} reads sequences "
                                     "(output_seq_and_normal_feature): call the backbone with "
                                     "features=the preprocessed inputs.")
                outputs[block.name] = self.sequences(features, block.inputs[0].name)
                continue
            if block.name in self.block_layers and isinstance(self.block_layers[block.name],
                                                              GroupInput):
                tensors = groups[block.inputs[0].name]
                outputs[block.name] = self.block_layers[block.name](tensors, training=training)
                continue
            values = []
            for ref in block.inputs:
                value = (outputs[ref.name] if ref.kind == "block"
                         else ops.concatenate(list(groups[ref.name]), axis=-1))
                if ref.slice is not None:
                    value = take(value, ref.slice)
                if ref.fn is not None and not ref.ignore:
                    value = ref.fn.apply(value, TensorOps)
                if not ref.ignore:
                    values.append(value)
            x = merge(values, block.config.input_concat_axis, block.config.merge_inputs_into_list)
            if block.extra_fn is not None:
                x = block.extra_fn.apply(x, TensorOps)
            for step, names in zip(block.steps, self.layer_names.get(block.name, [])):
                x = run_step(step, x, self._caller(step, names, training), TensorOps)
            outputs[block.name] = list(x) if isinstance(x, tuple) else x
        results = [outputs[n] for n in self.plan.output_names]
        if self.plan.as_list:
            return results
        out = merge(results, -1, False)
        if self.top_mlp is not None:
            out = self.top_mlp(out, training=training)
        return out


    def _caller(self, step, names, training):
        """call(c, x) of plan.run_step: the step's c-th layer on x."""
        def call(c, x):
            layer = self.block_layers.get(names[c])
            if layer is None:
                return x
            out = layer(x, training=training)
            if CATALOGUE[step.keras_layer.class_name].single_output:
                out = out[0]
            return list(out) if isinstance(out, tuple) else out
        return call


def _sequence_widths(feature_groups) -> dict:
    """mtrec.backbone.plan.sequence_group_widths of a FeatureGroups layer's groups."""
    from mtrec.protos import feature_pb2
    configs = {n: f.config for n, f in feature_groups.feature_set.features.items()}
    attention = getattr(feature_groups, "attention_groups", {})
    groups = {name: feature_pb2.FeatureGroupConfig(
        group_name=name, feature_names=names, sequence_features=attention.get(name, []))
        for name, (names, _) in feature_groups.groups.items()}
    return sequence_group_widths(groups, configs)
