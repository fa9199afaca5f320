"""Shape rules of the backbone's layers: (params, input spec) -> output spec, without
TensorFlow. Each raises ValueError saying what the layer needs when the input or params
do not fit; config validation reports it with the block's line. The catalogue
(mtrec.backbone.catalogue) names the rule of each layer.
"""
from mtrec.config.activations import keras_activation, unknown_activation
from mtrec.backbone.specs import (Tensor, concat_specs, describe, fields_shape, is_list,
                                  one_tensor, short, tensor_list, total)

def mlp_units(mlp, what: str) -> list[int]:
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


def infer_mlp(p, x):
    units = mlp_units(p, "MLP")
    x = one_tensor(x, "MLP", rank=None)
    return Tensor(x.shape[:-1] + (units[-1],))


def infer_senet(p, x):
    items = tensor_list(x, "SENet")
    g = p.num_squeeze_group
    if g == 0 or p.reduction_ratio == 0:
        raise ValueError("SENet: reduction_ratio and num_squeeze_group must be at least 1.")
    for i, s in enumerate(items):
        if s.width is not None and s.width % g:
            raise ValueError(f"SENet: embedding {i} has width {s.width}, not divisible by "
                             f"num_squeeze_group {g}.")
    return Tensor((total([s.width for s in items]),))


def infer_fm(p, x):
    _, d = fields_shape(x, "FM")
    return Tensor((d,) if p.use_variant else (1,))


def infer_dot(p, x):
    n, _ = fields_shape(x, "DotInteraction")
    if p.skip_gather:
        return Tensor((n * n,))
    return Tensor((n * (n + 1) // 2 if p.self_interaction else n * (n - 1) // 2,))


def infer_cross(p, x):
    if is_list(x):
        items = tensor_list(x, "Cross")
        if len(items) != 2:
            raise ValueError(f"Cross takes x or [x0, x], got a list of {len(items)}.")
        widths = {s.width for s in items if s.width is not None}
        if len(widths) > 1:
            raise ValueError(f"Cross: x0 and x must have the same width, got {sorted(widths)}.")
        return items[1]
    if p.diag_scale < 0:
        raise ValueError("Cross: diag_scale must not be negative.")
    return one_tensor(x, "Cross")


def infer_mmoe(p, x):
    if p.num_task == 0 or p.num_expert == 0:
        raise ValueError("MMoE needs num_task >= 1 and num_expert >= 1.")
    if p.HasField("expert_mlp"):
        units = mlp_units(p.expert_mlp, "MMoE expert_mlp")
        one_tensor(x, "MMoE (with expert_mlp)")
        return [Tensor((units[-1],)) for _ in range(p.num_task)]
    items = tensor_list(x, "MMoE without expert_mlp")
    if len(items) != p.num_expert + 1:
        raise ValueError(f"MMoE without expert_mlp takes [expert_1 .. expert_{p.num_expert}, "
                         f"gate input]: a list of {p.num_expert + 1}, got {len(items)}.")
    widths = {s.width for s in items[:-1] if s.width is not None}
    if len(widths) > 1:
        raise ValueError(f"MMoE: the experts must have one width, got {sorted(widths)}.")
    width = widths.pop() if widths else None
    return [Tensor((width,)) for _ in range(p.num_task)]


def infer_ppnet(p, x):
    units = mlp_units(p.mlp, "PPNet mlp")
    items = tensor_list(x, "PPNet")
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


def infer_gate_nu(p, x):
    x = one_tensor(x, "GateNU")
    if p.hidden_dim == 0 or p.gamma <= 0:
        raise ValueError("GateNU needs hidden_dim >= 1 and gamma > 0.")
    return Tensor((p.output_dim or x.width,))


def infer_aitm(p, x):
    if isinstance(x, Tensor):  # nothing to transfer from: the tower's own input
        return one_tensor(x, "AITMTower")
    items = tensor_list(x, "AITMTower", min_len=2)
    if p.HasField("transfer_mlp"):
        mlp_units(p.transfer_mlp, "AITMTower transfer_mlp")
    return Tensor((p.project_dim or items[0].width,))


def infer_cgc(p, x):
    if p.num_task == 0:
        raise ValueError("CGC needs num_task >= 1.")
    if p.expert_num_per_task == 0 and p.share_num == 0:
        raise ValueError("CGC needs expert_num_per_task or share_num >= 1.")
    if is_list(x):
        items = tensor_list(x, "CGC")
        if len(items) != p.num_task + 1:
            raise ValueError(f"CGC takes one tensor or [task_1 .. task_{p.num_task}, shared]: "
                             f"a list of {p.num_task + 1}, got {len(items)}.")
    else:
        one_tensor(x, "CGC")
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


def infer_ple(p, x):
    one_tensor(x, "PLE")
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


def infer_mask_block(p, x):
    if is_list(x):
        items = tensor_list(x, "MaskBlock")
        if len(items) != 2:
            raise ValueError(f"MaskBlock takes x or [x, mask_input], got a list of "
                             f"{len(items)}.")
        net, mask = items
    else:
        net = mask = one_tensor(x, "MaskBlock")
    return Tensor((_mask_block_width(p, net.width, mask.width),))


def infer_masknet(p, x):
    x = one_tensor(x, "MaskNet")
    if not p.mask_blocks:
        raise ValueError("MaskNet needs mask_blocks.")
    if p.use_parallel:
        width = total([_mask_block_width(b, x.width, x.width, f"MaskNet mask_blocks[{i}]")
                      for i, b in enumerate(p.mask_blocks)])
    else:
        width = x.width
        for i, b in enumerate(p.mask_blocks):
            width = _mask_block_width(b, width, x.width, f"MaskNet mask_blocks[{i}]")
    if p.HasField("mlp"):
        width = mlp_units(p.mlp, "MaskNet mlp")[-1]
    return Tensor((width,))


def infer_same(what):
    def infer(kwargs, x):
        return one_tensor(x, what, rank=None)
    return infer


def infer_dense(kwargs, x):
    x = one_tensor(x, "Dense", rank=None)
    units = kwargs.get("units")
    if not isinstance(units, int) or units < 1:
        raise ValueError("Dense needs st_params units: a positive integer.")
    return Tensor(x.shape[:-1] + (units,))


def infer_elementwise(what):
    def infer(kwargs, x):
        items = x if is_list(x) else None
        if not items or any(not isinstance(s, Tensor) for s in items) or len(items) < 2:
            raise ValueError(f"{what} takes a list of at least 2 tensors of one shape "
                             f"(merge_inputs_into_list: true), got {describe(x)}.")
        if len({s.shape for s in items}) > 1:
            raise ValueError(f"{what} needs tensors of one shape, got "
                             f"{', '.join(short(s) for s in items)}.")
        return items[0]
    return infer


def infer_concatenate(kwargs, x):
    if not is_list(x) or any(not isinstance(s, Tensor) for s in x) or not x:
        raise ValueError(f"Concatenate takes a list of tensors, got {describe(x)}.")
    return concat_specs(x, int(kwargs.get("axis", -1)), "Concatenate")



# ---------------------------------------------------------------------------
# Sequence layers: their input is an input_layer with output_seq_and_normal_feature,
# [history (batch, len, d), mask (batch, len), target (batch, d_t)] (no target when the
# group has none).

def sequence_input(x, what: str, need_target: bool) -> tuple:
    """(history spec, target spec or None) of a sequence input; ValueError otherwise."""
    items = x if is_list(x) else None
    shaped = items is not None and all(isinstance(s, Tensor) for s in items)
    if not shaped or len(items) not in ((3,) if need_target else (2, 3)) or \
            len(items[0].shape) != 2 or len(items[1].shape) != 1 or \
            (len(items) == 3 and len(items[2].shape) != 1):
        target = "target (batch, d_t)" if need_target else "optional target (batch, d)"
        group = " over a group with target (non-sequence) features" if need_target else ""
        raise ValueError(f"{what} takes [history (batch, len, d), mask (batch, len), {target}]"
                         " from an input_layer block with output_seq_and_normal_feature: true"
                         f"{group}, got {describe(x)}.")
    return items[0], (items[2] if len(items) == 3 else None)


def infer_din(p, x):
    hist, target = sequence_input(x, "DIN", need_target=True)
    if p.HasField("attention_dnn"):
        units = list(p.attention_dnn.hidden_units)
        if any(u == 0 for u in units):
            raise ValueError(f"DIN attention_dnn hidden_units must be positive, got {units}.")
        if len(p.attention_dnn.dropout_ratio) > max(len(units), 1):
            raise ValueError(f"DIN attention_dnn has {len(units)} layers but "
                             f"{len(p.attention_dnn.dropout_ratio)} dropout_ratio values.")
        if any(not 0 <= r < 1 for r in p.attention_dnn.dropout_ratio):
            raise ValueError("DIN attention_dnn dropout_ratio values must be in [0, 1).")
        if keras_activation(p.attention_dnn.activation) is None:
            raise ValueError(f"DIN attention_dnn: {unknown_activation(p.attention_dnn.activation)}")
    if p.attention_normalizer not in ("softmax", "sigmoid"):
        raise ValueError(f"DIN attention_normalizer must be \"softmax\" or \"sigmoid\", got "
                         f"{p.attention_normalizer!r}.")
    d, d_t = hist.width, target.width
    if None not in (d, d_t) and d_t > d:
        raise ValueError(f"DIN: the target features are {d_t} wide but the sequence features "
                         f"only {d}; the target may not be wider than the history.")
    if not p.need_target_feature:
        return Tensor((d,))
    return Tensor((total([d, d_t]),))


def bst_options(p) -> dict:
    """BSTEncoder params -> mtrec.layers.bst.BST keyword arguments; ValueError if unfit."""
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size"):
        if getattr(p, field) < 1:
            raise ValueError(f"BST needs {field} (a positive integer).")
    if p.hidden_size % p.num_attention_heads:
        raise ValueError(f"BST hidden_size {p.hidden_size} must be a multiple of "
                         f"num_attention_heads {p.num_attention_heads}.")
    if keras_activation(p.hidden_act) is None:
        raise ValueError(f"BST hidden_act: {unknown_activation(p.hidden_act)}")
    if p.max_position_embeddings < 1:
        raise ValueError("BST max_position_embeddings must be at least 1.")
    for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if not 0 <= getattr(p, field) < 1:
            raise ValueError(f"BST {field} must be in [0, 1), got {getattr(p, field)}.")
    if p.initializer_range <= 0:
        raise ValueError(f"BST initializer_range must be > 0, got {p.initializer_range}.")
    if p.target_item_position not in ("head", "tail", "ignore"):
        raise ValueError(f"BST target_item_position must be \"head\", \"tail\" or \"ignore\", "
                         f"got {p.target_item_position!r}.")
    if (p.target_item_position == "ignore" and not p.reserve_target_position
            and not p.output_all_token_embeddings):
        raise ValueError("BST with target_item_position \"ignore\", reserve_target_position "
                         "false and output_all_token_embeddings false would output a padded "
                         "position; set one of them.")
    return {f.name: getattr(p, f.name) for f in p.DESCRIPTOR.fields}


def infer_bst(p, x):
    hist, target = sequence_input(x, "BST", need_target=False)
    options = bst_options(p)
    uses_target = target is not None and p.target_item_position != "ignore"
    if uses_target and None not in (hist.width, target.width) and hist.width != target.width:
        raise ValueError(f"BST: the target features are {target.width} wide and the "
                         f"sequence features {hist.width}; BST needs equal widths.")
    if not options["output_all_token_embeddings"]:
        return Tensor((p.hidden_size,))
    positions = p.max_position_embeddings + int(uses_target or p.reserve_target_position)
    return Tensor((positions * p.hidden_size,))


# ---------------------------------------------------------------------------
# Component layers (protos/mtrec/protos/components.proto).

BILINEAR_TYPES = ("all", "each", "interaction")


def infer_bilinear(p, x):
    items = tensor_list(x, "Bilinear", min_len=2)
    if p.type.lower() not in BILINEAR_TYPES:
        raise ValueError(f"Bilinear type must be one of {', '.join(BILINEAR_TYPES)}, got "
                         f"{p.type!r}.")
    if p.num_output_units < 1:
        raise ValueError("Bilinear needs num_output_units >= 1.")
    widths = {s.width for s in items if s.width is not None}
    if p.type.lower() != "interaction" and len(widths) > 1:
        raise ValueError(f"Bilinear type {p.type!r} needs embeddings of one width, got "
                         f"{sorted(widths)}; use type 'interaction'.")
    return Tensor((p.num_output_units,))


def infer_fibinet(p, x):
    if not p.HasField("senet"):
        raise ValueError("FiBiNet needs senet { ... }.")
    width = infer_senet(p.senet, x).width
    if p.HasField("bilinear"):
        width = total([width, infer_bilinear(p.bilinear, x).width])
    if p.HasField("mlp"):
        width = mlp_units(p.mlp, "FiBiNet mlp")[-1]
    return Tensor((width,))


def infer_cin(p, x):
    if not isinstance(x, Tensor) or len(x.shape) != 2:
        raise ValueError(f"CIN takes a (batch, fields, d) tensor, got {describe(x)}; stack "
                         "a feature list with extra_input_fn: 'lambda x: tf.stack(x, axis=1)' "
                         "or use an input_layer with only_output_3d_tensor: true.")
    sizes = list(p.hidden_feature_sizes)
    if not sizes or any(h < 1 for h in sizes):
        raise ValueError(f"CIN needs hidden_feature_sizes: positive sizes, got {sizes}.")
    return Tensor((sum(sizes),))


def _numeric_output(p, x, what):
    x = one_tensor(x, what)
    if p.embedding_dim < 1:
        raise ValueError(f"{what} needs embedding_dim >= 1.")
    if p.output_3d_tensor and p.output_tensor_list:
        raise ValueError(f"{what}: set output_3d_tensor or output_tensor_list, not both.")
    n, d = x.width, p.embedding_dim
    flat = Tensor((None if n is None else n * d,))
    if p.output_3d_tensor:
        return [flat, Tensor((n, d))]
    if p.output_tensor_list:
        if n is None:
            raise ValueError(f"{what} with output_tensor_list needs a known input width.")
        return [flat, [Tensor((d,)) for _ in range(n)]]
    return flat


def numeric_output_form(p) -> str:
    """The output form of mtrec.layers.numeric_embedding for AutoDis/Periodic params."""
    return "3d" if p.output_3d_tensor else "list" if p.output_tensor_list else "tensor"


def infer_autodis(p, x):
    if p.num_bins < 1 or not p.temperature > 0:
        raise ValueError("AutoDisEmbedding needs num_bins >= 1 and temperature > 0.")
    return _numeric_output(p, x, "AutoDisEmbedding")


def infer_periodic(p, x):
    if p.embedding_dim % 2:
        raise ValueError(f"PeriodicEmbedding needs an even embedding_dim, got "
                         f"{p.embedding_dim}.")
    if not p.sigma > 0:
        raise ValueError("PeriodicEmbedding needs sigma > 0.")
    if keras_activation(p.linear_activation) is None:
        raise ValueError(f"PeriodicEmbedding linear_activation: "
                         f"{unknown_activation(p.linear_activation)}")
    return _numeric_output(p, x, "PeriodicEmbedding")


def check_text_cnn(p, what: str = "TextCNN") -> int:
    """TextCNN (TextCNNCombiner) params -> its output width; ValueError if unfit."""
    sizes, filters = list(p.filter_sizes), list(p.num_filters)
    if not sizes or len(sizes) != len(filters):
        raise ValueError(f"{what} needs filter_sizes and num_filters of one (non-zero) "
                         f"length, got {len(sizes)} and {len(filters)}.")
    if min(sizes + filters) < 1:
        raise ValueError(f"{what} filter_sizes and num_filters must be positive.")
    if p.pad_sequence_length < max(sizes):
        raise ValueError(f"{what} pad_sequence_length {p.pad_sequence_length} must be at least "
                         f"the widest filter, {max(sizes)} (sequences are padded or cut to it).")
    if keras_activation(p.activation) is None:
        raise ValueError(f"{what} activation: {unknown_activation(p.activation)}")
    if p.HasField("mlp"):
        return mlp_units(p.mlp, f"{what} mlp")[-1]
    return sum(filters)


def infer_text_cnn(p, x):
    if not (isinstance(x, Tensor) and len(x.shape) == 2):  # else a (batch, len, d) tensor
        sequence_input(x, "TextCNN", need_target=False)
    return Tensor((check_text_cnn(p),))


def infer_highway(p, x):
    x = one_tensor(x, "Highway")
    if p.input:
        raise ValueError("Highway: `input` names the feature group of EasyRec's HighWayTower "
                         "model; in a backbone the block's inputs say that; remove it.")
    if p.num_layers < 1:
        raise ValueError("Highway needs num_layers >= 1.")
    if not 0 <= p.dropout_rate < 1:
        raise ValueError("Highway dropout_rate must be in [0, 1).")
    if keras_activation(p.activation) is None:
        raise ValueError(f"Highway activation: {unknown_activation(p.activation)}")
    return Tensor((p.emb_size or x.width,))


def infer_gate(p, x):
    items = tensor_list(x, "Gate", min_len=2)
    if p.weight_index >= len(items):
        raise ValueError(f"Gate weight_index {p.weight_index} is out of range for a list of "
                         f"{len(items)}.")
    experts = [s for i, s in enumerate(items) if i != p.weight_index]
    weights = items[p.weight_index].width
    if weights is not None and weights != len(experts):
        raise ValueError(f"Gate: the weights (input {p.weight_index}) are {weights} wide but "
                         f"there are {len(experts)} experts; they must match.")
    widths = {s.width for s in experts if s.width is not None}
    if len(widths) > 1:
        raise ValueError(f"Gate: the experts must have one width, got {sorted(widths)}.")
    if p.HasField("mlp"):
        return Tensor((mlp_units(p.mlp, "Gate mlp")[-1],))
    return Tensor((widths.pop() if widths else None,))
