"""Validation of the task towers every model has: names, labels, losses, metrics."""
from mtrec.config.check_eval import check_metric
from mtrec.config.defaults import given_towers, is_rank_model
from mtrec.config.source import Problems
from mtrec.protos import data_pb2, loss_pb2, model_pb2

CLASSIFICATION = loss_pb2.CLASSIFICATION
L2_LOSS = loss_pb2.L2_LOSS
JRC_LOSS = loss_pb2.JRC_LOSS
SOFTMAX_CROSS_ENTROPY = loss_pb2.SOFTMAX_CROSS_ENTROPY
# An extra term of a tower with relation towers, not its loss.
ORDER_CALIBRATE_LOSS = loss_pb2.ORDER_CALIBRATE_LOSS

# Loss types by what they need (mtrec.models.losses computes them).
PAIR_WISE_LOSS = loss_pb2.PAIR_WISE_LOSS
# Losses on pairs of rows: labels are graded relevance, compared with >.
PAIRWISE = frozenset({PAIR_WISE_LOSS, loss_pb2.PAIRWISE_FOCAL_LOSS,
                      loss_pb2.PAIRWISE_LOGISTIC_LOSS, loss_pb2.PAIRWISE_HINGE_LOSS})
# Losses of a one-logit (num_class 1) tower.
BINARY = PAIRWISE | {loss_pb2.BINARY_FOCAL_LOSS, loss_pb2.F1_REWEIGHTED_LOSS}
# Losses whose labels are class ids (0/1, or 0..num_class-1).
CLASS_LABELS = frozenset({CLASSIFICATION, SOFTMAX_CROSS_ENTROPY, loss_pb2.BINARY_FOCAL_LOSS,
                          loss_pb2.F1_REWEIGHTED_LOSS, JRC_LOSS})
# Zero-inflated log-normal: a num_class 3 tower on a real label >= 0.
ZILN_LOSS = loss_pb2.ZILN_LOSS
# Every loss type mtrec computes (the other EasyRec types are config errors).
SUPPORTED = CLASS_LABELS | PAIRWISE | {L2_LOSS, ORDER_CALIBRATE_LOSS, ZILN_LOSS}
# The loss_param member each loss type reads.
PARAM_FIELD = {
    PAIR_WISE_LOSS: "pairwise_loss", loss_pb2.PAIRWISE_FOCAL_LOSS: "pairwise_focal_loss",
    loss_pb2.PAIRWISE_LOGISTIC_LOSS: "pairwise_logistic_loss",
    loss_pb2.PAIRWISE_HINGE_LOSS: "pairwise_hinge_loss",
    loss_pb2.BINARY_FOCAL_LOSS: "binary_focal_loss",
    loss_pb2.F1_REWEIGHTED_LOSS: "f1_reweighted_loss", JRC_LOSS: "jrc_loss",
    ZILN_LOSS: "ziln_loss",
}


# JRC_LOSS's ways to weigh its two parts (mtrec.models.losses.jrc_loss).
JRC_STRATEGIES = ("fixed", "random_uniform", "random_normal", "random_bernoulli")


def term_name(term) -> str:
    """A loss term's loss_name, else EasyRec's default name of its type."""
    if term.loss_name:
        return term.loss_name
    return {CLASSIFICATION: "cross_entropy_loss", L2_LOSS: "l2_loss"}.get(
        term.loss_type, loss_pb2.LossType.Name(term.loss_type).lower())


def term_params(term):
    """A loss term's parameter message (its defaults when not given), None for a type
    without parameters."""
    field = PARAM_FIELD.get(term.loss_type)
    return getattr(term, field) if field else None


# The models whose towers read other towers (relation_tower_names, AITM).
RELATION_MODELS = ("dbmtl", "model_params")


def check_towers(pipeline, which: str, towers: list, inputs: dict, p: Problems) -> None:
    """The towers of the `which` model block, in output order; `inputs` from check_data."""
    if not towers and which != "esmm":
        p.error(f"{which} has no task_towers.", which)
    _check_model_losses(pipeline.model_config, towers, p)
    seen = set()
    where = _loss_locator([t for _, t in given_towers(pipeline.model_config)])
    for i, tower in given_towers(pipeline.model_config):
        if tower.tower_name in seen:
            p.error(f"tower name {tower.tower_name!r} is used twice; tower names must be unique.",
                    "tower_name", tower.tower_name, nth=2)
        seen.add(tower.tower_name)
        if not tower.label_name:  # fill_defaults found no label_fields[i] either
            p.error(f"tower {tower.tower_name!r} has no label_name and there is no "
                    f"label_fields[{i}] to default to.", "tower_name", tower.tower_name)
        _check_labels(tower, inputs, p)
        if tower.num_class == 0:
            p.error(f"tower {tower.tower_name!r}: num_class must be at least 1.", "num_class")
        _check_losses(tower, towers, which, pipeline, inputs, where, p)
        for field in ("relation_tower_names", "relation_dnn", "use_ait_module",
                      "ait_project_dim"):
            used = tower.HasField(field) if field == "relation_dnn" else getattr(tower, field)
            if used and which not in RELATION_MODELS:
                p.error(f"tower {tower.tower_name!r}: {field} only applies to DBMTL and "
                        "MultiTaskModel.", field)
        for metric in tower.metrics_set:
            check_metric(metric, inputs, p, tower)


def _check_model_losses(model_config, towers: list, p: Problems) -> None:
    """model_config.losses: the terms of a RankModel's single output, set in one place."""
    if not model_config.losses:
        return
    if not is_rank_model(model_config):
        p.error(f"model_config.losses are the loss terms of a rank model's single output; "
                f"{model_config.model_class or 'this model'} has task towers: list the terms "
                "as `losses` inside each task_towers block.", "losses")
    elif towers and list(towers[0].losses) != list(model_config.losses):
        p.error(f"{model_config.model_class}: model_config.losses differ from the losses of "
                f"its {model_config.WhichOneof('model')} tower; set them in one place.",
                "losses")


def _check_labels(tower, inputs: dict, p: Problems) -> None:
    """The label and task-space indicator are numeric input columns."""
    if tower.label_name and tower.label_name not in inputs:
        p.error(f"tower {tower.tower_name!r}: label {tower.label_name!r} is not an input field.",
                "label_name", tower.label_name)
    elif (tower.label_name and
          inputs[tower.label_name].input_type == data_pb2.DatasetConfig.STRING):
        p.error(f"tower {tower.tower_name!r}: label {tower.label_name!r} is a STRING column; "
                "labels must be INT32, INT64, FLOAT, DOUBLE or BOOL.", "input_name",
                tower.label_name)
    if tower.task_space_indicator_label and tower.task_space_indicator_label not in inputs:
        p.error(f"tower {tower.tower_name!r}: task_space_indicator_label "
                f"{tower.task_space_indicator_label!r} is not an input field.",
                "task_space_indicator_label")


# Where EasyRec uses the loss types mtrec does not compute, and what to use instead.
_UNSUPPORTED = {
    "SIGMOID_L2_LOSS": "use L2_LOSS",
    "CROSS_ENTROPY_LOSS": "a distillation loss: use it in model_config.kd; towers use "
                          "CLASSIFICATION",
    "BINARY_CROSS_ENTROPY_LOSS": "a distillation loss: use it in model_config.kd; towers use "
                                 "CLASSIFICATION",
    "KL_DIVERGENCE_LOSS": "a distillation loss: use it in model_config.kd",
    "CIRCLE_LOSS": "a retrieval (metric learning) loss; mtrec has no retrieval models",
    "MULTI_SIMILARITY_LOSS": "a retrieval (metric learning) loss; mtrec has no retrieval "
                             "models",
    "SOFTMAX_CROSS_ENTROPY_WITH_NEGATIVE_MINING": "a retrieval loss; mtrec has no retrieval "
                                                  "models",
    "LISTWISE_RANK_LOSS": "use PAIRWISE_LOGISTIC_LOSS with a session_name",
    "LISTWISE_DISTILL_LOSS": "use PAIRWISE_LOGISTIC_LOSS with a session_name",
}


def _loss_locator(towers: list):
    """where(tower, term) -> (field, value, nth) of the term's `loss_type` line: terms are
    found by their type's nth occurrence among the towers' loss_type lines."""
    seen, places = {}, {}
    for tower in towers:
        declared = list(tower.losses) or ([None] if tower.HasField("loss_type") else [])
        for term in declared:
            kind = (term or tower).loss_type
            seen[kind] = seen.get(kind, 0) + 1
            places[(id(tower), id(term))] = seen[kind]

    def where(tower, term):
        kind = loss_pb2.LossType.Name((term or tower).loss_type)
        return "loss_type", kind, places.get((id(tower), id(term)), 1)
    return where


def _check_losses(tower, towers: list, which: str, pipeline, inputs: dict, where,
                  p: Problems) -> None:
    """Every term is a supported loss that fits the tower (num_class, one output shared by
    all terms), with valid parameters; plus ORDER_CALIBRATE_LOSS terms where they apply."""
    name = tower.tower_name
    declared = list(tower.losses) or [None]
    loss_types = [(term or tower).loss_type for term in declared]
    if ORDER_CALIBRATE_LOSS in loss_types:
        _check_order_calibrate(tower, towers, which, p)
    names = {}
    for term in declared:
        kind = (term or tower).loss_type
        kind_name = loss_pb2.LossType.Name(kind)
        at = where(tower, term)
        if kind_name in _UNSUPPORTED:
            p.error(f"tower {name!r}: loss_type {kind_name} is not supported by mtrec "
                    f"({_UNSUPPORTED[kind_name]}).", *at[:2], nth=at[2])
            continue
        if kind == ORDER_CALIBRATE_LOSS:
            continue
        _check_term_fits(tower, kind, kind_name, at, p)
        if term is None:
            continue
        key = term_name(term)
        if key in names:
            p.error(f"tower {name!r}: two loss terms are named {key!r}; give each its own "
                    "loss_name.", *at[:2], nth=at[2])
        names[key] = term
        _check_term_params(tower, term, kind_name, at, inputs, p)
        if term.learn_loss_weight:
            _check_learned(tower, which, pipeline, p)
    kinds = set(loss_types) - {ORDER_CALIBRATE_LOSS}
    for alone, what in ((L2_LOSS, "a regression output"), (ZILN_LOSS, "a three-logit output")):
        if alone in kinds and len(kinds) > 1:
            others = ", ".join(sorted(loss_pb2.LossType.Name(k) for k in kinds - {alone}))
            p.error(f"tower {name!r}: {loss_pb2.LossType.Name(alone)} ({what}) cannot be "
                    f"combined with {others} in one tower; use a separate tower per label "
                    "kind.", "losses")


def _check_term_fits(tower, kind: int, kind_name: str, at: tuple, p: Problems) -> None:
    """The term suits the tower's num_class."""
    name, num_class = tower.tower_name, tower.num_class
    if kind in BINARY and num_class != 1:
        p.error(f"tower {name!r}: {kind_name} scores each row with one logit; set "
                f"num_class: 1 (it is {num_class}).", *at[:2], nth=at[2])
    elif kind == L2_LOSS and num_class != 1:
        p.error(f"tower {name!r}: L2_LOSS regresses one value; num_class > 1 needs "
                "loss_type CLASSIFICATION or SOFTMAX_CROSS_ENTROPY.", "num_class")
    elif kind == SOFTMAX_CROSS_ENTROPY and num_class < 2:
        p.error(f"tower {name!r}: SOFTMAX_CROSS_ENTROPY needs num_class >= 2 (it is "
                f"{num_class}); a binary tower uses CLASSIFICATION.", *at[:2], nth=at[2])
    elif kind == ZILN_LOSS and num_class != 3:
        p.error(f"tower {name!r}: ZILN_LOSS reads three logits (P(y > 0), mu, sigma); set "
                f"num_class: 3 (it is {num_class}).", *at[:2], nth=at[2])
    elif kind == JRC_LOSS and num_class != 2:
        p.error(f"tower {name!r}: JRC_LOSS reads two logits (negative, positive); set "
                f"num_class: 2 (it is {num_class}).", *at[:2], nth=at[2])


def _check_term_params(tower, term, kind_name: str, at: tuple, inputs: dict,
                       p: Problems) -> None:
    """The loss_param member matches the type; its values are in range; its session
    column is an input field."""
    name = tower.tower_name
    given = term.WhichOneof("loss_param")
    expected = PARAM_FIELD.get(term.loss_type)
    if given and given != expected:
        use = f"use `{expected} {{ ... }}`" if expected else "it takes no parameters"
        p.error(f"tower {name!r}: `{given}` does not apply to loss_type {kind_name}; {use}.",
                given)
        return
    params = term_params(term)
    if params is None:
        return
    fields = params.DESCRIPTOR.fields_by_name
    checks = [("temperature", lambda v: v > 0, "> 0"),
              ("ohem_ratio", lambda v: 0 < v <= 1, "in (0, 1]"),
              ("gamma", lambda v: v >= 0, ">= 0"),
              ("alpha", lambda v: 0 <= v <= 1, "in [0, 1]"),
              ("label_smoothing", lambda v: 0 <= v <= 1, "in [0, 1]"),
              ("f1_beta_square", lambda v: v > 0, "> 0"),
              ("max_sigma", lambda v: v > 0, "> 0")]
    for field, ok, bound in checks:
        if field in fields and not ok(getattr(params, field)):
            p.error(f"tower {name!r}: {kind_name} {field} must be {bound} (it is "
                    f"{getattr(params, field)}).", field, getattr(params, field))
    session = getattr(params, "session_name", "")
    if term.loss_type == JRC_LOSS:
        if not session:
            p.error(f"tower {name!r}: JRC_LOSS needs jrc_loss {{ session_name: ... }}, the "
                    "input column whose equal values make a session (e.g. user_id).",
                    *at[:2], nth=at[2])
        if params.loss_weight_strategy not in JRC_STRATEGIES:
            known = ", ".join(repr(k) for k in JRC_STRATEGIES)
            why = (" (EasyRec's 'uncertainty' is not supported by mtrec)"
                   if params.loss_weight_strategy == "uncertainty" else "")
            p.error(f"tower {name!r}: jrc_loss loss_weight_strategy "
                    f"{params.loss_weight_strategy!r} is not one of {known}{why}.",
                    "loss_weight_strategy")
    if session and session not in inputs:
        p.error(f"tower {name!r}: session_name {session!r} is not an input field; name the "
                "data_config.input_fields column that identifies a session (e.g. user_id).",
                "session_name", session)


def _check_learned(tower, which: str, pipeline, p: Problems) -> None:
    """learn_loss_weight needs the Uncertainty strategy (as in EasyRec), and a model whose
    losses are the towers' terms."""
    name = tower.tower_name
    if pipeline.model_config.loss_weight_strategy != model_pb2.Uncertainty:
        p.error(f"tower {name!r}: learn_loss_weight needs model_config.loss_weight_strategy: "
                "Uncertainty (as in EasyRec).", "learn_loss_weight", "true")
    if which == "esmm":
        p.error(f"tower {name!r}: learn_loss_weight is not supported under ESMM (its loss is "
                "the ctr and ctcvr cross-entropies); use loss_weight_strategy: Uncertainty "
                "alone to learn per-tower weights.", "learn_loss_weight", "true")


def _check_order_calibrate(tower, towers, which: str, p: Problems) -> None:
    """ORDER_CALIBRATE_LOSS: AITM's label constraint against the tower's relation towers."""
    name = tower.tower_name
    by_name = {t.tower_name: t for t in towers}
    for parent in tower.relation_tower_names:
        other = by_name.get(parent)
        if other is None:  # reported by the relation checks
            continue
        kinds = [l.loss_type for l in other.losses if l.loss_type != ORDER_CALIBRATE_LOSS]
        if other.num_class != 1 or any(k not in BINARY | {CLASSIFICATION}
                                       for k in kinds or [other.loss_type]):
            p.error(f"tower {name!r}: ORDER_CALIBRATE_LOSS compares its probability with "
                    f"{parent!r}'s, so {parent!r} must be a binary CLASSIFICATION tower.",
                    "loss_type", "ORDER_CALIBRATE_LOSS")
    if which not in RELATION_MODELS:
        p.error(f"tower {name!r}: ORDER_CALIBRATE_LOSS compares a tower with its "
                "relation_tower_names, which only DBMTL and MultiTaskModel towers have.",
                "loss_type", "ORDER_CALIBRATE_LOSS")
        return
    kinds = [l.loss_type for l in tower.losses]
    if not tower.losses or all(k == ORDER_CALIBRATE_LOSS for k in kinds):
        p.error(f"tower {name!r}: ORDER_CALIBRATE_LOSS is an extra term; list it in `losses` "
                "next to a CLASSIFICATION loss.", "loss_type", "ORDER_CALIBRATE_LOSS")
    elif (any(k not in BINARY | {CLASSIFICATION, ORDER_CALIBRATE_LOSS} for k in kinds)
          or tower.num_class != 1):
        p.error(f"tower {name!r}: ORDER_CALIBRATE_LOSS compares probabilities, so the tower "
                "must be a binary CLASSIFICATION tower (num_class 1).", "loss_type",
                "ORDER_CALIBRATE_LOSS")
    if not tower.relation_tower_names:
        p.warn(f"tower {name!r}: ORDER_CALIBRATE_LOSS has no effect without "
               "relation_tower_names (the towers whose probability bounds this one).",
               "loss_type", "ORDER_CALIBRATE_LOSS")
