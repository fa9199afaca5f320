"""One registry of models, keyed by the `model_config` oneof member name.

Entries name "module:Class" and are imported when a model is built, so importing the
registry stays cheap (no TensorFlow).
"""
import importlib

from mtrec.errors import ConfigError

MODELS = {
    # model_class MultiTaskModel and RankModel: towers on a backbone.
    "model_params": "mtrec.models.backbone_model:BackboneModel",
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

def model_class(which: str):
    """The model class registered for a oneof member (ConfigError if there is none)."""
    if which not in MODELS:
        raise ConfigError(f"unknown model {which!r}; registered models: "
                          f"{', '.join(sorted(MODELS))}.")
    module, name = MODELS[which].split(":")
    return getattr(importlib.import_module(module), name)


def build_model(pipeline, feature_set):
    which = pipeline.model_config.WhichOneof("model")
    return model_class(which)(pipeline, feature_set, name=pipeline.model_config.model_class)
