"""Config checks of the multimodal encoders (CMBF, UNITER, DBMTL's bottom_cmbf /
bottom_uniter), without TensorFlow: their fixed feature groups (mtrec.models.multimodal)
and the settings mtrec.layers.cmbf / mtrec.layers.uniter would reject when built."""
from mtrec.config.activations import keras_activation, unknown_activation
from mtrec.config.source import Problems
from mtrec.features.width import feature_width, is_wide
from mtrec.protos import feature_pb2

FC = feature_pb2.FeatureConfig
MODAL_GROUPS = ("image", "general", "text")
OTHER_GROUP = "other"


def check_multimodal(m, p: Problems, kind: str, config, label: str) -> None:
    """`m` a checks.ModelContext, `kind` "cmbf" or "uniter", `config` its CMBFTower /
    UniterTower, `label` its place in the config (e.g. "cmbf.config") for messages."""
    block = label.split(".")[-1]
    groups = m.groups
    modal = [g for g in MODAL_GROUPS if g in groups]
    known = MODAL_GROUPS + (OTHER_GROUP,)
    if not modal and OTHER_GROUP not in groups:
        p.error(f"{label} reads the feature groups {', '.join(known)}; add at least one of "
                "them.", block)
        return
    for name, group in groups.items():
        if name not in known:
            if is_wide(group) and getattr(m.params, "use_linear_logits", False):
                continue  # the linear logits read it
            p.warn(f"{label} reads only the feature groups {', '.join(known)}; feature group "
                   f"{name!r} is unused.", "group_name", name)
            continue
        if is_wide(group):
            p.error(f"{label}: feature group {name!r} must be wide_deep: DEEP.", "group_name",
                    name)
        if group.sequence_features:
            p.error(f"{label}: feature group {name!r} has sequence_features, which {kind} does "
                    "not read; list SequenceFeatures in the 'text' group instead.",
                    "group_name", name)
    widths = {g: _widths(m, p, label, g) for g in MODAL_GROUPS if g in groups}
    if OTHER_GROUP not in groups and config.HasField("other_feature_dnn"):
        p.warn(f"{label}.other_feature_dnn has no effect without a feature group 'other'.",
               "other_feature_dnn")
    if kind == "cmbf":
        _check_cmbf(p, config, label, widths)
    else:
        _check_uniter(p, config, label, widths)
    uses_positions = config.use_position_embeddings and (
        "text" in widths or (kind == "uniter" and "image" in widths))
    if uses_positions and config.max_position_embeddings >= 1:
        _check_positions(m, p, kind, config, label, widths)


def _listing(m, group: str, name: str) -> tuple:
    """(field, value, nth) of `name` in the feature_names of `group` (earlier groups may
    list it too)."""
    nth = 1
    for g in m.config.feature_groups:
        if g.group_name == group:
            break
        nth += list(g.feature_names).count(name)
    return "feature_names", name, nth


def _widths(m, p: Problems, label: str, group: str) -> list:
    """The widths of a group's known features; errors for features of the wrong kind, and
    for image / general features of several widths (they are stacked as tokens)."""
    out = []
    for name in m.groups[group].feature_names:
        f = m.features.get(name)
        if f is None:
            continue  # reported by the feature-group check
        sequence = f.feature_type == FC.SequenceFeature
        if group == "text" and not sequence:
            p.error(f"{label}: the 'text' group holds SequenceFeatures (token ids, one token "
                    f"per position); {name!r} is not one: move it to the 'general' group.",
                    *_listing(m, group, name))
            continue
        if group != "text" and sequence:
            p.error(f"{label}: SequenceFeature {name!r} belongs in the 'text' group, not "
                    f"{group!r}.", *_listing(m, group, name))
            continue
        width = feature_width(f, False)
        if width < 1:
            p.error(f"{label}: feature {name!r} in group {group!r} has width 0; set its "
                    "embedding_dim (or raw_input_dim for raw values).",
                    *_listing(m, group, name))
            continue
        out.append((name, width))
    if group != "text" and len({w for _, w in out}) > 1:
        named = ", ".join(f"{n!r} ({w})" for n, w in out)
        p.error(f"{label}: the features of group {group!r} become tokens of one tensor, so "
                f"they need one width; they differ: {named}.", "group_name", group)
    return out


def _check_rates(p: Problems, config, label: str, fields) -> None:
    for field in fields:
        value = getattr(config, field)
        if not 0.0 <= value < 1.0:
            p.error(f"{label}.{field} must be in [0, 1), got {value:g}.", field)


def _at_least_one(p: Problems, config, label: str, field: str, why: str) -> bool:
    if getattr(config, field) < 1:
        p.error(f"{label}.{field} must be at least 1 ({why}).",
                field if config.HasField(field) else label.split(".")[-1])
        return False
    return True


def _check_cmbf(p: Problems, config, label: str, widths: dict) -> None:
    _check_rates(p, config, label, ("hidden_dropout_prob", "attention_probs_dropout_prob",
                                    "text_seq_emb_dropout_prob"))
    heads = config.multi_head_num
    if not _at_least_one(p, config, label, "multi_head_num", "attention heads"):
        heads = 1
    image, text = "image" in widths, "general" in widths or "text" in widths
    if image:
        count = len(widths["image"])
        width = widths["image"][0][1] if widths["image"] else 0
        if config.image_self_attention_layer_num == 0:
            _at_least_one(p, config, label, "image_cross_head_size",
                          "without image self-attention layers the image is projected to "
                          "multi_head_num * image_cross_head_size values")
        else:
            hidden = config.image_head_size * config.image_multi_head_num
            if hidden < 1:
                p.error(f"{label}: image_head_size and image_multi_head_num must be at least "
                        "1 (the image encoder's width is their product).", "image_head_size")
            elif hidden % heads:
                p.error(f"{label}: the image encoder's width image_head_size * "
                        f"image_multi_head_num = {hidden} must be a multiple of "
                        f"multi_head_num {heads}.", "multi_head_num")
            if count == 1 and config.image_feature_patch_num > 1:
                if width and width % config.image_feature_patch_num:
                    p.error(f"{label}.image_feature_patch_num "
                            f"{config.image_feature_patch_num} must divide the image "
                            f"feature's width {width}.", "image_feature_patch_num")
            elif count == 1:
                _at_least_one(p, config, label, "image_feature_dim",
                              "one image feature with image_feature_patch_num 1 becomes "
                              "image_feature_dim tokens")
    if text:
        hidden = config.text_head_size * config.text_multi_head_num
        if hidden < 1:
            p.error(f"{label}: general or text features need text_head_size and "
                    "text_multi_head_num of at least 1 (the text encoder's width is their "
                    "product).", "text_head_size" if config.HasField("text_head_size")
                    else label.split(".")[-1])
        elif config.text_self_attention_layer_num and hidden % heads:
            p.error(f"{label}: the text encoder's width text_head_size * text_multi_head_num "
                    f"= {hidden} must be a multiple of multi_head_num {heads}.",
                    "multi_head_num")
    if image and text and config.cross_modal_layer_num:
        for field in ("image_cross_head_size", "text_cross_head_size"):
            _at_least_one(p, config, label, field, "the cross-modal layers' head size")
    if "text" in widths and config.use_position_embeddings:
        _at_least_one(p, config, label, "max_position_embeddings",
                      "use_position_embeddings adds one per text token position")


def _check_uniter(p: Problems, config, label: str, widths: dict) -> None:
    if not any(g in widths for g in MODAL_GROUPS):
        return  # only the "other" group: no encoder
    ok = all([_at_least_one(p, config, label, f, why) for f, why in (
        ("hidden_size", "the width of every token"),
        ("num_hidden_layers", "encoder layers"),
        ("num_attention_heads", "attention heads"),
        ("intermediate_size", "the feed-forward width"))])
    if ok and config.hidden_size % config.num_attention_heads:
        p.error(f"{label}.hidden_size {config.hidden_size} must be a multiple of "
                f"num_attention_heads {config.num_attention_heads}.", "num_attention_heads")
    if keras_activation(config.hidden_act) is None:
        p.error(f"{label}.hidden_act: {unknown_activation(config.hidden_act)}", "hidden_act")
    _check_rates(p, config, label, ("hidden_dropout_prob", "attention_probs_dropout_prob"))
    if config.initializer_range <= 0:
        p.error(f"{label}.initializer_range must be > 0.", "initializer_range")
    if config.use_position_embeddings and ("image" in widths or "text" in widths):
        _at_least_one(p, config, label, "max_position_embeddings",
                      "use_position_embeddings adds one per image feature and text position")


def _check_positions(m, p: Problems, kind: str, config, label: str, widths: dict) -> None:
    """Position tables cover every image feature (UNITER) and every text feature's
    max_seq_len (EasyRec's rule); a text feature without max_seq_len is cut."""
    limit = config.max_position_embeddings
    field = "max_position_embeddings" if config.HasField("max_position_embeddings") \
        else "use_position_embeddings"
    images = len(widths.get("image", []))
    if kind == "uniter" and images > limit:
        p.error(f"{label}.max_position_embeddings ({limit}) must be at least the number of "
                f"image features ({images}).", field)
    for name, _ in widths.get("text", []):
        max_seq_len = m.features[name].max_seq_len
        if max_seq_len > limit:
            p.error(f"{label}.max_position_embeddings ({limit}) must be at least the "
                    f"max_seq_len of text feature {name!r} ({max_seq_len}).", field)
        elif not max_seq_len:
            p.warn(f"{label}: text feature {name!r} has no max_seq_len; its sequences keep "
                   f"their first max_position_embeddings ({limit}) tokens.", "feature_names",
                   name)


def check_dbmtl_bottom(m, p: Problems) -> None:
    """DBMTL's bottom_cmbf / bottom_uniter replace the concatenated DEEP groups: exclusive
    with each other, with bottom_dnn and with a backbone."""
    params = m.params
    set_fields = [f for f in ("bottom_cmbf", "bottom_uniter") if params.HasField(f)]
    if not set_fields:
        return
    if len(set_fields) > 1:
        p.error("dbmtl: give one of bottom_cmbf and bottom_uniter.", "bottom_uniter")
    if params.HasField("bottom_dnn"):
        p.error(f"dbmtl: {set_fields[0]} replaces the bottom, so bottom_dnn would be unused "
                "(EasyRec ignores it); remove bottom_dnn, or put its layers in the task "
                "towers' dnn.", "bottom_dnn")
    if m.config.HasField("backbone"):
        p.error(f"dbmtl: {set_fields[0]} and a backbone both make the towers' input; remove "
                "one.", "backbone")
    field = set_fields[0]
    check_multimodal(m, p, field[len("bottom_"):], getattr(params, field), f"dbmtl.{field}")
