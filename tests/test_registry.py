"""Every model oneof member has a builder or a clear not-implemented error."""
import pytest

from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.models import registry
from mtrec.protos import model_pb2


def test_registry_covers_the_model_oneof():
    members = {f.name for f in model_pb2.ModelConfig.DESCRIPTOR.oneofs_by_name["model"].fields}
    assert members == set(registry.MODELS)
    # model_class names map onto the same members.
    assert set(config_lib.MODEL_CLASSES.values()) == members


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; registered models: apg, "
                                          r"dbmtl, esmm, hmoe, m2m, mmoe,"):
        registry.model_class("nope")


def test_every_registered_model_imports():
    for which in registry.MODELS:
        assert registry.model_class(which).__name__ == registry.MODELS[which].split(":")[1]
