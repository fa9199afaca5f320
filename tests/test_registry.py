"""The one model table: every `model_config` oneof member has a row (model_class names,
"module:Class", a TF-free config check)."""
import pytest

from mtrec.errors import ConfigError
from mtrec.models import registry
from mtrec.protos import model_pb2

MEMBERS = {f.name for f in model_pb2.ModelConfig.DESCRIPTOR.oneofs_by_name["model"].fields}


def test_registry_covers_the_model_oneof_exactly():
    assert set(registry.MODELS) == MEMBERS


def test_every_model_class_maps_to_its_oneof_member():
    classes = registry.model_classes()
    assert set(classes.values()) == MEMBERS
    assert classes["MMoE"] == "mmoe" and classes["HMoE"] == "hmoe"
    assert classes["MultiTaskModel"] == classes["RankModel"] == "model_params"
    # No model_class is claimed by two rows.
    names = [n for entry in registry.MODELS.values() for n in entry.model_classes]
    assert len(names) == len(set(names))


def test_rank_rows_are_single_output_blocks():
    """A `rank` row's block has the task_towers field config defaults fill with its one
    tower; EasyRec's MultiTower, MultiTowerDIN and MultiTowerBST share one block."""
    from mtrec.config.defaults import is_rank_model
    classes = registry.model_classes()
    assert classes["MultiTower"] == classes["MultiTowerDIN"] == classes["MultiTowerBST"] \
        == "multi_tower"
    rank = {which for which, entry in registry.MODELS.items() if entry.rank}
    assert rank == {"multi_tower", "deepfm", "wide_and_deep", "dcn", "dlrm",
                    "autoint", "fm", "rocket_launching", "cmbf", "uniter"}
    for which in MEMBERS:
        fields = getattr(model_pb2.ModelConfig(), which).DESCRIPTOR.fields_by_name
        assert which not in rank or {"task_towers", "l2_regularization"} <= set(fields), which
        config = model_pb2.ModelConfig(model_class=registry.MODELS[which].model_classes[0])
        getattr(config, which).SetInParent()
        assert is_rank_model(config) == (which in rank or config.model_class == "RankModel")


def test_every_row_has_a_check():
    for which, entry in registry.MODELS.items():
        assert callable(entry.check), which


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; registered models: apg, "
                                          r"autoint, (cmbf, )?dbmtl, dcn, deepfm, dlrm, esmm, "
                                          r"fm, hmoe, m2m, mmoe,"):
        registry.model_class("nope")


def test_every_registered_model_imports():
    for which, entry in registry.MODELS.items():
        assert registry.model_class(which).__name__ == entry.target.split(":")[1]


def test_the_table_does_not_import_tensorflow():
    import subprocess
    import sys
    code = ("import sys\nimport mtrec.models.registry\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
