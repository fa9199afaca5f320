"""The one table of models, keyed by the `model_config` oneof member name.

Each row names the model_class values that select it, its "module:Class" (imported only
when a model is built, so importing the table stays cheap: no TensorFlow) and its TF-free
config check (mtrec.models.checks), which config validation runs.
"""
import dataclasses
import importlib
from typing import Callable

from mtrec.errors import ConfigError
from mtrec.models import checks


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    model_classes: tuple[str, ...]   # model_config.model_class values of this block
    target: str                      # "module:Class" of the Keras model
    check: Callable                  # check(checks.ModelContext, Problems)
    # A single-output rank model: config defaults give its block one tower from
    # model_config.loss_type / num_class / losses (mtrec.config.defaults.is_rank_model).
    rank: bool = False


# In the order config errors list the model_class names.
MODELS = {
    "mmoe": ModelEntry(("MMoE",), "mtrec.models.mmoe:MMoE", checks.check_mmoe),
    "esmm": ModelEntry(("ESMM",), "mtrec.models.esmm:ESMM", checks.check_esmm),
    "ple": ModelEntry(("PLE",), "mtrec.models.ple:PLE", checks.check_ple),
    "dbmtl": ModelEntry(("DBMTL",), "mtrec.models.dbmtl:DBMTL", checks.check_dbmtl),
    "simple_multi_task": ModelEntry(("SimpleMultiTask",),
                                    "mtrec.models.simple_multi_task:SimpleMultiTask",
                                    checks.check_nothing),
    "shared_bottom": ModelEntry(("SharedBottom",), "mtrec.models.shared_bottom:SharedBottom",
                                checks.check_nothing),
    "pepnet": ModelEntry(("PEPNet",), "mtrec.models.pepnet:PEPNet", checks.check_pepnet),
    "apg": ModelEntry(("APG",), "mtrec.models.apg:APG", checks.check_apg),
    "m2m": ModelEntry(("M2M",), "mtrec.models.m2m:M2M", checks.check_m2m),
    "star": ModelEntry(("STAR",), "mtrec.models.star:STAR", checks.check_star),
    "hmoe": ModelEntry(("HMoE",), "mtrec.models.hmoe:HMoE", checks.check_hmoe),
    # Single-output rank models (EasyRec's classic ones).
    "multi_tower": ModelEntry(("MultiTower", "MultiTowerDIN", "MultiTowerBST"),
                              "mtrec.models.multi_tower:MultiTower", checks.check_multi_tower,
                              rank=True),
    "deepfm": ModelEntry(("DeepFM",), "mtrec.models.deepfm:DeepFM", checks.check_deepfm,
                         rank=True),
    "wide_and_deep": ModelEntry(("WideAndDeep",), "mtrec.models.wide_and_deep:WideAndDeep",
                                checks.check_wide_and_deep, rank=True),
    "dcn": ModelEntry(("DCN",), "mtrec.models.dcn:DCN", checks.check_dcn, rank=True),
    "dlrm": ModelEntry(("DLRM",), "mtrec.models.dlrm:DLRM", checks.check_dlrm, rank=True),
    "autoint": ModelEntry(("AutoInt",), "mtrec.models.autoint:AutoInt", checks.check_autoint,
                          rank=True),
    "fm": ModelEntry(("FM",), "mtrec.models.fm:FM", checks.check_fm, rank=True),
    "rocket_launching": ModelEntry(("RocketLaunching",),
                                   "mtrec.models.rocket_launching:RocketLaunching",
                                   checks.check_rocket_launching, rank=True),
    "cmbf": ModelEntry(("CMBF",), "mtrec.models.cmbf:CMBF", checks.check_cmbf, rank=True),
    "uniter": ModelEntry(("Uniter",), "mtrec.models.uniter:Uniter", checks.check_uniter,
                         rank=True),
    # Towers on a `backbone` (EasyRec's component models); both read `model_params`.
    "model_params": ModelEntry(("MultiTaskModel", "RankModel"),
                               "mtrec.models.backbone_model:BackboneModel",
                               checks.check_model_params),
}


def model_classes() -> dict[str, str]:
    """{model_class: the `model_config` oneof member it must come with}."""
    return {name: which for which, entry in MODELS.items() for name in entry.model_classes}


def model_class(which: str):
    """The model class registered for a oneof member (ConfigError if there is none)."""
    if which not in MODELS:
        raise ConfigError(f"unknown model {which!r}; registered models: "
                          f"{', '.join(sorted(MODELS))}.")
    module, name = MODELS[which].target.split(":")
    return getattr(importlib.import_module(module), name)


def build_model(pipeline, feature_set):
    which = pipeline.model_config.WhichOneof("model")
    return model_class(which)(pipeline, feature_set, name=pipeline.model_config.model_class)
