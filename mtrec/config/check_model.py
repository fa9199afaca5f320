"""Validation of model_config: model_class against the model table, feature groups, the
towers, DNN settings, FM / linear logits, the model's own block (the check its row in
mtrec.models.registry names) and the backbone."""
from mtrec.config.accessors import model_message, task_towers
from mtrec.config.check_kd import check_kd
from mtrec.config.check_towers import check_towers
from mtrec.config.sizes import DenseSizes
from mtrec.config.source import Problems
from mtrec.protos import feature_pb2


def check_model(pipeline, inputs: dict, features: dict, p: Problems) -> DenseSizes:
    """`inputs` from check_data, `features` from check_features. Returns the model's dense
    networks and input width, for check_sizes."""
    if not pipeline.HasField("model_config"):
        p.error("the config has no model_config.")
        return DenseSizes([], 0, None)
    # The one import against the data flow: validation must know which models exist. The
    # table is TF-free; importing it here, not at the top, keeps mtrec.models out of
    # `import mtrec.config`.
    from mtrec.models import checks, registry
    model_config = pipeline.model_config
    _check_model_class(model_config, registry.model_classes(), p)
    groups = _check_groups(model_config, features, p)
    model = model_message(model_config)
    if model is None:
        return DenseSizes([], 0, None)
    which = model_config.WhichOneof("model")
    towers = task_towers(model_config)
    check_towers(pipeline, which, towers, inputs, p)
    check_kd(pipeline, checks.output_towers(which, towers), inputs, p)
    _check_dnns(model, towers, p)
    _check_deepfm_logits(which, model, features, groups, p)
    if model_config.seq_att_groups and which != "multi_tower":
        p.error("model_config.seq_att_groups are read by the din_towers / bst_towers of "
                "model_class MultiTowerDIN / MultiTowerBST; under other models put target "
                "attention in a feature group's `sequence_features`.", "seq_att_groups")
    context = checks.ModelContext(model_config, which, model, features, groups, towers)
    registry.MODELS[which].check(context, p)
    plan = None
    if model_config.HasField("backbone"):
        plan = _check_backbone(model_config, which, model, features, groups, towers, p)
    elif which == "model_params":
        p.error(f"model_class {model_config.model_class!r} builds its towers on a backbone; "
                "add `backbone { blocks { ... } }` (see docs/backbone.md).", "model_class")
    # MultiTowerDIN / MultiTowerBST look up hidden groups (their seq_att_groups) too.
    from mtrec.models.sequence_towers import tower_groups
    hidden = {g.group_name: g for g in tower_groups(model_config)}
    width, widest = _deep_width({**groups, **hidden}, features)
    return DenseSizes(checks.dense_parts(context, width, plan), width, widest)


def _deep_width(groups: dict, features: dict) -> tuple[int, tuple | None]:
    """(floats per example of the DEEP groups together, the widest input a net reads;
    (feature, width, (field, value)) of the widest feature in them)."""
    from mtrec.features.width import attention_widths, feature_width, is_wide
    total, widest = 0, None
    for group in groups.values():
        if is_wide(group):
            continue
        for att in group.sequence_features:
            total += sum(w for w in attention_widths(att, features) if w is not None)
        for name in group.feature_names:
            f = features.get(name)
            if f is None:
                continue
            width = feature_width(f, False)
            total += width
            if widest is None or width > widest[1]:
                field = ("embedding_dim" if width == f.embedding_dim and width
                         else "raw_input_dim")
                widest = (name, width, (field, str(width)))
    return total, widest


def _check_model_class(model_config, classes: dict, p: Problems) -> None:
    """model_class is known and agrees with the model block; `classes` maps each
    model_class to its `model_config` oneof member."""
    which = model_config.WhichOneof("model")
    model_class = model_config.model_class
    names = ", ".join(classes)
    if not model_class:
        p.error(f"model_config.model_class is missing; one of: {names}.", "model_config")
    elif model_class not in classes:
        p.error(f"model_class {model_class!r} is not a known model; known: {names}.",
                "model_class")
    elif which is None:
        p.error(f"model_class {model_class!r} needs a `{classes[model_class]} {{ ... }}` "
                "block in model_config.", "model_class")
    elif classes[model_class] != which:
        others = " or ".join(repr(k) for k, v in classes.items() if v == which)
        p.error(f"model_class {model_class!r} does not match the `{which}` block; use "
                f"`{classes[model_class]} {{ ... }}` or model_class {others}.", "model_class")


def _check_groups(model_config, features: dict, p: Problems) -> dict:
    """{group name: FeatureGroupConfig}, reporting bad groups."""
    groups = {}
    wide_and_deep = 0
    for group in model_config.feature_groups:
        if group.group_name in groups:
            p.error(f"feature group {group.group_name!r} is defined twice.", "group_name",
                    group.group_name)
        groups[group.group_name] = group
        if not group.feature_names:
            p.error(f"feature group {group.group_name!r} has no feature_names.", "group_name",
                    group.group_name)
        for name in group.feature_names:
            if name not in features:
                p.error(f"feature group {group.group_name!r} names feature {name!r}, which is "
                        "not defined in feature_configs.", "feature_names", name)
        _check_sequence_groups(group, features, p)
        if group.wide_deep == feature_pb2.WIDE_AND_DEEP:
            wide_and_deep += 1
            p.error(f"feature group {group.group_name!r}: wide_deep: WIDE_AND_DEEP (the group "
                    "feeds both the wide and the deep part) is not supported; list its features "
                    "in two groups, one with `wide_deep: WIDE` and one with `wide_deep: DEEP`.",
                    "wide_deep", "WIDE_AND_DEEP", nth=wide_and_deep)
    if not groups:
        p.error("model_config has no feature_groups.", "model_config")
    return groups


def _check_sequence_groups(group, features: dict, p: Problems) -> None:
    """SequenceFeatures in a group, and its sequence_features (target attentions): the
    features they name exist and have the right type, key and history widths agree."""
    from mtrec.features.width import is_wide
    FC = feature_pb2.FeatureConfig
    g = group.group_name

    def is_sequence(name):
        return name in features and features[name].feature_type == FC.SequenceFeature

    if is_wide(group):
        for name in group.feature_names:
            if is_sequence(name):
                p.error(f"feature group {g!r} is WIDE but lists SequenceFeature {name!r}; "
                        "sequences go in a DEEP group.", "feature_names", name)
        if group.sequence_features:
            p.error(f"feature group {g!r} is WIDE; sequence_features need a DEEP group.",
                    "sequence_features")
        return
    for k, att in enumerate(group.sequence_features):
        check_attention(att, f"feature group {g!r}, sequence_features {att.group_name or k!r}",
                        features, p)


def check_attention(att, label: str, features: dict, p: Problems,
                    block: str = "sequence_features") -> bool:
    """One SeqAttGroupConfig (a group's sequence_features entry, or a model-level
    seq_att_groups entry; `label` names it in messages, `block` is the field it is written
    in): its features exist and have the right types, key and history widths agree, its
    seq_dnn is valid. Returns whether its features are all known and of the right kind."""
    from mtrec.config.activations import keras_activation, unknown_activation
    from mtrec.features.width import feature_width
    FC = feature_pb2.FeatureConfig

    def is_sequence(name):
        return name in features and features[name].feature_type == FC.SequenceFeature

    if att.tf_summary:
        p.error(f"{label}: tf_summary (TensorBoard histograms of the sequence "
                "embeddings) is not supported by mtrec; remove it or set it to false.",
                "tf_summary", "true")
    if not att.seq_att_map:
        p.error(f"{label} has no seq_att_map; add `seq_att_map {{ key: ... hist_seq: ... }}`.",
                block)
        return False
    names = {field: [n for m in att.seq_att_map for n in getattr(m, field)]
             for field in ("key", "hist_seq", "aux_hist_seq")}
    for field in ("key", "hist_seq"):
        if not names[field]:
            p.error(f"{label}: seq_att_map needs at least one {field}.", "seq_att_map")
    ok = bool(names["key"] and names["hist_seq"])
    for field, listed in names.items():
        for name in listed:
            if name not in features:
                p.error(f"{label}: {field} {name!r} is not defined in feature_configs.",
                        field, name)
                ok = False
            elif field == "key" and is_sequence(name):
                p.error(f"{label}: key {name!r} is a SequenceFeature; the key is the "
                        "target item's feature (e.g. an IdFeature).", field, name)
                ok = False
            elif field != "key" and not is_sequence(name):
                p.error(f"{label}: {field} {name!r} is a "
                        f"{FC.FeatureType.Name(features[name].feature_type)}; it must be "
                        "a SequenceFeature.", field, name)
                ok = False
    if ok:
        key = sum(feature_width(features[n], False) for n in names["key"])
        hist = sum(feature_width(features[n], False) for n in names["hist_seq"])
        if key != hist and not att.allow_key_transform:
            p.error(f"{label}: the key is {key} wide ({' + '.join(names['key'])}) but the "
                    f"history {hist} ({' + '.join(names['hist_seq'])}); the widths must "
                    "agree, or set allow_key_transform: true to pad or project the key.",
                    "key", names["key"][0])
    dnn = att.seq_dnn
    if any(u == 0 for u in dnn.hidden_units):
        p.error(f"{label}: seq_dnn hidden_units must be positive.", "hidden_units")
    if len(dnn.dropout_ratio) not in (0, 1, len(dnn.hidden_units),
                                      len(dnn.hidden_units) - 1):
        p.error(f"{label}: seq_dnn dropout_ratio needs 1 or {len(dnn.hidden_units)} "
                "values.", "dropout_ratio")
    if any(not 0 <= r < 1 for r in dnn.dropout_ratio):
        p.error(f"{label}: seq_dnn dropout_ratio values must be in [0, 1).",
                "dropout_ratio")
    if keras_activation(dnn.activation) is None:
        p.error(f"{label}: seq_dnn {unknown_activation(dnn.activation)}", "activation",
                dnn.activation)
    return ok


def _check_dnns(model, towers: list, p: Problems) -> None:
    """Every DNN of the model block (and of its sub-messages, e.g. multi_tower's towers) and
    of its task towers."""
    dnn_fields = _nested_dnns(model, "")
    dnn_fields += [(f"{t.tower_name}.dnn", t.dnn) for t in towers]
    dnn_fields += [(f"{t.tower_name}.relation_dnn", t.relation_dnn) for t in towers
                   if t.HasField("relation_dnn")]
    for name, dnn in dnn_fields:
        if any(u == 0 for u in dnn.hidden_units):
            p.error(f"{name}: hidden_units must be positive.", "hidden_units")
        if len(dnn.dropout_ratio) not in (0, 1, len(dnn.hidden_units)):
            p.error(f"{name}: dropout_ratio needs 1 or {len(dnn.hidden_units)} values.",
                    "dropout_ratio")
        if any(not 0 <= r < 1 for r in dnn.dropout_ratio):
            p.error(f"{name}: dropout_ratio values must be in [0, 1).", "dropout_ratio")


def _nested_dnns(message, prefix: str) -> list:
    """[(name, DNN)] of the DNN fields set in a message and, recursively, in its
    sub-messages but task towers (checked with the towers)."""
    found = []
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is None or kind.name == "TaskTower":
            continue
        repeated = (field.is_repeated if hasattr(field, "is_repeated")
                    else field.label == field.LABEL_REPEATED)
        for i, item in enumerate(value if repeated else [value]):
            name = f"{prefix}{field.name}" + (f"[{i}]" if repeated else "")
            if kind.name == "DNN":
                found.append((name, item))
            elif kind.full_name.startswith("mtrec."):
                found += _nested_dnns(item, name + ".")
    return found


def _check_deepfm_logits(which: str, model, features: dict, groups: dict,
                         p: Problems) -> None:
    """use_linear_logits reads the WIDE groups; use_fm_logits pairs the DEEP groups'
    embeddings, so they must share one width."""
    if getattr(model, "use_linear_logits", False) and not any(
            g.wide_deep == feature_pb2.WIDE for g in groups.values()):
        p.error(f"{which}.use_linear_logits needs a feature group with wide_deep: WIDE "
                "(its features get the linear weights).", "use_linear_logits")
    if not getattr(model, "use_fm_logits", False):
        return
    from mtrec.features.width import is_raw_values
    widths = {}
    for group in groups.values():
        if group.wide_deep == feature_pb2.WIDE:
            continue
        for name in group.feature_names:
            f = features.get(name)
            if f is not None and not is_raw_values(f):
                widths.setdefault(f.embedding_dim, name)
    if not widths:
        p.error(f"{which}.use_fm_logits needs embedded features in a DEEP group.",
                "use_fm_logits")
    elif len(widths) > 1:
        named = ", ".join(f"{n!r} ({d})" for d, n in sorted(widths.items()))
        p.error(f"{which}.use_fm_logits needs one embedding_dim for all embedded DEEP "
                f"features; they differ: {named}.", "use_fm_logits")


def _check_backbone(model_config, which: str, model, features: dict, groups: dict, towers,
                    p: Problems):
    """The backbone's blocks (names, inputs, cycles, registered layers and their params,
    whether each block's input fits its layer) and whether its output fits the model;
    returns the backbone's plan."""
    # The backbone's planning is TF-free; imported here as it is only needed with a backbone.
    from mtrec.backbone.plan import plan as plan_backbone, sequence_group_widths
    from mtrec.backbone.specs import Tensor, describe
    from mtrec.features.width import group_widths
    wide_dim = len(towers) if getattr(model, "use_linear_logits", False) else 1
    plan = plan_backbone(model_config.backbone, group_widths(groups, features, wide_dim),
                         sequence_group_widths(groups, features))
    for message, field, value, nth in plan.errors:
        p.error(message, field, value, nth)
    for message, field, value, nth in plan.warnings:
        p.warn(message, field, value)
    out = plan.output
    if plan.errors or out is None:
        return plan
    where = "output_blocks" if plan.as_list else "backbone"
    described = describe(out)
    if which == "model_params" and model_config.model_class == "MultiTaskModel":
        if isinstance(out, list):
            if len(out) != len(towers):
                p.error(f"the backbone gives {len(out)} outputs ({described}) but model_params "
                        f"has {len(towers)} task_towers; tower i reads output i, so the counts "
                        "must agree.", where)
                return plan
            items = out
        else:
            items = [out]
    elif which == "model_params":
        items = [out[0]] if isinstance(out, list) and len(out) == 1 else [out]
    else:
        items = [out]
        if which == "esmm" and model.groups:
            p.error("esmm.groups reads feature groups directly, so a backbone would be unused; "
                    "remove esmm.groups or the backbone.", "backbone")
    for item in items:
        if not isinstance(item, Tensor) or len(item.shape) != 1:
            what = ("each task tower reads one (batch, d) tensor" if which == "model_params"
                    else f"under `{which}` the backbone output replaces the feature-group "
                    "input, so it must be one (batch, d) tensor")
            p.error(f"the backbone output does not fit the model: {what}, got {described}.",
                    where)
            break
    return plan

