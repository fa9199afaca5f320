"""EasyRec's name shorthands, expanded once before defaults are filled in (fill_defaults):

  - with data_config.auto_expand_input_fields, an input field named `f[1-3]` becomes the
    fields f1, f2, f3 (copies of it);
  - a feature's shared_names: one copy of the feature per name (with auto_expand_input_fields
    `f[1-3]` names f1, f2, f3), reading that input and named after it; shared_names is then
    cleared;
  - a feature group's feature_names entry `f[1-3]` always stands for f1, f2, f3 (as EasyRec's
    feature groups read it).
"""
import re

from mtrec.config.accessors import all_features

_RANGE = re.compile(r"([A-Za-z_]+)\[([0-9]+)-([0-9]+)\]")


def expand_name(name: str) -> list[str]:
    """`f[1-3]` -> [f1, f2, f3]; any other name -> [name]."""
    match = _RANGE.fullmatch(name)
    if not match:
        return [name]
    prefix, first, last = match.group(1), int(match.group(2)), int(match.group(3))
    return [f"{prefix}{i}" for i in range(first, last + 1)]


def expand_names(pipeline) -> None:
    """Expand the shorthands above in place."""
    data = pipeline.data_config
    auto = data.auto_expand_input_fields
    if auto and any(_RANGE.fullmatch(f.input_name) for f in data.input_fields):
        fields = list(data.input_fields)
        del data.input_fields[:]
        for field in fields:
            for name in expand_name(field.input_name):
                copy = data.input_fields.add()
                copy.CopyFrom(field)
                copy.input_name = name
    features = pipeline.feature_configs if pipeline.feature_configs else \
        pipeline.feature_config.features
    for feature in all_features(pipeline):
        if not feature.shared_names:
            continue
        names = [n for s in feature.shared_names for n in (expand_name(s) if auto else [s])]
        del feature.shared_names[:]
        for name in names:
            copy = features.add()
            copy.CopyFrom(feature)
            copy.ClearField("feature_name")
            copy.input_names[:] = [name]
    for group in pipeline.model_config.feature_groups:
        if any(_RANGE.fullmatch(n) for n in group.feature_names):
            group.feature_names[:] = [e for n in group.feature_names for e in expand_name(n)]
