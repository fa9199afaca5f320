"""What a `backbone` config means, without TensorFlow.

The registered layer names, how a block's params are read, the block graph (topological
order, cycles), input slices, and the structure and widths of every block's output
("specs"). Config validation runs `plan()` to report mistakes with their line before any
graph is built; mtrec.backbone runs the same `plan()` to build exactly what was validated.

A spec describes a value flowing between blocks:
  Tensor((d,))       a (batch, d) tensor; Tensor((n, d)) a (batch, n, d) tensor;
                     a None in the shape means unknown;
  [spec, ...]        a Python list (a layer with several outputs, or a list input);
  None               unknown (an earlier error): nothing downstream is checked.
"""
import dataclasses
import re
from typing import Any, Callable

from google.protobuf import json_format

# ---------------------------------------------------------------------------
# Specs


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A tensor (batch, *shape)."""
    shape: tuple

    @property
    def width(self):
        return self.shape[-1] if self.shape else None

    def __str__(self):
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"a (batch, {dims}) tensor"


def describe(spec) -> str:
    """Human text for a spec in error messages."""
    if spec is None:
        return "an unknown value"
    if isinstance(spec, Tensor):
        return str(spec)
    inner = ", ".join(_short(s) for s in spec[:6]) + (", ..." if len(spec) > 6 else "")
    return f"a list of {len(spec)} [{inner}]"


def _short(spec) -> str:
    if isinstance(spec, Tensor):
        return "(batch, " + ", ".join("?" if d is None else str(d) for d in spec.shape) + ")"
    return "list" if spec is not None else "?"


def _is_list(spec) -> bool:
    return isinstance(spec, list)


def _tensor(spec, what: str, rank: int | None = 2) -> Tensor:
    """spec must be a tensor (of `rank` including the batch axis); ValueError otherwise."""
    if not isinstance(spec, Tensor):
        raise ValueError(f"{what} takes one tensor, got {describe(spec)}; merge the inputs "
                         "into one tensor (no merge_inputs_into_list, an input_layer "
                         "without only_output_feature_list) or pick one with input_slice.")
    if rank is not None and len(spec.shape) + 1 != rank:
        raise ValueError(f"{what} takes a {rank}D (batch, d) tensor, got {describe(spec)}.")
    return spec


def _tensor_list(spec, what: str, min_len: int = 1) -> list[Tensor]:
    """spec must be a list of 2D tensors."""
    if not _is_list(spec) or any(not isinstance(s, Tensor) or len(s.shape) != 1 for s in spec):
        raise ValueError(f"{what} takes a list of (batch, d) tensors, got {describe(spec)}; "
                         "e.g. an input_layer with only_output_feature_list: true, or several "
                         "inputs with merge_inputs_into_list: true.")
    if len(spec) < min_len:
        raise ValueError(f"{what} takes at least {min_len} tensors, got {len(spec)}.")
    return spec


def _fields(spec, what: str) -> tuple[int, Any]:
    """A list of equal-width 2D tensors or a (batch, n, d) tensor -> (n, d)."""
    if isinstance(spec, Tensor) and len(spec.shape) == 2:
        return spec.shape
    items = _tensor_list(spec, what)
    widths = {s.width for s in items if s.width is not None}
    if len(widths) > 1:
        raise ValueError(f"{what} needs embeddings of one width, got widths {sorted(widths)}.")
    return len(items), (widths.pop() if widths else None)


def _sum(widths):
    return None if any(w is None for w in widths) else sum(widths)


# ---------------------------------------------------------------------------
# Output specs of the registered layers: (params, input spec) -> output spec.
# Each raises ValueError with what the layer needs when the input does not fit.

def _mlp_units(mlp, what: str) -> list[int]:
    units = list(mlp.hidden_units)
    if not units:
        raise ValueError(f"{what} needs hidden_units.")
    if any(u == 0 for u in units):
        raise ValueError(f"{what}: hidden_units must be positive, got {units}.")
    if len(mlp.dropout_ratio) > len(units):
        raise ValueError(f"{what}: dropout_ratio has {len(mlp.dropout_ratio)} values for "
                         f"{len(units)} layers.")
    if any(not 0 <= r < 1 for r in mlp.dropout_ratio):
        raise ValueError(f"{what}: dropout_ratio values must be in [0, 1).")
    if mlp.add_to_outputs:
        raise ValueError(f"{what}: add_to_outputs is not supported by mtrec; remove it.")
    return units


def _infer_mlp(p, x):
    units = _mlp_units(p, "MLP")
    x = _tensor(x, "MLP", rank=None)
    return Tensor(x.shape[:-1] + (units[-1],))


def _infer_senet(p, x):
    items = _tensor_list(x, "SENet")
    g = p.num_squeeze_group
    if g == 0 or p.reduction_ratio == 0:
        raise ValueError("SENet: reduction_ratio and num_squeeze_group must be at least 1.")
    for i, s in enumerate(items):
        if s.width is not None and s.width % g:
            raise ValueError(f"SENet: embedding {i} has width {s.width}, not divisible by "
                             f"num_squeeze_group {g}.")
    return Tensor((_sum([s.width for s in items]),))


def _infer_fm(p, x):
    _, d = _fields(x, "FM")
    return Tensor((d,) if p.use_variant else (1,))


def _infer_dot(p, x):
    n, _ = _fields(x, "DotInteraction")
    if p.skip_gather:
        return Tensor((n * n,))
    return Tensor((n * (n + 1) // 2 if p.self_interaction else n * (n - 1) // 2,))


def _infer_cross(p, x):
    if _is_list(x):
        items = _tensor_list(x, "Cross")
        if len(items) != 2:
            raise ValueError(f"Cross takes x or [x0, x], got a list of {len(items)}.")
        widths = {s.width for s in items if s.width is not None}
        if len(widths) > 1:
            raise ValueError(f"Cross: x0 and x must have the same width, got {sorted(widths)}.")
        return items[1]
    if p.diag_scale < 0:
        raise ValueError("Cross: diag_scale must not be negative.")
    return _tensor(x, "Cross")


def _infer_mmoe(p, x):
    if p.num_task == 0 or p.num_expert == 0:
        raise ValueError("MMoE needs num_task >= 1 and num_expert >= 1.")
    if p.HasField("expert_mlp"):
        units = _mlp_units(p.expert_mlp, "MMoE expert_mlp")
        _tensor(x, "MMoE (with expert_mlp)")
        return [Tensor((units[-1],)) for _ in range(p.num_task)]
    items = _tensor_list(x, "MMoE without expert_mlp")
    if len(items) != p.num_expert + 1:
        raise ValueError(f"MMoE without expert_mlp takes [expert_1 .. expert_{p.num_expert}, "
                         f"gate input]: a list of {p.num_expert + 1}, got {len(items)}.")
    widths = {s.width for s in items[:-1] if s.width is not None}
    if len(widths) > 1:
        raise ValueError(f"MMoE: the experts must have one width, got {sorted(widths)}.")
    width = widths.pop() if widths else None
    return [Tensor((width,)) for _ in range(p.num_task)]


def _infer_ppnet(p, x):
    units = _mlp_units(p.mlp, "PPNet mlp")
    items = _tensor_list(x, "PPNet")
    if len(items) != 2:
        raise ValueError(f"PPNet takes [x, gate_input], got a list of {len(items)}.")
    ppnet_options(p)
    if p.mode == "eager" and p.gate_params.output_dim and items[0].width not in (
            None, p.gate_params.output_dim):
        raise ValueError(f"PPNet (eager): gate_params.output_dim {p.gate_params.output_dim} "
                         f"must equal the width of x, {items[0].width} (or be unset).")
    return Tensor((units[-1],))


def ppnet_options(p) -> dict:
    """PPNet params -> the keyword arguments mtrec.layers.pepnet.PPNet takes for one task."""
    mlp, gate = p.mlp, p.gate_params
    if p.mode not in ("eager", "lazy"):
        raise ValueError(f"PPNet mode must be \"eager\" or \"lazy\", got {p.mode!r}.")
    if mlp.use_final_bn != mlp.use_bn or mlp.final_activation != mlp.activation:
        raise ValueError("PPNet mlp: mtrec's PPNet uses one setting for every layer, so "
                         "use_final_bn must equal use_bn and final_activation must equal "
                         "activation.")
    if mlp.use_bn_after_activation:
        raise ValueError("PPNet mlp: use_bn_after_activation is not supported.")
    if mlp.use_final_bias != mlp.use_bias:
        raise ValueError("PPNet mlp: use_final_bias must equal use_bias.")
    dropout = set(mlp.dropout_ratio)
    if len(dropout) > 1 or (dropout and len(mlp.dropout_ratio) != len(mlp.hidden_units)):
        raise ValueError("PPNet mlp: give one dropout_ratio value per layer, all equal.")
    if gate.activation != "relu" or gate.use_bn or gate.dropout_rate:
        raise ValueError("PPNet gate_params: mtrec's gates (GateNU) use a ReLU hidden layer "
                         "without batch norm or dropout; remove activation/use_bn/dropout_rate.")
    return {"tower_units": [list(mlp.hidden_units)], "activation": mlp.activation,
            "use_bn": mlp.use_bn, "dropout_ratio": dropout.pop() if dropout else 0.0,
            "gate_hidden_dim": gate.hidden_dim, "gamma": 2.0, "mode": p.mode,
            "full_gate_input": p.full_gate_input, "use_bias": mlp.use_bias,
            "kernel_initializer": mlp.initializer}


def _infer_gate_nu(p, x):
    x = _tensor(x, "GateNU")
    if p.hidden_dim == 0 or p.gamma <= 0:
        raise ValueError("GateNU needs hidden_dim >= 1 and gamma > 0.")
    return Tensor((p.output_dim or x.width,))


def _infer_aitm(p, x):
    if isinstance(x, Tensor):  # nothing to transfer from: the tower's own input
        return _tensor(x, "AITMTower")
    items = _tensor_list(x, "AITMTower", min_len=2)
    if p.HasField("transfer_mlp"):
        _mlp_units(p.transfer_mlp, "AITMTower transfer_mlp")
    return Tensor((p.project_dim or items[0].width,))


def _infer_cgc(p, x):
    if p.num_task == 0:
        raise ValueError("CGC needs num_task >= 1.")
    if p.expert_num_per_task == 0 and p.share_num == 0:
        raise ValueError("CGC needs expert_num_per_task or share_num >= 1.")
    if _is_list(x):
        items = _tensor_list(x, "CGC")
        if len(items) != p.num_task + 1:
            raise ValueError(f"CGC takes one tensor or [task_1 .. task_{p.num_task}, shared]: "
                             f"a list of {p.num_task + 1}, got {len(items)}.")
    else:
        _tensor(x, "CGC")
    nets = [n for n, k in ((p.task_expert_net, p.expert_num_per_task),
                           (p.share_expert_net if p.HasField("share_expert_net")
                            else p.task_expert_net, p.share_num)) if k]
    if any(not n.hidden_units for n in nets):
        raise ValueError("CGC needs task_expert_net { hidden_units } (and share_expert_net's) "
                         "for its experts.")
    if len({n.hidden_units[-1] for n in nets}) > 1:
        raise ValueError("CGC: task and shared experts must end with the same width.")
    dim = nets[0].hidden_units[-1]
    return [Tensor((dim,)) for _ in range(p.num_task + (1 if p.shared_gate else 0))]


def _infer_ple(p, x):
    _tensor(x, "PLE")
    if p.num_task == 0 or not p.extraction_networks:
        raise ValueError("PLE needs num_task >= 1 and at least one extraction_networks level.")
    dims = []
    for k, net in enumerate(p.extraction_networks):
        nets = [n for n, c in ((net.task_expert_net, net.expert_num_per_task),
                               (net.share_expert_net, net.share_num)) if c]
        if not nets or any(not n.hidden_units for n in nets):
            raise ValueError(f"PLE level {k}: needs experts (expert_num_per_task or share_num) "
                             "with hidden_units.")
        if len({n.hidden_units[-1] for n in nets}) > 1:
            raise ValueError(f"PLE level {k}: task and shared experts must end with the same "
                             "width.")
        dims.append(nets[0].hidden_units[-1])
    return [Tensor((dims[-1],)) for _ in range(p.num_task)]


def _mask_block_width(p, net_width, mask_width, what="MaskBlock"):
    if not p.HasField("reduction_factor") and not p.aggregation_size:
        raise ValueError(f"{what} needs reduction_factor or aggregation_size.")
    if p.HasField("reduction_factor") and mask_width is not None and int(
            mask_width * p.reduction_factor) < 1:
        raise ValueError(f"{what}: reduction_factor {p.reduction_factor} leaves no hidden units.")
    return p.output_size or net_width


def _infer_mask_block(p, x):
    if _is_list(x):
        items = _tensor_list(x, "MaskBlock")
        if len(items) != 2:
            raise ValueError(f"MaskBlock takes x or [x, mask_input], got a list of "
                             f"{len(items)}.")
        net, mask = items
    else:
        net = mask = _tensor(x, "MaskBlock")
    return Tensor((_mask_block_width(p, net.width, mask.width),))


def _infer_masknet(p, x):
    x = _tensor(x, "MaskNet")
    if not p.mask_blocks:
        raise ValueError("MaskNet needs mask_blocks.")
    if p.use_parallel:
        width = _sum([_mask_block_width(b, x.width, x.width, f"MaskNet mask_blocks[{i}]")
                      for i, b in enumerate(p.mask_blocks)])
    else:
        width = x.width
        for i, b in enumerate(p.mask_blocks):
            width = _mask_block_width(b, width, x.width, f"MaskNet mask_blocks[{i}]")
    if p.HasField("mlp"):
        width = _mlp_units(p.mlp, "MaskNet mlp")[-1]
    return Tensor((width,))


def _infer_same(what):
    def infer(kwargs, x):
        return _tensor(x, what, rank=None)
    return infer


def _infer_dense(kwargs, x):
    x = _tensor(x, "Dense", rank=None)
    units = kwargs.get("units")
    if not isinstance(units, int) or units < 1:
        raise ValueError("Dense needs st_params units: a positive integer.")
    return Tensor(x.shape[:-1] + (units,))


def _infer_elementwise(what):
    def infer(kwargs, x):
        items = x if _is_list(x) else None
        if not items or any(not isinstance(s, Tensor) for s in items) or len(items) < 2:
            raise ValueError(f"{what} takes a list of at least 2 tensors of one shape "
                             f"(merge_inputs_into_list: true), got {describe(x)}.")
        if len({s.shape for s in items}) > 1:
            raise ValueError(f"{what} needs tensors of one shape, got "
                             f"{', '.join(_short(s) for s in items)}.")
        return items[0]
    return infer


def _infer_concatenate(kwargs, x):
    if not _is_list(x) or any(not isinstance(s, Tensor) for s in x) or not x:
        raise ValueError(f"Concatenate takes a list of tensors, got {describe(x)}.")
    return concat_specs(x, int(kwargs.get("axis", -1)), "Concatenate")


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One registered keras_layer class."""
    # KerasLayer oneof member of its typed params; None for a built-in Keras layer, which
    # takes st_params as keyword arguments (only those in `kwargs`).
    params: str | None
    # (params message or kwargs dict, input spec) -> output spec; ValueError if unfit.
    infer: Callable
    # One line for docs and error messages.
    summary: str
    kwargs: tuple = ()


LAYERS = {
    "MLP": LayerInfo("mlp", _infer_mlp, "stack of Dense layers (EasyRec MLP)"),
    "SENet": LayerInfo("senet", _infer_senet, "FiBiNet++ squeeze-excitation on field list"),
    "FM": LayerInfo("fm", _infer_fm, "second-order factorization machine term"),
    "DotInteraction": LayerInfo("dot_interaction", _infer_dot, "DLRM pairwise dot products"),
    "Cross": LayerInfo("cross", _infer_cross, "DCN-v2 cross layer"),
    "MMoE": LayerInfo("mmoe", _infer_mmoe, "multi-gate mixture of experts, one output per task"),
    "CGC": LayerInfo("cgc", _infer_cgc, "one PLE extraction level (task + shared experts)"),
    "PLE": LayerInfo("ple", _infer_ple, "progressive layered extraction, one output per task"),
    "PPNet": LayerInfo("ppnet", _infer_ppnet, "gated MLP personalised by a gate input"),
    "GateNU": LayerInfo("gate_nu", _infer_gate_nu, "gate gamma * sigmoid(MLP(x))"),
    "AITMTower": LayerInfo("aitm", _infer_aitm, "AITM attention over [own, parents...]"),
    "MaskBlock": LayerInfo("mask_block", _infer_mask_block, "MaskNet instance-guided mask"),
    "MaskNet": LayerInfo("masknet", _infer_masknet, "MaskBlocks in parallel or serial + MLP"),
    # Built-in Keras layers (st_params are their keyword arguments).
    "Dense": LayerInfo(None, _infer_dense, "keras Dense",
                       ("units", "activation", "use_bias", "kernel_initializer",
                        "bias_initializer")),
    "Dropout": LayerInfo(None, _infer_same("Dropout"), "keras Dropout", ("rate",)),
    "Activation": LayerInfo(None, _infer_same("Activation"), "keras Activation",
                            ("activation",)),
    "LayerNormalization": LayerInfo(None, _infer_same("LayerNormalization"),
                                    "keras LayerNormalization",
                                    ("axis", "epsilon", "center", "scale")),
    "BatchNormalization": LayerInfo(None, _infer_same("BatchNormalization"),
                                    "batch normalisation (debiased moving statistics)",
                                    ("axis", "momentum", "epsilon", "center", "scale")),
    "Add": LayerInfo(None, _infer_elementwise("Add"), "keras Add (element-wise sum)"),
    "Multiply": LayerInfo(None, _infer_elementwise("Multiply"), "keras Multiply"),
    "Concatenate": LayerInfo(None, _infer_concatenate, "keras Concatenate", ("axis",)),
}


def registered_names() -> str:
    return ", ".join(sorted(LAYERS))


def layer_params(keras_layer):
    """KerasLayer -> its params: the class's typed message (from the typed field or
    st_params), or a kwargs dict for a built-in Keras layer. ValueError if unfit."""
    name = keras_layer.class_name
    info = LAYERS.get(name)
    if info is None:
        raise ValueError(f"unknown class_name {name!r}; a config can only name registered "
                         f"layers: {registered_names()}.")
    which = keras_layer.WhichOneof("params")
    if info.params is None:
        if which not in (None, "st_params"):
            raise ValueError(f"{name} is a built-in Keras layer: give its arguments as "
                             f"st_params, not `{which}`.")
        kwargs = {k: _plain(v) for k, v in json_format.MessageToDict(
            keras_layer.st_params).items()} if which else {}
        unknown = sorted(set(kwargs) - set(info.kwargs))
        if unknown:
            allowed = ", ".join(info.kwargs) or "none"
            raise ValueError(f"{name}: unsupported st_params {unknown}; allowed: {allowed}.")
        return kwargs
    message = type(getattr(keras_layer, info.params))()
    if which == info.params:
        message.CopyFrom(getattr(keras_layer, info.params))
    elif which == "st_params":
        try:
            json_format.ParseDict(json_format.MessageToDict(keras_layer.st_params), message)
        except json_format.ParseError as e:
            raise ValueError(f"{name} st_params do not fit its `{info.params}` message: "
                             f"{e}") from None
    elif which is not None:
        raise ValueError(f"{name} takes `{info.params} {{ ... }}` (or st_params), not "
                         f"`{which}`.")
    return message


def _plain(value):
    """Struct numbers are floats; whole numbers become ints (Dense units: 64)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# Merging, slicing

def concat_specs(specs: list, axis: int, what: str) -> Tensor:
    """Concatenated tensors' spec; ValueError if ranks or the other dims differ."""
    ranks = {len(s.shape) for s in specs}
    if len(ranks) > 1:
        raise ValueError(f"{what}: cannot concatenate tensors of different ranks: "
                         f"{', '.join(_short(s) for s in specs)}.")
    rank = ranks.pop()
    ax = axis if axis >= 0 else rank + 1 + axis  # axis counts the batch axis
    if not 1 <= ax <= rank:
        raise ValueError(f"{what}: concat axis {axis} is out of range for "
                         f"{_short(specs[0])} tensors.")
    i = ax - 1
    for j in range(rank):
        if j != i and len({s.shape[j] for s in specs if s.shape[j] is not None}) > 1:
            raise ValueError(f"{what}: cannot concatenate "
                             f"{', '.join(_short(s) for s in specs)} along axis {axis}.")
    shape = list(specs[0].shape)
    shape[i] = _sum([s.shape[i] for s in specs])
    return Tensor(tuple(shape))


def merge_specs(specs: list, axis: int, into_list: bool, what: str):
    """A block's inputs -> its input: one as is; with a list among them one joined list;
    tensors concatenated along `axis`; or the list of inputs with merge_inputs_into_list."""
    if into_list:
        return list(specs)
    if any(s is None for s in specs):
        return None
    if len(specs) == 1:
        return specs[0]
    if any(_is_list(s) for s in specs):
        return [item for s in specs for item in (s if _is_list(s) else [s])]
    return concat_specs(specs, axis, what)


_NAME = re.compile(r"^[\w.-]+$")
_INDEX = re.compile(r"^\[\s*(-?\d+)\s*\]$")
_RANGE = re.compile(r"^\[\s*(-?\d*)\s*:\s*(-?\d*)\s*\]$")


def parse_slice(text: str):
    """input_slice "[i]" -> int i; "[a:b]" -> slice(a, b). ValueError otherwise (nothing is
    evaluated)."""
    text = text.strip()
    match = _INDEX.match(text)
    if match:
        return int(match.group(1))
    match = _RANGE.match(text)
    if match:
        start, stop = (int(g) if g else None for g in match.groups())
        return slice(start, stop)
    raise ValueError(f"input_slice {text!r} is not supported; use \"[i]\" or \"[a:b]\" "
                     "(integers).")


def slice_spec(spec, text: str):
    index = parse_slice(text)
    if spec is None:
        return None
    if not _is_list(spec):
        raise ValueError(f"input_slice {text} needs a list input, got {describe(spec)} (e.g. an "
                         "input_layer with output_2d_tensor_and_feature_list, or a layer with "
                         "several outputs).")
    if isinstance(index, int):
        if not -len(spec) <= index < len(spec):
            raise ValueError(f"input_slice {text} is out of range for {describe(spec)}.")
        return spec[index]
    return spec[index]


# ---------------------------------------------------------------------------
# The plan: blocks in topological order with their inputs and output specs.

# Fields EasyRec has that mtrec does not implement: (message attribute, why).
_INPUT_UNSUPPORTED = {
    "input_fn": "mtrec never evaluates Python from a config; use input_slice or a layer",
    "reset_input": "block packages are not supported",
    "package_input": "block packages are not supported",
    "package_input_fn": "block packages are not supported",
}
_LAYER_UNSUPPORTED = {
    "lambda": "mtrec never evaluates Python from a config; use a registered layer",
    "recurrent": "recurrent blocks are not supported; chain blocks instead (e.g. Cross "
                 "blocks reading [x0, previous])",
    "repeat": "repeat blocks are not supported; write the copies as separate blocks",
    "raw_input": "raw_input blocks are not supported; use input_layer",
    "embedding_layer": "embedding_layer blocks are not supported; use input_layer",
}


@dataclasses.dataclass
class InputRef:
    """One block input: a block's output or an implicit feature-group tensor."""
    kind: str            # "block" or "group"
    name: str
    slice: str | None
    ignore: bool


@dataclasses.dataclass
class BlockPlan:
    name: str
    config: Any                      # the Block message
    inputs: list                     # [InputRef]
    layers: list                     # [(KerasLayer message, params)] for keras_layer/layers
    input_spec: Any = None           # the merged input
    layer_specs: list = dataclasses.field(default_factory=list)  # input spec of each layer
    output: Any = None


@dataclasses.dataclass
class Plan:
    blocks: list                     # [BlockPlan] in execution order
    output: Any                      # spec of the backbone output (after top_mlp)
    output_names: list               # concat_blocks / output_blocks (or leaves)
    as_list: bool                    # output_blocks: the output is the list of those blocks
    errors: list                     # [(message, field, value, nth)]
    warnings: list


class _Locator:
    """(field, value) -> nth occurrence among the backbone's blocks, so Source.where finds
    the line of this block's field (blocks appear in the text in config order)."""

    def __init__(self):
        self.seen: dict = {}

    def count(self, field, value=None) -> int:
        key = (field, None if value is None else str(value))
        self.seen[key] = self.seen.get(key, 0) + 1
        return self.seen[key]


def _walk_fields(block, visit):
    """Call visit(field, value) for the located fields of a block, in text order."""
    visit("name", block.name)
    for inp in block.inputs:
        which = inp.WhichOneof("name")
        if which in ("feature_group_name", "block_name", "package_name"):
            visit(which, getattr(inp, which))
        elif which:
            visit(which, None)
        for field in ("input_fn", "input_slice", "reset_input", "package_input",
                      "package_input_fn"):
            if inp.HasField(field):
                visit(field, getattr(inp, field) if field == "input_slice" else None)
    if block.HasField("extra_input_fn"):
        visit("extra_input_fn", None)
    for layer in block.layers:
        which = layer.WhichOneof("layer")
        if which == "keras_layer":
            visit("class_name", layer.keras_layer.class_name)
        elif which:
            visit(which, None)
    which = block.WhichOneof("layer")
    if which == "keras_layer":
        visit("class_name", block.keras_layer.class_name)
    elif which:
        visit(which, None)


def plan(backbone, group_widths: dict) -> Plan:
    """Resolve a BackboneTower against the feature groups.

    group_widths: {group name: [width of each feature]} of the model's feature groups.
    Errors are collected (message, field, value, nth) with the field whose line they concern.
    """
    errors, warnings = [], []
    blocks = list(backbone.blocks)
    by_name = {}
    locator = _Locator()
    # nth occurrence of each located field of each block, for error lines.
    where: dict = {}
    for k, block in enumerate(blocks):
        def visit(field, value, k=k):
            where[(k, field, None if value is None else str(value))] = \
                locator.count(field, value)
        _walk_fields(block, visit)

    def error(message, k=None, field=None, value=None):
        nth = where.get((k, field, None if value is None else str(value)), 1) \
            if k is not None else 1
        errors.append((message, field, value, nth))

    if backbone.packages:
        error("backbone.packages (block packages) are not supported by mtrec; write the "
              "blocks into the backbone.", field="packages")
    if not blocks:
        error("backbone has no blocks.", field="backbone")
        return Plan([], None, [], False, errors, warnings)

    # -- names and per-block checks ------------------------------------------
    for k, block in enumerate(blocks):
        name = block.name
        if not name:
            error("a backbone block has no name.", k, "name", name)
            continue
        if name in by_name:
            error(f"block name {name!r} is used twice; block names must be unique.", k,
                  "name", name)
            continue
        if not _NAME.match(name):
            error(f"block name {name!r} may only use letters, digits, '_', '.' and '-' (it "
                  "names the block's weights).", k, "name", name)
        by_name[name] = k
    # Layer names: the block name, <block>_l<i> in `layers`, and top_mlp; all distinct, as
    # they key the weights in checkpoints.
    taken = {n: n for n in by_name}
    if backbone.HasField("top_mlp"):
        if "top_mlp" in by_name:
            error("block name 'top_mlp' is taken by the backbone's top_mlp; rename the block.",
                  by_name["top_mlp"], "name", "top_mlp")
        taken["top_mlp"] = None
    for k, block in enumerate(blocks):
        for i in range(len(block.layers)):
            sub = f"{block.name}_l{i}"
            if sub in taken:
                error(f"block {block.name!r}: its layers[{i}] is named {sub!r}, which is "
                      f"already the name of {'the top_mlp' if taken[sub] is None else 'a block'};"
                      " rename the block.", k, "name", block.name)
            taken[sub] = block.name

    plans: dict[str, BlockPlan] = {}
    edges: dict[str, list] = {}  # block -> blocks it reads
    for k, block in enumerate(blocks):
        name = block.name
        if not name or by_name.get(name) != k:
            continue
        which = block.WhichOneof("layer")
        ok = True
        if which in _LAYER_UNSUPPORTED:
            error(f"block {name!r}: `{which}` is not supported: {_LAYER_UNSUPPORTED[which]}.",
                  k, which)
            ok = False
        if block.HasField("extra_input_fn"):
            error(f"block {name!r}: extra_input_fn is not supported: mtrec never evaluates "
                  "Python from a config; use a registered layer.", k, "extra_input_fn")
            ok = False
        if block.layers and which is not None:
            error(f"block {name!r} has both `layers` and `{which}`; use one.", k, "name", name)
            ok = False
        if not block.inputs:
            error(f"block {name!r} has no inputs; give at least one `inputs {{ "
                  "feature_group_name | block_name }`.", k, "name", name)
            ok = False
        if which != "input_layer" and name in group_widths:
            error(f"block {name!r} has the name of a feature group; only an input_layer "
                  "block reading that group may; rename the block.", k, "name", name)
            ok = False
        refs = []
        for inp in block.inputs:
            kind = inp.WhichOneof("name")
            for field, why in _INPUT_UNSUPPORTED.items():
                if inp.HasField(field):
                    error(f"block {name!r}: inputs.{field} is not supported: {why}.", k, field)
                    ok = False
            if kind in ("package_name", "use_package_input"):
                error(f"block {name!r}: inputs.{kind} is not supported (no block packages).",
                      k, kind, getattr(inp, kind) if kind == "package_name" else None)
                ok = False
                continue
            if kind is None:
                error(f"block {name!r}: an input names neither feature_group_name nor "
                      "block_name.", k, "name", name)
                ok = False
                continue
            target = getattr(inp, kind)
            slice_text = inp.input_slice if inp.HasField("input_slice") else None
            if slice_text is not None:
                try:
                    parse_slice(slice_text)
                except ValueError as e:
                    error(f"block {name!r}: {e}", k, "input_slice", slice_text)
                    ok = False
            if kind == "feature_group_name":
                if which == "input_layer":
                    if target not in group_widths:
                        error(f"block {name!r}: feature group {target!r} does not exist; "
                              f"groups: {', '.join(group_widths)}.", k, kind, target)
                        ok = False
                    refs.append(InputRef("group", target, slice_text, inp.ignore_input))
                    continue
                owner = by_name.get(target)
                if owner is not None and blocks[owner].WhichOneof("layer") == "input_layer":
                    refs.append(InputRef("block", target, slice_text, inp.ignore_input))
                elif target in group_widths:
                    refs.append(InputRef("group", target, slice_text, inp.ignore_input))
                else:
                    error(f"block {name!r}: feature group {target!r} does not exist; groups: "
                          f"{', '.join(group_widths)}.", k, kind, target)
                    ok = False
            else:  # block_name
                if target == name:
                    error(f"block {name!r} reads itself; a block cannot be its own input.", k,
                          kind, target)
                    ok = False
                elif target not in by_name:
                    error(f"block {name!r}: input block {target!r} does not exist; blocks: "
                          f"{', '.join(by_name)}.", k, kind, target)
                    ok = False
                else:
                    refs.append(InputRef("block", target, slice_text, inp.ignore_input))
        if which == "input_layer":
            if len(block.inputs) != 1 or block.inputs[0].WhichOneof("name") != \
                    "feature_group_name":
                error(f"input_layer block {name!r} takes exactly one input, a "
                      "feature_group_name.", k, "name", name)
                ok = False
            ok = _check_input_layer(block, k, error) and ok
        layers = []
        keras_layers = ([(layer.keras_layer, i) for i, layer in enumerate(block.layers)
                         if layer.WhichOneof("layer") == "keras_layer"] +
                        ([(block.keras_layer, None)] if which == "keras_layer" else []))
        for i, layer in enumerate(block.layers):
            kind = layer.WhichOneof("layer")
            if kind in _LAYER_UNSUPPORTED:
                error(f"block {name!r}: layers[{i}] `{kind}` is not supported: "
                      f"{_LAYER_UNSUPPORTED[kind]}.", k, kind)
                ok = False
            elif kind is None:
                error(f"block {name!r}: layers[{i}] is empty; give a keras_layer.", k, "name",
                      name)
                ok = False
        for keras_layer, _ in keras_layers:
            try:
                layers.append((keras_layer, layer_params(keras_layer)))
            except ValueError as e:
                error(f"block {name!r}: {e}", k, "class_name", keras_layer.class_name)
                ok = False
        plan_k = BlockPlan(name, block, refs, layers)
        if ok:
            plans[name] = plan_k
        edges[name] = [r.name for r in refs if r.kind == "block"]

    # -- graph order and cycles ----------------------------------------------
    order, cycles = _topological(list(by_name), edges)
    for cycle in cycles:
        error(f"blocks form a cycle ({' -> '.join(cycle)}); a backbone must be acyclic.",
              by_name[cycle[0]], "name", cycle[0])

    # -- outputs ---------------------------------------------------------------
    read = {t for targets in edges.values() for t in targets}
    as_list = bool(backbone.output_blocks)
    if backbone.output_blocks and backbone.concat_blocks:
        error("backbone: set concat_blocks or output_blocks, not both.", field="output_blocks")
    names = list(backbone.output_blocks or backbone.concat_blocks)
    field = "output_blocks" if as_list else "concat_blocks"
    for n in names:
        if n not in by_name:
            error(f"backbone.{field}: block {n!r} does not exist; blocks: "
                  f"{', '.join(by_name)}.", field=field, value=n)
    if not names:
        names = [n for n in by_name if n not in read]
    if as_list and backbone.HasField("top_mlp"):
        error("backbone: top_mlp applies to the merged concat_blocks output; it cannot be "
              "combined with output_blocks.", field="top_mlp")

    # -- specs -----------------------------------------------------------------
    specs: dict = {}
    ordered = []
    for name in order:
        k = by_name[name]
        p = plans.get(name)
        if p is None:
            specs[name] = None
            continue
        ordered.append(p)
        try:
            specs[name] = _block_output(p, specs, group_widths)
        except _Located as e:
            error(f"block {name!r}: {e.message}", k, e.field, e.value)
            specs[name] = None
        except ValueError as e:
            error(f"block {name!r}: {e}", k, *_error_field(p))
            specs[name] = None
    output = None
    if names and all(n in specs for n in names):
        outs = [specs[n] for n in names]
        if as_list:
            output = outs
        else:
            try:
                output = merge_specs(outs, -1, False, "backbone output")
                if backbone.HasField("top_mlp") and output is not None:
                    output = _infer_mlp(backbone.top_mlp, output)
            except ValueError as e:
                error(f"backbone output: {e}", field=field if backbone.concat_blocks else
                      "backbone")
                output = None
    if cycles or any(n not in specs for n in names):
        output = None
    return Plan(ordered if not cycles else [], output, names, as_list, errors, warnings)


class _Located(Exception):
    """A block error about a specific field (for its line)."""

    def __init__(self, message, field, value):
        super().__init__(message)
        self.message, self.field, self.value = message, field, value


def _error_field(p: BlockPlan):
    if p.layers:
        return "class_name", p.layers[-1][0].class_name
    return "name", p.name


def _check_input_layer(block, k, error) -> bool:
    c = block.input_layer
    name = block.name
    ok = True
    outputs = [f for f in ("only_output_feature_list", "only_output_3d_tensor",
                           "output_2d_tensor_and_feature_list") if getattr(c, f)]
    if c.output_seq_and_normal_feature:
        error(f"input_layer block {name!r}: output_seq_and_normal_feature needs sequence "
              "features, which mtrec does not implement yet.", k, "name", name)
        ok = False
    if len(outputs) > 1:
        error(f"input_layer block {name!r}: set at most one of {', '.join(outputs)}.", k, "name",
              name)
        ok = False
    if c.do_batch_norm and c.do_layer_norm:
        error(f"input_layer block {name!r}: do_batch_norm and do_layer_norm are exclusive.", k,
              "name", name)
        ok = False
    for field in ("dropout_rate", "feature_dropout_rate"):
        if not 0 <= getattr(c, field) < 1:
            error(f"input_layer block {name!r}: {field} must be in [0, 1).", k, "name", name)
            ok = False
    if c.wide_output_dim > 1:
        error(f"input_layer block {name!r}: wide_output_dim {c.wide_output_dim} is not "
              "supported; mtrec's WIDE groups give one weight per feature (width 1).", k,
              "name", name)
        ok = False
    return ok


def input_layer_spec(config, widths: list):
    """Output spec of an input_layer over features of these widths."""
    features = [Tensor((w,)) for w in widths]
    if config.only_output_feature_list:
        return features
    if config.only_output_3d_tensor:
        known = {w for w in widths if w is not None}
        if len(known) > 1:
            raise ValueError(f"only_output_3d_tensor needs features of one width, got widths "
                             f"{sorted(known)}.")
        return Tensor((len(widths), known.pop() if known else None))
    tensor = Tensor((_sum(widths),))
    if config.output_2d_tensor_and_feature_list:
        return [tensor, features]
    return tensor


def _block_output(p: BlockPlan, specs: dict, group_widths: dict):
    block = p.config
    if block.WhichOneof("layer") == "input_layer":
        return input_layer_spec(block.input_layer, group_widths[p.inputs[0].name])
    values = []
    for ref in p.inputs:
        spec = (specs.get(ref.name) if ref.kind == "block"
                else Tensor((_sum(group_widths[ref.name]),)))
        if ref.slice is not None:
            try:
                spec = slice_spec(spec, ref.slice)
            except ValueError as e:
                raise _Located(str(e), "input_slice", ref.slice) from None
        if not ref.ignore:
            values.append(spec)
    if not values:
        raise ValueError("every input has ignore_input; the block has nothing to read.")
    x = merge_specs(values, block.input_concat_axis, block.merge_inputs_into_list,
                    "merging the inputs")
    p.input_spec = x
    for keras_layer, params in p.layers:
        p.layer_specs.append(x)
        if x is None:
            return None
        x = LAYERS[keras_layer.class_name].infer(params, x)
    return x


def _topological(names: list, edges: dict) -> tuple[list, list]:
    """(order, cycles): blocks after their inputs (config order among ready blocks), and
    each cycle as [a, b, ..., a] (a reads ... reads a)."""
    order, done = [], set()
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if all(t in done for t in edges.get(n, []))]
        if not ready:
            break
        for n in ready:
            order.append(n)
            done.add(n)
        remaining = [n for n in remaining if n not in done]
    cycles, reported = [], set()
    for start in remaining:
        path, seen = [start], {start: 0}
        node = start
        while True:  # follow unfinished inputs until a node repeats
            nxt = next((t for t in edges.get(node, []) if t not in done), None)
            if nxt is None:
                break
            if nxt in seen:
                cycle = path[seen[nxt]:] + [nxt]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    cycles.append(cycle)
                break
            seen[nxt] = len(path)
            path.append(nxt)
            node = nxt
    return order, cycles


def group_widths_of(groups: dict, features: dict, wide_dim: int = 1) -> dict:
    """{group: [feature widths]} from feature group configs and feature configs (the width
    a feature has in a group: its embedding_dim, a raw feature's raw_input_dim, or
    wide_dim in a WIDE group)."""
    widths = {}
    for name, group in groups.items():
        wide = group.wide_deep == 1
        row = []
        for f in group.feature_names:
            feature = features.get(f)
            if feature is None:
                row.append(None)
            elif wide:
                row.append(wide_dim)
            elif feature.feature_type == 1 and not feature.boundaries:  # RawFeature values
                row.append(feature.raw_input_dim)
            else:
                row.append(feature.embedding_dim)
        widths[name] = row
    return widths


def count_outputs(spec) -> int | None:
    """Number of tensors a backbone output gives the towers (None if unknown)."""
    if spec is None:
        return None
    return len(spec) if isinstance(spec, list) else 1


__all__ = ["LAYERS", "Tensor", "describe", "layer_params", "plan", "parse_slice",
           "group_widths_of", "merge_specs", "concat_specs", "ppnet_options"]
