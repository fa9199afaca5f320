"""One registry of models, keyed by the `model_config` oneof member name.

Entries name "module:Class" and are imported when a model is built, so importing the
registry stays cheap and one broken model cannot break the others.
"""
import importlib
import importlib.util

from mtrec.errors import ConfigError

MODELS = {
    "mmoe": "mtrec.models.mmoe:MMoE",
    "esmm": "mtrec.models.esmm:ESMM",
    "simple_multi_task": "mtrec.models.simple_multi_task:SimpleMultiTask",
    "shared_bottom": "mtrec.models.shared_bottom:SharedBottom",
    "ple": "mtrec.models.ple:PLE",
    "dbmtl": "mtrec.models.dbmtl:DBMTL",
    "pepnet": "mtrec.models.pepnet:PEPNet",
    "apg": "mtrec.models.apg:APG",
    "m2m": "mtrec.models.m2m:M2M",
    "star": "mtrec.models.star:STAR",
    "hmoe": "mtrec.models.hmoe:HMoE",
}

# Oneof members whose model is specified but not built yet: a clear error, never a crash.
NOT_IMPLEMENTED = ()


def model_class(which: str):
    """The model class registered for a oneof member (ConfigError if there is none)."""
    if which in MODELS:
        module, name = MODELS[which].split(":")
        try:
            return getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    available = ", ".join(sorted(k for k in MODELS if _importable(k)))
    if which in MODELS or which in NOT_IMPLEMENTED:
        raise ConfigError(f"model `{which}` is not implemented yet; implemented models: "
                          f"{available}.")
    raise ConfigError(f"unknown model {which!r}; registered models: {available}.")


def _importable(which: str) -> bool:
    return importlib.util.find_spec(MODELS[which].split(":")[0]) is not None


def is_implemented(which: str) -> bool:
    """Whether a oneof member has a model, without importing it (no TensorFlow)."""
    return which in MODELS and _importable(which)


def build_model(pipeline, feature_set):
    which = pipeline.model_config.WhichOneof("model")
    return model_class(which)(pipeline, feature_set, name=pipeline.model_config.model_class)
