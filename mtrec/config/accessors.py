"""Helpers the later stages use to read a config."""

# Model fields naming a feature group read only by a gate or generator, not the main input.
SIDE_GROUP_FIELDS = ("prior_group_name", "condition_group_name", "scenario_group_name")


def has_eval_data(pipeline) -> bool:
    """Whether the config names evaluation data: eval_input_path, or EasyRec's binary
    Criteo files (binary_eval_input)."""
    return bool(pipeline.eval_input_path) or pipeline.HasField("binary_eval_input")


def all_features(pipeline) -> list:
    """Features from both the legacy and the `feature_config { features }` form."""
    return list(pipeline.feature_configs) + list(pipeline.feature_config.features)


def feature_name(feature) -> str:
    return feature.feature_name or (feature.input_names[0] if feature.input_names else "")


def model_message(model_config):
    """The oneof model sub-message (e.g. the `mmoe { ... }` block, or `model_params` of a
    MultiTaskModel / RankModel), or None."""
    which = model_config.WhichOneof("model")
    return getattr(model_config, which) if which else None


def task_towers(model_config) -> list:
    """The task towers of any model, in output order."""
    model = model_message(model_config)
    if model is None:
        return []
    if model_config.WhichOneof("model") == "esmm":
        return [model.ctr_tower, model.cvr_tower]
    return list(model.task_towers)


def label_names(pipeline) -> list[str]:
    """The label columns the towers read (with task-space indicators), in tower order, then
    the soft labels of model_config.kd."""
    names = []
    for tower in task_towers(pipeline.model_config):
        for name in (tower.label_name, tower.task_space_indicator_label):
            if name and name not in names:
                names.append(name)
    for kd in pipeline.model_config.kd:
        if kd.soft_label_name and kd.soft_label_name not in names:
            names.append(kd.soft_label_name)
    return names
