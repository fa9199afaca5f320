"""The defaults a config leaves implicit, filled in by one explicit step before validation
(validation itself never changes the config)."""
from mtrec.config.accessors import all_features, feature_name, task_towers
from mtrec.config.dynamic_params import fill_ev_params
from mtrec.config.expand import expand_names

# EasyRec's single-task backbone model: `model_params {}` and its one tower may be omitted.
RANK_MODEL = "RankModel"


def fill_defaults(pipeline) -> None:
    """Fill in every feature_name (its first input name), a RankModel's `model_params` and
    its tower, and the tower_name / label_name of towers (from data_config.label_fields);
    first EasyRec's `f[1-3]` and shared_names shorthands are expanded (expand.py)."""
    expand_names(pipeline)
    for feature in all_features(pipeline):
        if feature.input_names and not feature.feature_name:
            feature.feature_name = feature_name(feature)
    if not pipeline.HasField("model_config"):
        return
    # model_config.ev_params: the default of the features it applies to (dynamic tables).
    fill_ev_params(pipeline)
    labels = list(pipeline.data_config.label_fields)
    _fill_rank_model(pipeline.model_config, labels)
    for i, tower in given_towers(pipeline.model_config):
        if not tower.tower_name:
            tower.tower_name = tower.label_name or (labels[i] if i < len(labels) else f"task{i}")
        if not tower.label_name and i < len(labels):
            tower.label_name = labels[i]


def given_towers(model_config) -> list[tuple]:
    """(position, tower) of the towers the config has: an ESMM's ctr_tower or cvr_tower
    only when given (naming a missing one would create it and hide the error)."""
    towers = list(enumerate(task_towers(model_config)))
    if model_config.WhichOneof("model") == "esmm":
        given = [model_config.esmm.HasField(f) for f in ("ctr_tower", "cvr_tower")]
        towers = [(i, t) for i, t in towers if given[i]]
    return towers


def is_rank_model(model_config) -> bool:
    """A single-output model: RankModel, or a model block the registry marks `rank`
    (MultiTower, DeepFM ...); its one tower comes from model_config's loss_type, num_class
    and losses."""
    # TF-free table; imported here as check_model does, to keep it out of `import mtrec.config`.
    from mtrec.models.registry import MODELS
    which = model_config.WhichOneof("model")
    if model_config.model_class == RANK_MODEL:
        return which in (None, "model_params")
    return which in MODELS and MODELS[which].rank


def _fill_rank_model(model_config, labels: list) -> None:
    """A RankModel on a backbone gets `model_params` if it has none; a rank model's block
    gets a tower named after model_config.label_name, else the first label (with
    model_config's loss_type, num_class and losses) if it has none."""
    if not is_rank_model(model_config):
        return
    which = model_config.WhichOneof("model")
    if which is None:
        if not model_config.HasField("backbone"):
            return
        model_config.model_params.SetInParent()
        which = "model_params"
    params = getattr(model_config, which)
    if not params.task_towers:
        label = model_config.label_name or (labels[0] if labels else "")
        params.task_towers.add(tower_name=label, label_name=label,
                               loss_type=model_config.loss_type,
                               num_class=model_config.num_class,
                               losses=model_config.losses)
