"""Validation of model_config's distillation terms (`kd`, loss.proto KD) and of a rank
model's `label_name`, and the names both the checks and the losses use."""
from mtrec.config.check_eval import tower_prediction_kind
from mtrec.config.check_towers import PAIRWISE, PARAM_FIELD, term_params
from mtrec.config.source import Problems
from mtrec.protos import data_pb2, loss_pb2

# The KD loss types on the two sigmoid(logit / temperature).
SOFT_CROSS_ENTROPIES = frozenset({loss_pb2.CROSS_ENTROPY_LOSS,
                                  loss_pb2.BINARY_CROSS_ENTROPY_LOSS,
                                  loss_pb2.KL_DIVERGENCE_LOSS})
KD_LOSSES = SOFT_CROSS_ENTROPIES | PAIRWISE | {loss_pb2.L2_LOSS}
# EasyRec's output names of a single-output model.
_OUTPUT_KINDS = ("logits", "probs", "y")


def label_shapes(data_config) -> dict:
    """{label column: (label_dim, label_sep)} of the labels of several values per row
    (label_dim > 1); a label without a label_sep entry is split by "" (characters)."""
    shapes = {}
    for i, name in enumerate(data_config.label_fields):
        dim = data_config.label_dim[i] if i < len(data_config.label_dim) else 1
        if dim > 1:
            sep = data_config.label_sep[i] if i < len(data_config.label_sep) else ""
            shapes[name] = (int(dim), sep)
    return shapes


def kd_key(kd) -> str:
    """The KD term's name in the losses dict: loss_name, else EasyRec's
    kd_loss_<pred_name>_<soft_label_name>."""
    if kd.loss_name:
        return kd.loss_name
    return f"kd_loss_{kd.pred_name}_{kd.soft_label_name}".replace("/", "_")


def output_names(towers) -> dict:
    """{output name: (tower, kind)} of the logits_ / probs_ / y_ outputs a KD may read."""
    return {f"{kind}_{t.tower_name}": (t, kind) for t in towers for kind in _OUTPUT_KINDS}


def kd_output(pred_name: str, towers) -> str:
    """The model output a KD's pred_name names: itself, or for a model with one tower
    EasyRec's bare logits / probs / y."""
    if pred_name in _OUTPUT_KINDS and len(towers) == 1:
        return f"{pred_name}_{towers[0].tower_name}"
    return pred_name


def kd_session_columns(model_config) -> list[str]:
    """The input columns KD pairwise losses group rows by (session_name)."""
    return [term_params(kd).session_name for kd in model_config.kd
            if kd.loss_type in PAIRWISE and term_params(kd).session_name]


def check_kd(pipeline, towers: list, inputs: dict, p: Problems) -> None:
    """Each kd names a model output of one value per row, a numeric soft-label column and a
    loss type distillation supports, with fitting parameters. `towers`: the towers whose
    outputs the model gives (RocketLaunching's booster and light)."""
    model_config = pipeline.model_config
    check_label_name(model_config, inputs, p)
    check_label_dims(pipeline, towers, inputs, p)
    dims = label_shapes(pipeline.data_config)
    outputs = output_names(towers)
    seen = set()
    for i, kd in enumerate(model_config.kd):
        at = ("kd", None, i + 1)
        kind = loss_pb2.LossType.Name(kd.loss_type)
        if not kd.HasField("loss_type"):
            p.error("kd needs a loss_type: CROSS_ENTROPY_LOSS, BINARY_CROSS_ENTROPY_LOSS, "
                    "KL_DIVERGENCE_LOSS, L2_LOSS or a pairwise loss.", *at)
        elif kd.loss_type not in KD_LOSSES:
            p.error(f"kd loss_type {kind} is not supported for distillation; use "
                    "CROSS_ENTROPY_LOSS, BINARY_CROSS_ENTROPY_LOSS, KL_DIVERGENCE_LOSS, "
                    "L2_LOSS, PAIR_WISE_LOSS, PAIRWISE_LOGISTIC_LOSS, PAIRWISE_HINGE_LOSS or "
                    "PAIRWISE_FOCAL_LOSS.", "loss_type", kind)
        given = kd.WhichOneof("loss_param")
        if given and given != PARAM_FIELD.get(kd.loss_type):
            p.error(f"kd: `{given}` does not apply to loss_type {kind}.", given)
        session = getattr(term_params(kd), "session_name", "") if kd.loss_type in PAIRWISE \
            else ""
        if session and session not in inputs:
            p.error(f"kd: session_name {session!r} is not an input field.", "session_name",
                    session)
        if kd.temperature <= 0:
            p.error(f"kd temperature must be > 0 (it is {kd.temperature}).", "temperature")
        if kd.HasField("task_space_indicator_name") or kd.HasField(
                "task_space_indicator_value"):
            p.error("kd task_space_indicator_name / task_space_indicator_value are not "
                    "supported by mtrec; remove them (the term then covers every row).",
                    "task_space_indicator_name" if kd.HasField("task_space_indicator_name")
                    else "task_space_indicator_value")
        label = kd.soft_label_name
        if not label:
            p.error("kd needs soft_label_name: the label column with the teacher's score.", *at)
        elif label not in inputs:
            p.error(f"kd soft_label_name {label!r} is not an input field.", "soft_label_name",
                    label)
        elif inputs[label].input_type == data_pb2.DatasetConfig.STRING and label not in dims:
            p.error(f"kd soft_label_name {label!r} is a STRING column; the teacher's score "
                    "must be one FLOAT, DOUBLE or INT number per row, or, for a num_class > 1 "
                    "model, num_class numbers per row: list it in data_config.label_fields "
                    "with its label_dim (and label_sep).", "input_name", label)
        key = kd_key(kd)
        if key in seen:
            p.error(f"two kd terms are named {key!r}; give each its own loss_name.", *at)
        seen.add(key)
        name = kd_output(kd.pred_name, towers)
        if name not in outputs:
            p.error(f"kd pred_name {kd.pred_name!r} is not a model output; outputs: "
                    f"{', '.join(n for n in outputs)}.", "pred_name", kd.pred_name or None)
            continue
        tower, output = outputs[name]
        where = ("pred_name", kd.pred_name)
        predicts = tower_prediction_kind(tower)
        dim = dims.get(label, (1, ""))[0]
        if output == "y" and predicts != "regression":
            p.error(f"kd pred_name {kd.pred_name!r}: tower {tower.tower_name!r} has no y "
                    "output (it is not a regression tower).", *where)
        elif output != "y" and predicts == "regression":
            p.error(f"kd pred_name {kd.pred_name!r}: tower {tower.tower_name!r} is a "
                    f"regression tower; distill its y_{tower.tower_name}.", *where)
        elif predicts == "multi_class" and kd.loss_type in PAIRWISE:
            p.error(f"kd {kind} ranks one score per row; pred_name {kd.pred_name!r} has "
                    f"{tower.num_class} classes (use CROSS_ENTROPY_LOSS, "
                    "BINARY_CROSS_ENTROPY_LOSS, KL_DIVERGENCE_LOSS or L2_LOSS).", *where)
        elif predicts == "multi_class" and dim != tower.num_class:
            p.error(f"kd pred_name {kd.pred_name!r} has {tower.num_class} classes but the soft "
                    f"label {label!r} has {dim} value(s) per row: set its data_config."
                    f"label_dim to {tower.num_class} (and its label_sep).", *where)
        elif predicts != "multi_class" and dim > 1:
            p.error(f"kd soft label {label!r} has label_dim {dim} values per row but pred_name "
                    f"{kd.pred_name!r} is one score per row; a soft label of several values "
                    "distills a num_class > 1 model.", *where)
        elif kd.loss_type in SOFT_CROSS_ENTROPIES:
            if output == "y":
                p.error(f"kd {kind} compares probabilities; pred_name {kd.pred_name!r} is a "
                        "regression output (use L2_LOSS).", *where)
            elif (output == "probs") == kd.pred_is_logits:
                p.error(f"kd pred_name {kd.pred_name!r} is a {output[:-1]}"
                        f"{'ability' if output == 'probs' else ''}; set pred_is_logits: "
                        f"{'false' if output == 'probs' else 'true'}.", *where)


def check_label_dims(pipeline, towers: list, inputs: dict, p: Problems) -> None:
    """data_config.label_dim / label_sep: at most one entry per label_fields entry, dims >= 1,
    and a label of label_dim > 1 is a STRING column that only kd terms read."""
    data = pipeline.data_config
    count = len(data.label_fields)
    for field in ("label_dim", "label_sep"):
        if len(getattr(data, field)) > count:
            p.error(f"data_config.{field} has {len(getattr(data, field))} entries for "
                    f"{count} label_fields; give one per label, in label_fields order.", field)
    if any(d < 1 for d in data.label_dim):
        p.error("data_config.label_dim entries must be at least 1 (values per row).",
                "label_dim")
    for label, (dim, _) in label_shapes(data).items():
        if label in inputs and inputs[label].input_type != data_pb2.DatasetConfig.STRING:
            p.error(f"label {label!r} has label_dim {dim}: its input field must be STRING, "
                    "each cell holding the values split by label_sep.", "input_name", label)
        for tower in towers:
            if tower.label_name == label:
                p.error(f"tower {tower.tower_name!r} reads label {label!r} of label_dim "
                        f"{dim}; a tower's label is one value per row (a label of several "
                        "values serves a kd soft_label_name).", "label_dim")


def check_label_name(model_config, inputs: dict, p: Problems) -> None:
    """model_config.label_name picks a rank model's label (config defaults give its tower
    that label)."""
    from mtrec.config.defaults import is_rank_model
    name = model_config.label_name
    if not model_config.HasField("label_name"):
        return
    if not is_rank_model(model_config):
        p.error(f"model_config.label_name picks the label of a rank model's one output; "
                f"{model_config.model_class or 'this model'} has task towers: set label_name "
                "in each task_towers block.", "label_name")
    elif name not in inputs:
        p.error(f"model_config.label_name {name!r} is not an input field.", "label_name", name)
