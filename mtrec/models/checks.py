"""Each model's own config checks, without TensorFlow: config validation runs the one its
row in mtrec.models.registry names, with the config's problems collector, so every error
names file:line before a graph is built."""
import dataclasses
from typing import Any

from mtrec.config.accessors import SIDE_GROUP_FIELDS
from mtrec.config.source import Problems
from mtrec.protos import feature_pb2, loss_pb2


@dataclasses.dataclass
class ModelContext:
    """What a model check reads, from a config whose defaults are filled in."""
    config: Any      # ModelConfig
    which: str       # the `model_config` oneof member, e.g. "mmoe"
    params: Any      # its message (`mmoe { ... }`, `model_params` ...)
    features: dict   # {feature name: FeatureConfig}
    groups: dict     # {group name: FeatureGroupConfig}
    towers: list     # task towers, in output order


def check_nothing(m: ModelContext, p: Problems) -> None:
    """Models whose block holds nothing beyond what every model has (towers, DNNs)."""


def check_mmoe(m: ModelContext, p: Problems) -> None:
    experts = m.params.experts
    if not experts:
        _check_num_expert(m, p)
        return
    if m.params.HasField("expert_dnn") or m.params.num_expert:
        p.error("mmoe: give either `experts { ... }` (EasyRec's deprecated form, one DNN per "
                "expert) or expert_dnn and num_expert, not both.", "experts")
    widths = []
    for i, expert in enumerate(experts):
        if not expert.dnn.hidden_units:
            p.error(f"mmoe experts[{i}] ({expert.expert_name!r}) needs dnn {{ hidden_units }}.",
                    "experts", None, i + 1)
        else:
            widths.append(expert.dnn.hidden_units[-1])
    if len(set(widths)) > 1:
        p.error(f"mmoe experts must end with one width (the gates mix their outputs), got "
                f"{', '.join(map(str, widths))}.", "experts")


def check_esmm(m: ModelContext, p: Problems) -> None:
    for attr in ("ctr_tower", "cvr_tower"):
        if not m.params.HasField(attr):
            p.error(f"esmm needs a {attr}.", "esmm")
    for g in m.params.groups:
        if g.input not in m.groups:
            p.error(f"esmm groups: input {g.input!r} is not a feature group.", "input", g.input)


def check_ple(m: ModelContext, p: Problems) -> None:
    """Each extraction level has experts, their nets, and one output width for its gates."""
    networks = m.params.extraction_networks
    if not networks:
        p.error("ple needs at least one `extraction_networks { ... }` level.", "ple")
    for k, net in enumerate(networks):
        where = f"ple.extraction_networks[{k}]" + (f" ({net.network_name!r})"
                                                   if net.network_name else "")
        at = ("extraction_networks", None, k + 1)
        if net.expert_num_per_task == 0 and net.share_num == 0:
            p.error(f"{where} has no experts: set expert_num_per_task or share_num to at "
                    "least 1.", *at)
            continue
        for count, field in ((net.expert_num_per_task, "task_expert_net"),
                             (net.share_num, "share_expert_net")):
            if count and not getattr(net, field).hidden_units:
                p.error(f"{where} needs {field} {{ hidden_units: ... }} for its {count} "
                        "expert(s).", *at)
        task, share = net.task_expert_net.hidden_units, net.share_expert_net.hidden_units
        if net.expert_num_per_task and net.share_num and task and share and \
                task[-1] != share[-1]:
            p.error(f"{where}: task_expert_net and share_expert_net must end with the same "
                    f"width (one gate mixes both), got {task[-1]} and {share[-1]}.", *at)


def check_dbmtl(m: ModelContext, p: Problems) -> None:
    model = m.params
    if model.num_expert > 0 and not model.expert_dnn.hidden_units:
        p.error("dbmtl.num_expert > 0 needs expert_dnn { hidden_units }.", "num_expert")
    if model.HasField("expert_dnn") and model.num_expert == 0:
        p.error("dbmtl.expert_dnn needs num_expert >= 1 (0 means no MMoE; remove "
                "expert_dnn).", "expert_dnn")
    _check_relations(m.towers, model.ait_label_constraint_weight, p)
    from mtrec.models.multimodal_checks import check_dbmtl_bottom
    check_dbmtl_bottom(m, p)


def check_pepnet(m: ModelContext, p: Problems) -> None:
    _check_domain_model(m, p)
    model = m.params
    if model.ppnet and not model.prior_group_name:
        p.error("pepnet.ppnet needs prior_group_name: the feature group of user/item/author "
                "ids that personalises the towers (or set ppnet: false).", "ppnet")
    if model.ppnet and m.towers:
        # PPNet runs every tower's hidden layers as one network.
        dnns = [t.dnn for t in m.towers]
        settings = [(d.activation, d.use_bn, tuple(d.dropout_ratio)) for d in dnns]
        differs = next((i for i, s in enumerate(settings) if s != settings[0]), None)
        if differs is not None:
            p.error("pepnet with ppnet: every task tower's dnn must use the same activation, "
                    "use_bn and dropout_ratio (PPNet gates all towers' layers together).",
                    "task_towers", None, differs + 1)
        elif len(set(dnns[0].dropout_ratio)) > 1:
            p.error("pepnet with ppnet: give one dropout_ratio per tower dnn.", "task_towers")


def check_apg(m: ModelContext, p: Problems) -> None:
    _check_domain_model(m, p)
    _check_hidden_units(m, p)
    model = m.params
    if model.mf_k == 0 or model.mf_p == 0:
        p.error("apg.mf_k and apg.mf_p must be at least 1.", "mf_k")
    if model.condition == model.MIX and not model.condition_group_name:
        p.error("apg.condition MIX needs condition_group_name: the feature group "
                "(user/item ids) mixed with the domain embedding.", "condition")


def check_m2m(m: ModelContext, p: Problems) -> None:
    _check_num_expert(m, p)
    _check_domain_model(m, p)
    for field in ("view_dim", "scenario_dim", "meta_unit_depth"):
        if getattr(m.params, field) == 0:
            p.error(f"m2m.{field} must be at least 1.", field)
    _check_expert_dnn(m, p)


def check_star(m: ModelContext, p: Problems) -> None:
    _check_domain_model(m, p)
    _check_hidden_units(m, p)


def check_hmoe(m: ModelContext, p: Problems) -> None:
    _check_num_expert(m, p)
    _check_domain_model(m, p)
    _check_expert_dnn(m, p)


def check_model_params(m: ModelContext, p: Problems) -> None:
    """MultiTaskModel / RankModel: ModelParams fields (a RankModel has one tower, which
    fill_defaults adds when model_params has none), and the towers' relations."""
    params, config = m.params, m.config
    if params.outputs:
        p.error("model_params.outputs is not supported by mtrec; remove it (every tower's "
                "logits_/probs_/y_ outputs are exported).", "outputs")
    if config.model_class == "RankModel":
        _check_rank_tower(m, p, "use model_class MultiTaskModel for several tasks")
    else:
        for field in ("loss_type", "num_class"):
            if config.HasField(field):
                p.warn(f"model_config.{field} applies to RankModel only; MultiTaskModel "
                       "towers set their own.", field)
    _check_relations(m.towers, 0.0, p)


# ---------------------------------------------------------------------------
# Single-output rank models (EasyRec's MultiTower, DeepFM, WideAndDeep, DCN, DLRM).


def _check_rank_tower(m: ModelContext, p: Problems, several: str) -> None:
    """A rank model has one tower (config defaults make it from model_config's loss_type,
    num_class and losses); a tower the config gives must agree with those."""
    params, config = m.params, m.config
    name = config.model_class
    if len(params.task_towers) > 1:
        p.error(f"{name} has one output but {m.which} has {len(params.task_towers)} "
                f"task_towers; {several}.", "task_towers")
    elif params.task_towers:
        tower = params.task_towers[0]
        for field in ("loss_type", "num_class"):
            if config.HasField(field) and getattr(config, field) != getattr(tower, field):
                p.error(f"{name}: model_config.{field} differs from the {field} of its "
                        f"{m.which} tower; set it in one place.", field)


def _check_rank(m: ModelContext, p: Problems) -> None:
    """What every classic rank model shares: one tower, no backbone."""
    _check_rank_tower(m, p, "use a multi-task model (e.g. SimpleMultiTask) for several tasks")
    if m.config.HasField("backbone"):
        p.error(f"{m.config.model_class} reads its feature groups directly, so a backbone "
                "would be unused; remove the backbone, or use model_class RankModel to build "
                "on it.", "backbone")


def _check_group(m: ModelContext, p: Problems, name: str, wide: bool, role: str) -> bool:
    """The feature group `name` the model reads (EasyRec's fixed names) exists and is WIDE
    or DEEP as its role needs; returns whether it does."""
    kind = "WIDE" if wide else "DEEP"
    group = m.groups.get(name)
    if group is None:
        p.error(f"{m.config.model_class} reads the feature group {name!r} ({role}); add "
                f"`feature_groups {{ group_name: \"{name}\" feature_names: ... wide_deep: "
                f"{kind} }}`.", "model_class")
        return False
    if (group.wide_deep == feature_pb2.WIDE) != wide:
        p.error(f"{m.config.model_class}: feature group {name!r} ({role}) must be "
                f"wide_deep: {kind}.", "group_name", name)
        return False
    return True


def _group_input(m: ModelContext, p: Problems, label: str, name: str) -> None:
    """A tower's `input` names a feature group."""
    if name not in m.groups:
        p.error(f"{label}: input {name!r} is not a feature group; groups: "
                f"{', '.join(m.groups)}.", "input", name)


def _embedding_widths(m: ModelContext, group_name: str) -> dict:
    """{width: first feature} of the group's embedded features (RawFeatures without
    boundaries give values, not embeddings, and are left out)."""
    from mtrec.features.width import feature_width
    widths = {}
    for name in m.groups[group_name].feature_names:
        f = m.features.get(name)
        if f is not None and not (f.feature_type == feature_pb2.FeatureConfig.RawFeature
                                  and not f.boundaries):
            widths.setdefault(feature_width(f, False), name)
    return widths


def check_multi_tower(m: ModelContext, p: Problems) -> None:
    """towers read feature groups; din_towers / bst_towers (for MultiTowerDIN /
    MultiTowerBST) each read their own seq_att_groups entry, which must be valid."""
    from mtrec.config.check_model import check_attention
    from mtrec.features.width import feature_width
    from mtrec.models.sequence_towers import (TOWER_CLASSES, attention_names, built_towers,
                                              din_attention)
    _check_rank(m, p)
    params, config = m.params, m.config
    din_towers, bst_towers = (built_towers(config, f) for f in TOWER_CLASSES)
    if not (params.towers or din_towers or bst_towers):
        p.error("multi_tower needs at least one `towers { input: ... dnn { ... } }`.",
                "multi_tower")
    seen = set()
    for t in params.towers:
        _group_input(m, p, "multi_tower towers", t.input)
        if t.input in seen:
            p.error(f"multi_tower towers: two towers read feature group {t.input!r}; a group "
                    "has one tower (its layers are named after it).", "input", t.input, 2)
        seen.add(t.input)
    for field, wanted in TOWER_CLASSES.items():
        if getattr(params, field) and config.model_class != wanted:
            p.warn(f"multi_tower.{field} are built by model_class {wanted} only; "
                   f"{config.model_class} ignores them (as EasyRec does).", field)
    entries = {}
    for k, att in enumerate(config.seq_att_groups):
        name = att.group_name
        if not name:
            p.error(f"seq_att_groups[{k}] needs a group_name (the din_towers / bst_towers "
                    "input that reads it).", "seq_att_groups", None, k + 1)
        elif name in entries:
            p.error(f"seq_att_groups {name!r} is defined twice.", "group_name", name, 2)
        elif name in m.groups:
            p.error(f"seq_att_groups {name!r} has the name of a feature group; give it its "
                    "own group_name.", "group_name", name)
        else:
            entries[name] = att
    used = set()
    for field, towers in (("din_towers", din_towers), ("bst_towers", bst_towers)):
        for t in towers:
            if t.input not in entries:
                p.error(f"multi_tower.{field}: input {t.input!r} is not the group_name of a "
                        f"seq_att_groups entry; seq_att_groups: "
                        f"{', '.join(entries) or 'none'}.", "input", t.input)
            elif t.input in used:
                p.error(f"seq_att_groups {t.input!r} is read by two din_towers / bst_towers; "
                        "give each tower its own entry.", "input", t.input, 2)
            used.add(t.input)
    for name in entries:
        if name not in used:
            p.warn(f"seq_att_groups {name!r} is read by no din_towers / bst_towers entry, so "
                   "it is unused.", "group_name", name)
    for t in din_towers:
        att = entries.get(t.input)
        if att is None:
            continue
        if att.HasField("seq_dnn") and t.HasField("dnn"):
            p.error(f"seq_att_groups {t.input!r}: both its seq_dnn and its din_towers dnn set "
                    "the attention MLP; keep the din_towers dnn.", "seq_dnn")
        check_attention(din_attention(att, t), f"seq_att_groups {t.input!r}", m.features, p,
                        "seq_att_groups")
    for t in bst_towers:
        att = entries.get(t.input)
        if att is None:
            continue
        label = f"bst_towers {t.input!r}"
        ok = check_attention(att, f"seq_att_groups {t.input!r}", m.features, p,
                             "seq_att_groups")
        if attention_names(att, "aux_hist_seq"):
            p.error(f"{label}: aux_hist_seq is not read by MultiTowerBST (its tokens are the "
                    "hist_seq items and the key); remove it.", "aux_hist_seq")
        if t.seq_len < 2:
            p.error(f"{label}: seq_len must be at least 2 (seq_len - 1 history items and the "
                    "key).", "seq_len", str(t.seq_len))
        if t.multi_head_size < 1:
            p.error(f"{label}: multi_head_size must be at least 1.", "multi_head_size")
        if not ok:
            continue
        key, hist = (sum(feature_width(m.features[n], False)
                         for n in attention_names(att, field)) for field in ("key", "hist_seq"))
        if key != hist:
            p.error(f"{label}: the key ({key} wide) is a token next to the history items "
                    f"({hist} wide), so the widths must agree; allow_key_transform is not "
                    "supported by MultiTowerBST.", "input", t.input)
        elif t.multi_head_size and hist % t.multi_head_size:
            p.error(f"{label}: multi_head_size {t.multi_head_size} must divide the history's "
                    f"embedding width {hist}.", "multi_head_size", str(t.multi_head_size))


def check_deepfm(m: ModelContext, p: Problems) -> None:
    """Groups "wide" (WIDE) and "deep" (and "fm" if given); the FM's embeddings share one
    width; without final_dnn the wide part is a logit per class."""
    _check_rank(m, p)
    params = m.params
    _check_group(m, p, "wide", True, "the linear part")
    has_deep = _check_group(m, p, "deep", False, "the DNN input")
    fm_group = "fm" if "fm" in m.groups else "deep"
    if fm_group == "fm":
        has_deep = _check_group(m, p, "fm", False, "the FM's embeddings")
    if has_deep and all(n in m.features for n in m.groups[fm_group].feature_names):
        widths = _embedding_widths(m, fm_group)
        if not widths:
            p.error(f"deepfm: feature group {fm_group!r} has no embedded features for the "
                    "FM.", "group_name", fm_group)
        elif len(widths) > 1:
            named = ", ".join(f"{n!r} ({d})" for d, n in sorted(widths.items()))
            p.error(f"deepfm: the FM pairs the embeddings of feature group {fm_group!r}, so "
                    f"they need one embedding_dim; they differ: {named}.", "group_name",
                    fm_group)
    num_class = m.towers[0].num_class if m.towers else 1
    if params.wide_output_dim < 1:
        p.error("deepfm.wide_output_dim must be at least 1.", "wide_output_dim")
    elif not params.final_dnn.hidden_units and params.wide_output_dim != num_class:
        p.error(f"deepfm without final_dnn adds the wide part to the logits, so "
                f"wide_output_dim ({params.wide_output_dim}) must equal num_class "
                f"({num_class}); set wide_output_dim: {num_class} or add a final_dnn.",
                "wide_output_dim" if params.HasField("wide_output_dim") else "deepfm")
    for field in ("wide_regularization", "dense_regularization"):
        if params.HasField(field):
            p.warn(f"deepfm.{field} is deprecated and has no effect (as in EasyRec); use "
                   "l2_regularization.", field)


def check_wide_and_deep(m: ModelContext, p: Problems) -> None:
    """Groups "wide" (WIDE) and "deep"; without final_dnn num_class replaces
    wide_output_dim."""
    _check_rank(m, p)
    params = m.params
    _check_group(m, p, "wide", True, "the linear part")
    _check_group(m, p, "deep", False, "the DNN input")
    num_class = m.towers[0].num_class if m.towers else 1
    if params.final_dnn.hidden_units:
        if params.wide_output_dim < 1:
            p.error("wide_and_deep.wide_output_dim must be at least 1.", "wide_output_dim")
    elif params.HasField("wide_output_dim") and params.wide_output_dim != num_class:
        p.warn(f"wide_and_deep without final_dnn adds the wide part to the logits, so it has "
               f"num_class ({num_class}) weights per id; wide_output_dim "
               f"{params.wide_output_dim} is not used (as in EasyRec).", "wide_output_dim")


def check_dcn(m: ModelContext, p: Problems) -> None:
    """A deep tower and a cross tower, each reading a feature group."""
    _check_rank(m, p)
    params = m.params
    for field in ("deep_tower", "cross_tower"):
        if not params.HasField(field):
            p.error(f"dcn needs a {field} {{ input: ... }}.", "dcn")
        else:
            _group_input(m, p, f"dcn.{field}", getattr(params, field).input)


def check_dlrm(m: ModelContext, p: Problems) -> None:
    """Groups "dense" and "sparse"; "dot" pairs vectors of one width (the sparse
    embeddings and bot_dnn's output)."""
    from mtrec.features.width import group_widths
    _check_rank(m, p)
    params = m.params
    has_dense = _check_group(m, p, "dense", False, "the bottom MLP's input")
    has_sparse = _check_group(m, p, "sparse", False, "the embeddings")
    op = params.arch_interaction_op
    if op not in ("dot", "cat"):
        p.error(f"dlrm.arch_interaction_op must be \"dot\" or \"cat\", got {op!r}.",
                "arch_interaction_op", op)
        return
    if op != "dot" or not has_sparse:
        return
    widths = group_widths({"sparse": m.groups["sparse"]}, m.features)["sparse"]
    known = [w for w in widths if w is not None]
    if len(set(known)) > 1:
        p.error(f"dlrm with arch_interaction_op \"dot\" takes the dot products of the sparse "
                f"group's vectors, so they need one width; got {sorted(set(known))}.",
                "group_name", "sparse")
        return
    bottom = params.bot_dnn.hidden_units
    if not known or not has_dense:
        return
    dense = bottom[-1] if bottom else sum(
        w or 0 for w in group_widths({"dense": m.groups["dense"]}, m.features)["dense"])
    if dense != known[0]:
        p.error(f"dlrm with arch_interaction_op \"dot\": the bot_dnn output ({dense} wide) is "
                f"dotted with the sparse embeddings ({known[0]} wide); make the last "
                f"bot_dnn hidden_units {known[0]}.", "bot_dnn")


def check_cmbf(m: ModelContext, p: Problems) -> None:
    """CMBF: one tower, no backbone, its feature groups and encoder settings."""
    from mtrec.models.multimodal_checks import check_multimodal
    _check_rank(m, p)
    check_multimodal(m, p, "cmbf", m.params.config, "cmbf.config")


def check_uniter(m: ModelContext, p: Problems) -> None:
    """Uniter: one tower, no backbone, its feature groups and encoder settings."""
    from mtrec.models.multimodal_checks import check_multimodal
    _check_rank(m, p)
    check_multimodal(m, p, "uniter", m.params.config, "uniter.config")


def _check_num_expert(m: ModelContext, p: Problems) -> None:
    if m.params.num_expert == 0:
        p.error(f"{m.which}.num_expert must be at least 1.", "num_expert")


def _check_expert_dnn(m: ModelContext, p: Problems) -> None:
    if not m.params.expert_dnn.hidden_units:
        p.error(f"{m.which} needs expert_dnn {{ hidden_units }}.", m.which)


def _check_hidden_units(m: ModelContext, p: Problems) -> None:
    if not m.params.hidden_units:
        p.error(f"{m.which} needs hidden_units (the widths of its layers).", m.which)
    if any(u == 0 for u in m.params.hidden_units):
        p.error(f"{m.which}.hidden_units must be positive.", "hidden_units")


def _check_domain_model(m: ModelContext, p: Problems) -> None:
    """Multi-scenario models: a domain feature with a finite id space, and their groups."""
    which, model, features, groups = m.which, m.params, m.features, m.groups
    name = model.domain_feature
    feature = features.get(name)
    if not name:
        p.error(f"{which} needs domain_feature: the IdFeature whose id is the scenario.", which)
    elif feature is None:
        p.error(f"{which}.domain_feature {name!r} is not a feature; features: "
                f"{', '.join(features)}.", "domain_feature", name)
    elif (feature.feature_type != feature_pb2.FeatureConfig.IdFeature
          or not (feature.num_buckets or feature.vocab_list or feature.vocab_file)):
        p.error(f"{which}.domain_feature {name!r} must be an IdFeature with num_buckets, "
                "vocab_list or vocab_file, so every domain has its own id (hashed ids "
                "would merge domains).", "domain_feature", name)
    elif feature.num_buckets > 1000 or len(feature.vocab_list) > 1000:
        p.error(f"{which}.domain_feature {name!r} has more than 1000 ids; per-domain "
                "parameters and metrics are meant for a handful of scenarios.",
                "domain_feature", name)
    for field in SIDE_GROUP_FIELDS:
        group = getattr(model, field, "")
        if group and group not in groups:
            p.error(f"{which}.{field} {group!r} is not a feature group; groups: "
                    f"{', '.join(groups)}.", field, group)
    side = {getattr(model, f, "") for f in SIDE_GROUP_FIELDS}
    deep = [g for g in groups.values() if g.wide_deep == feature_pb2.DEEP
            and g.group_name not in side]
    if not deep:
        p.error(f"{which} needs a DEEP feature group besides its prior group.", which)


def _check_relations(towers, constraint_weight: float, p: Problems) -> None:
    """DBMTL: relation_tower_names name other towers and form no cycle; AIT options fit."""
    by_name = {t.tower_name: t for t in towers}

    def where(child, parent):
        """(field, value, nth) of the relation_tower_names entry child -> parent."""
        before = towers[:next(i for i, t in enumerate(towers) if t is child)]
        nth = 1 + sum(parent in t.relation_tower_names for t in before)
        return "relation_tower_names", parent, nth

    edges = []
    for t in towers:
        name = t.tower_name
        for parent in t.relation_tower_names:
            if parent == name:
                p.error(f"tower {name!r} lists itself in relation_tower_names; a tower "
                        "cannot depend on itself.", *where(t, parent))
            elif parent not in by_name:
                p.error(f"tower {name!r}: relation tower {parent!r} is not a task tower; "
                        f"towers: {', '.join(by_name)}.", *where(t, parent))
            else:
                edges.append((t, by_name[parent]))
        if t.use_ait_module and t.HasField("relation_dnn"):
            p.error(f"tower {name!r}: use_ait_module and relation_dnn are exclusive (AITM "
                    "attention replaces the relation DNN); remove one.", "use_ait_module")
        if t.HasField("ait_project_dim") and not t.use_ait_module:
            p.warn(f"tower {name!r}: ait_project_dim has no effect without use_ait_module.",
                   "ait_project_dim")
        if t.use_ait_module and t.relation_tower_names and constraint_weight > 0:
            for other in [t] + [by_name[n] for n in t.relation_tower_names if n in by_name]:
                kinds = [l.loss_type for l in other.losses] or [other.loss_type]
                if other.num_class != 1 or any(k != loss_pb2.CLASSIFICATION for k in kinds):
                    p.error(f"tower {name!r}: the AITM label constraint compares the "
                            f"probabilities of {name!r} and its relation towers, so "
                            f"{other.tower_name!r} must be a binary CLASSIFICATION tower; or "
                            "set dbmtl.ait_label_constraint_weight: 0.", "use_ait_module")
    # Cycles: depth-first over child -> parent edges; report each closing edge once.
    parents = {t.tower_name: [q for c, q in edges if c is t] for t in towers}
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(t, path):
        state[t.tower_name] = 1
        for q in parents[t.tower_name]:
            if state.get(q.tower_name) == 1:
                start = next(i for i, x in enumerate(path) if x is q)
                cycle = [x.tower_name for x in path[start:]] + [t.tower_name, q.tower_name]
                p.error(f"tower {t.tower_name!r} lists {q.tower_name!r} in "
                        f"relation_tower_names, but {q.tower_name!r} depends on "
                        f"{t.tower_name!r}: the relations form a cycle "
                        f"({' -> '.join(cycle)}); remove one of them.", *where(t, q.tower_name))
            elif q.tower_name not in state:
                visit(q, path + [t])
        state[t.tower_name] = 2

    for t in towers:
        if t.tower_name not in state:
            visit(t, [])


# ---------------------------------------------------------------------------
# Dense sizes: every network of a model, counted from the config by multiplying (an
# expert DNN times num_expert), for the size and memory checks of mtrec.config.sizes.

# Width fields of a model block or backbone layer: each sizes a layer reading the input.
_WIDTH_FIELDS = ("gate_hidden_dim", "view_dim", "scenario_dim", "project_dim",
                 "projection_dim", "output_dim", "hidden_dim", "output_size",
                 "aggregation_size")


def _copies(message, field: str, num_tasks: int) -> tuple[int, tuple | None]:
    """How many copies of its net `field` a message builds, and the field that says so."""
    if field in ("expert_dnn", "expert_mlp"):
        return message.num_expert, ("num_expert", str(message.num_expert))
    if field == "task_expert_net":
        count = message.expert_num_per_task
        return count * max(num_tasks, 1), ("expert_num_per_task", str(count))
    if field == "share_expert_net":
        return message.share_num, ("share_num", str(message.share_num))
    return 1, None


def net_parts(message, name: str, width: int, num_tasks: int, copies: int = 1) -> list:
    """The Parts of every DNN / MLP inside `message` (recursively; not its task towers),
    each reading `width` features, with the expert counts and gates of the messages that
    hold them, a block's own hidden_units (built `copies` times) and width fields."""
    from mtrec.config.sizes import dense_layer_part, dnn_part
    fields = message.DESCRIPTOR.fields_by_name
    if "num_task" in fields and message.num_task:
        num_tasks = message.num_task
    parts = []
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is None or kind.name == "TaskTower" or not kind.full_name.startswith("mtrec."):
            continue
        repeated = (field.is_repeated if hasattr(field, "is_repeated")
                    else field.label == field.LABEL_REPEATED)
        for i, item in enumerate(value if repeated else [value]):
            label = f"{name}.{field.name}" + (f"[{i}]" if repeated else "")
            if kind.name in ("DNN", "MLP"):
                count, where = _copies(message, field.name, num_tasks)
                parts.append(dnn_part(label, item, width, count, where))
            else:
                parts += net_parts(item, label, width, num_tasks)
    if "num_expert" in fields and message.num_expert:
        parts.append(dense_layer_part(f"{name} gates", width, message.num_expert,
                                      max(num_tasks, 1),
                                      ("num_expert", str(message.num_expert))))
    if "hidden_units" in fields and "use_bn" not in fields and message.hidden_units:
        parts.append(dnn_part(f"{name}.hidden_units", message, width, copies,
                              ("domain_feature", None) if copies > 1 else None))
    for field in _WIDTH_FIELDS:
        if field in fields and getattr(message, field):
            units = getattr(message, field)
            parts.append(dense_layer_part(f"{name}.{field}", width, units,
                                          field=(field, str(units))))
    return parts


def _num_domains(m: ModelContext) -> int:
    feature = m.features.get(getattr(m.params, "domain_feature", ""))
    if feature is None:
        return 0
    return feature.num_buckets or (len(feature.vocab_list) + 1 if feature.vocab_list else 1)


def _output_width(params, width: int) -> int:
    """The width a model block hands its towers: its experts', bottom's or layers' last."""
    fields = params.DESCRIPTOR.fields_by_name
    nets = []
    if "extraction_networks" in fields and params.extraction_networks:
        last = params.extraction_networks[-1]
        nets += [last.task_expert_net, last.share_expert_net]
    if "expert_dnn" in fields and params.num_expert:
        nets.append(params.expert_dnn)
    if "bottom_dnn" in fields:
        nets.append(params.bottom_dnn)
    if "hidden_units" in fields:
        nets.append(params)
    # The rank models: the last of final_dnn (MultiTower, DCN ...), top_dnn (DLRM), dnn.
    nets += [getattr(params, f) for f in ("final_dnn", "top_dnn", "dnn") if f in fields]
    return next((n.hidden_units[-1] for n in nets if n.hidden_units), width)


def tower_parts(towers: list, width: int) -> list:
    """Each task tower's DNN, logits layer and relation DNN, reading `width` features."""
    from mtrec.config.sizes import dense_layer_part, dnn_part
    parts = []
    for t in towers:
        name = f"tower {t.tower_name!r}"
        parts.append(dnn_part(f"{name} dnn", t.dnn, width))
        out = t.dnn.hidden_units[-1] if t.dnn.hidden_units else width
        parts.append(dense_layer_part(f"{name} logits", out, t.num_class,
                                      field=("num_class", str(t.num_class))))
        if t.HasField("relation_dnn"):
            parts.append(dnn_part(f"{name} relation_dnn", t.relation_dnn,
                                  out * (1 + len(t.relation_tower_names))))
    return parts


def dense_parts(m: ModelContext, width: int, backbone_plan=None) -> list:
    """The dense Parts of a model whose DEEP feature groups give `width` features: its
    block's networks, its backbone's (from mtrec.backbone.plan), and its towers."""
    from mtrec.config.sizes import dnn_part
    num_tasks = len(m.towers)
    copies = _num_domains(m) + 1 if m.which == "star" else 1
    parts = net_parts(m.params, m.which, width, num_tasks, copies)
    tower_width = _output_width(m.params, width)
    if backbone_plan is not None:
        for block in backbone_plan.blocks:
            for (layer, _), spec in zip(block.layers, block.layer_specs):
                parts += net_parts(layer, f"backbone block {block.name!r}",
                                   _spec_width(spec) or width, num_tasks)
        backbone = m.config.backbone
        if backbone.HasField("top_mlp"):
            parts.append(dnn_part("backbone.top_mlp", backbone.top_mlp, width))
        out = backbone_plan.output
        tower_width = _spec_width(out[0] if isinstance(out, list) and out else out) or width
    return parts + tower_parts(m.towers, tower_width)


def _spec_width(spec) -> int | None:
    """Features per example of a backbone spec (a tensor's last axis, a list's sum)."""
    if isinstance(spec, list):
        widths = [_spec_width(s) for s in spec]
        return None if None in widths else sum(widths)
    width = getattr(spec, "width", None)
    return width if isinstance(width, int) else None


# ---------------------------------------------------------------------------
# AutoInt, FM, RocketLaunching (rank models).


def output_towers(which: str, towers: list) -> list:
    """The towers whose outputs a model gives: RocketLaunching's one tower twice, named
    "booster" and "light" (outputs logits_booster, probs_light ...); else `towers`."""
    if which != "rocket_launching" or not towers:
        return towers
    copies = []
    for name in ("booster", "light"):
        tower = type(towers[0])()
        tower.CopyFrom(towers[0])
        tower.tower_name = name
        copies.append(tower)
    return copies


def check_autoint(m: ModelContext, p: Problems) -> None:
    """Group "all" (DEEP): one embedding width d for its features (a sequence_features
    output of k * d counts as k fields); heads of a positive width."""
    from mtrec.features.width import attention_widths, feature_width
    _check_rank(m, p)
    params = m.params
    if params.multi_head_num < 1 or params.multi_head_size < 1:
        p.error("autoint needs multi_head_num >= 1 and multi_head_size >= 1 (the width of "
                "each head).", "multi_head_size" if params.multi_head_num else "multi_head_num")
    if params.interacting_layer_num < 1:
        p.error("autoint.interacting_layer_num must be at least 1.", "interacting_layer_num")
    if not _check_group(m, p, "all", False, "the fields that attend to each other"):
        return
    group = m.groups["all"]
    if not all(n in m.features for n in group.feature_names):
        return  # reported by the group checks
    widths = {}
    for name in group.feature_names:
        widths.setdefault(feature_width(m.features[name], False), name)
    if len(widths) > 1:
        named = ", ".join(f"{n!r} ({d})" for d, n in sorted(widths.items()))
        p.error(f"autoint: the fields of feature group 'all' attend to each other, so they "
                f"need one width (embedding_dim); they differ: {named}.", "group_name", "all")
        return
    dim = next(iter(widths), None)
    for att in group.sequence_features:
        for width in attention_widths(att, m.features):
            if dim and width is not None and width % dim:
                p.error(f"autoint: a sequence_features output of feature group 'all' is "
                        f"{width} wide, not a multiple of the fields' width {dim}.",
                        "sequence_features")


def check_fm(m: ModelContext, p: Problems) -> None:
    """Groups "wide" (WIDE) and "deep" (its embeddings, one width, pair in the FM)."""
    _check_rank(m, p)
    _check_group(m, p, "wide", True, "the linear part")
    if _check_group(m, p, "deep", False, "the FM's embeddings") and all(
            n in m.features for n in m.groups["deep"].feature_names):
        widths = _embedding_widths(m, "deep")
        if len(widths) > 1:
            named = ", ".join(f"{n!r} ({d})" for d, n in sorted(widths.items()))
            p.error(f"fm: the FM pairs the embeddings of feature group 'deep', so they need "
                    f"one embedding_dim; they differ: {named}.", "group_name", "deep")
        elif not widths:
            p.error("fm: feature group 'deep' has no embedded features for the FM.",
                    "group_name", "deep")
    if m.params.HasField("use_variant"):
        p.warn("fm.use_variant has no effect on the FM model (as in EasyRec).", "use_variant")


def check_rocket_launching(m: ModelContext, p: Problems) -> None:
    """Group "all" (DEEP); booster_dnn and light_dnn; COSINE or EUCLID similarity."""
    _check_rank(m, p)
    params = m.params
    _check_group(m, p, "all", False, "the nets' input")
    for field in ("booster_dnn", "light_dnn"):
        if not getattr(params, field).hidden_units:
            p.error(f"rocket_launching needs {field} {{ hidden_units: ... }}.",
                    field if params.HasField(field) else "rocket_launching")
    if params.feature_distillation_function == params.INNER_PRODUCT:
        p.error("rocket_launching feature_distillation_function INNER_PRODUCT is not "
                "supported; use COSINE or EUCLID.", "feature_distillation_function")
    if params.feature_based_distillation and not (
            set(params.light_dnn.hidden_units) & set(params.booster_dnn.hidden_units)):
        p.warn("rocket_launching feature_based_distillation matches light and booster layers "
               "of equal width, and light_dnn and booster_dnn share none: it adds nothing.",
               "feature_based_distillation")
