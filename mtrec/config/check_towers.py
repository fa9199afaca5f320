"""Validation of the task towers every model has: names, labels, losses, metrics."""
from mtrec.config.check_eval import check_metric
from mtrec.config.defaults import given_towers
from mtrec.config.source import Problems
from mtrec.protos import data_pb2, loss_pb2

CLASSIFICATION = loss_pb2.CLASSIFICATION
# An extra term of a tower with relation towers, not its loss.
ORDER_CALIBRATE_LOSS = loss_pb2.ORDER_CALIBRATE_LOSS

# The models whose towers read other towers (relation_tower_names, AITM).
RELATION_MODELS = ("dbmtl", "model_params")


def check_towers(pipeline, which: str, towers: list, inputs: dict, p: Problems) -> None:
    """The towers of the `which` model block, in output order; `inputs` from check_data."""
    if not towers and which != "esmm":
        p.error(f"{which} has no task_towers.", which)
    seen = set()
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
        _check_losses(tower, towers, which, p)
        for field in ("relation_tower_names", "relation_dnn", "use_ait_module",
                      "ait_project_dim"):
            used = tower.HasField(field) if field == "relation_dnn" else getattr(tower, field)
            if used and which not in RELATION_MODELS:
                p.error(f"tower {tower.tower_name!r}: {field} only applies to DBMTL and "
                        "MultiTaskModel.", field)
        for metric in tower.metrics_set:
            check_metric(metric, inputs, p)


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


def _check_losses(tower, towers: list, which: str, p: Problems) -> None:
    """One kind of loss per tower (plus ORDER_CALIBRATE_LOSS terms where they apply)."""
    loss_types = [l.loss_type for l in tower.losses] or [tower.loss_type]
    if ORDER_CALIBRATE_LOSS in loss_types:
        _check_order_calibrate(tower, towers, which, p)
        loss_types = [t for t in loss_types if t != ORDER_CALIBRATE_LOSS] or [CLASSIFICATION]
    if tower.num_class > 1 and any(t != CLASSIFICATION for t in loss_types):
        p.error(f"tower {tower.tower_name!r}: num_class > 1 needs loss_type CLASSIFICATION.",
                "num_class")
    if len(set(loss_types)) > 1:
        p.error(f"tower {tower.tower_name!r}: mixing CLASSIFICATION and L2_LOSS in one tower "
                "is not supported.", "losses")


def _check_order_calibrate(tower, towers, which: str, p: Problems) -> None:
    """ORDER_CALIBRATE_LOSS: AITM's label constraint against the tower's relation towers."""
    name = tower.tower_name
    by_name = {t.tower_name: t for t in towers}
    for parent in tower.relation_tower_names:
        other = by_name.get(parent)
        if other is None:  # reported by the relation checks
            continue
        kinds = [l.loss_type for l in other.losses if l.loss_type != ORDER_CALIBRATE_LOSS]
        if other.num_class != 1 or any(k != CLASSIFICATION for k in kinds or [other.loss_type]):
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
    elif (any(k not in (CLASSIFICATION, ORDER_CALIBRATE_LOSS) for k in kinds)
          or tower.num_class != 1):
        p.error(f"tower {name!r}: ORDER_CALIBRATE_LOSS compares probabilities, so the tower "
                "must be a binary CLASSIFICATION tower (num_class 1).", "loss_type",
                "ORDER_CALIBRATE_LOSS")
    if not tower.relation_tower_names:
        p.warn(f"tower {name!r}: ORDER_CALIBRATE_LOSS has no effect without "
               "relation_tower_names (the towers whose probability bounds this one).",
               "loss_type", "ORDER_CALIBRATE_LOSS")
