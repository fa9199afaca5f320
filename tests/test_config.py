"""mtrec.config: parsing, overrides and validation (pure protobuf, no TensorFlow)."""
import copy
import glob
import json
import os
import subprocess
import sys

import pytest

import conftest
from conftest import DOMAIN_INPUTS, DOMAIN_TOWERS, TINY_INPUTS
from mtrec import config as config_lib
from mtrec.config import overrides
from mtrec.errors import ConfigError
from mtrec.models import registry
from mtrec.protos import pipeline_pb2, train_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "samples", "model_config", "*.config")))

# A small valid MMoE config. Tests edit it with str.replace and compute the expected
# line numbers from the edited text (see line_of).
BASE = TINY_INPUTS + """\
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  mmoe {
    expert_dnn { hidden_units: [8] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" }
    task_towers { tower_name: "cvr" label_name: "buy" }
  }
}
"""


def edit(old: str, new: str, text: str = BASE) -> str:
    return conftest.edit(old, new, text)


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line containing `needle`."""
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(lines) == 1, f"{needle!r} is on lines {lines}"
    return lines[0]


def write(tmp_path, text: str, name: str = "pipeline.config") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_error(tmp_path, text: str) -> tuple[str, str]:
    """(path, message) of the ConfigError that loading `text` raises."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config_lib.load(path)
    return path, str(info.value)


def parsed(text: str = BASE):
    return config_lib.parse_text(text)


# ---------------------------------------------------------------------------
# Sample configs and the base config


def test_there_are_sample_configs():
    names = {os.path.basename(p) for p in SAMPLE_CONFIGS}
    assert {"mmoe_on_taobao.config", "esmm_on_taobao.config",
            "simple_multi_task_on_taobao.config"} <= names


@pytest.mark.parametrize("path", SAMPLE_CONFIGS, ids=os.path.basename)
def test_sample_config_loads_and_validates(path):
    loaded = config_lib.load(path)
    assert isinstance(loaded.pipeline, pipeline_pb2.PipelineConfig)
    assert loaded.warnings == []
    assert loaded.source.path == path
    pipeline = loaded.pipeline
    classes = registry.model_classes()
    assert pipeline.model_config.model_class in classes
    assert (pipeline.model_config.WhichOneof("model")
            == classes[pipeline.model_config.model_class])
    towers = config_lib.task_towers(pipeline.model_config)
    # RankModel samples (backbone, single task) have one tower.
    assert len(towers) == (1 if pipeline.model_config.model_class == "RankModel" else 2)
    inputs = {f.input_name for f in pipeline.data_config.input_fields}
    for tower in towers:
        assert tower.tower_name and tower.label_name in inputs
    # fill_defaults filled in every feature_name.
    assert all(f.feature_name for f in config_lib.all_features(pipeline))


def test_base_config_is_valid(tmp_path):
    loaded = config_lib.load(write(tmp_path, BASE))
    assert loaded.warnings == []
    assert [t.tower_name for t in config_lib.task_towers(loaded.pipeline.model_config)] == \
        ["ctr", "cvr"]
    assert config_lib.label_names(loaded.pipeline) == ["clk", "buy"]


def test_config_module_does_not_import_tensorflow():
    code = ("import sys, glob\n"
            "import mtrec.config as c\n"
            f"for p in sorted(glob.glob({os.path.join(ROOT, 'samples', 'model_config', '*.config')!r})):\n"
            "    c.load(p)\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_missing_config_file(tmp_path):
    path = str(tmp_path / "nope.config")
    with pytest.raises(ConfigError, match="config file not found"):
        config_lib.load(path)


# ---------------------------------------------------------------------------
# Syntax errors and unknown fields name path:line:col


def test_syntax_error_bad_integer_names_line_and_column(tmp_path):
    text = edit("batch_size: 4", "batch_size: abc")
    path, message = load_error(tmp_path, text)
    line = line_of(text, "batch_size: abc")
    # "  batch_size: abc": the value starts at column 15.
    assert message.startswith(f"{path}:{line}:15: ")
    assert "abc" in message
    assert "integer" in message


def test_syntax_error_missing_brace_names_line(tmp_path):
    text = edit("data_config {", "data_config")
    path, message = load_error(tmp_path, text)
    # The parser notices on the first line after `data_config`.
    line = line_of(text, "batch_size: 4")
    assert message.startswith(f"{path}:{line}:")
    assert 'Expected "{"' in message


def test_syntax_error_unclosed_brace_at_end(tmp_path):
    text = BASE.rstrip("\n")[:-1]  # drop the final "}"
    path, message = load_error(tmp_path, text)
    assert message.startswith(f"{path}:")
    assert 'Expected "}"' in message


def test_parse_text_uses_given_path():
    with pytest.raises(ConfigError) as info:
        config_lib.parse_text("data_config {\n  batch_size: -3\n}\n", "my.config")
    assert str(info.value).startswith("my.config:2:")


def test_unknown_easyrec_field_names_field_and_line(tmp_path):
    text = edit("  batch_size: 4\n", '  batch_size: 4\n  feature_fields: "user"\n')
    path, message = load_error(tmp_path, text)
    line = line_of(text, "feature_fields")
    assert message.startswith(f"{path}:{line}:3: ")
    assert '"feature_fields"' in message
    assert "DatasetConfig" in message
    assert "mtrec does not support `feature_fields` here" in message


def test_misspelt_field_names_field_and_line(tmp_path):
    text = edit("expert_dnn { hidden_units: [8] }", "expert_dnn { hiden_units: [8] }")
    path, message = load_error(tmp_path, text)
    line = line_of(text, "hiden_units")
    # "    expert_dnn { hiden_units": the field starts at column 18.
    assert message.startswith(f"{path}:{line}:18: ")
    assert "hiden_units" in message
    assert "DNN" in message


def test_parse_error_message_has_no_doubled_period():
    # protobuf's reason already ends with "."; mtrec appends another one.
    with pytest.raises(ConfigError) as info:
        config_lib.parse_text('data_config { feature_fields: "user" }', "x.config")
    assert ".." not in str(info.value)


# ---------------------------------------------------------------------------
# Semantic errors: each names the problem and the line


def test_feature_group_names_undefined_feature(tmp_path):
    text = edit('feature_names: "price" }', 'feature_names: "price"\n    feature_names: "nope" }')
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'nope')}: feature group 'all' names feature 'nope'" in message
    assert "not defined" in message
    assert message.startswith(f"{path}: 1 problem:")


def test_feature_group_undefined_feature_in_list_syntax_names_line(tmp_path):
    # `feature_names: ["user", "nope"]` is the same field in text format's list form.
    text = edit('feature_names: "user" feature_names: "price" }',
                'feature_names: ["user", "nope"] }')
    path, message = load_error(tmp_path, text)
    assert "names feature 'nope'" in message
    assert f"{path}:{line_of(text, 'nope')}: " in message


def test_label_field_not_an_input(tmp_path):
    text = edit('  label_fields: "buy"\n', '  label_fields: "buy"\n  label_fields: "pay"\n')
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'pay')}: label_fields: 'pay' is not an input field." in message


def test_duplicate_tower_name(tmp_path):
    text = edit('tower_name: "cvr"', 'tower_name: "ctr"')
    path, message = load_error(tmp_path, text)
    assert "tower name 'ctr' is used twice" in message
    # Either line that holds the duplicated name is a fair pointer.
    lines = [i for i, l in enumerate(text.splitlines(), 1) if 'tower_name: "ctr"' in l]
    assert len(lines) == 2
    assert any(f"{path}:{n}: " in message for n in lines)


def test_linear_logits_without_a_wide_group(tmp_path):
    text = edit("    num_expert: 2\n", "    num_expert: 2\n    use_linear_logits: true\n")
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'use_linear_logits')}: mmoe.use_linear_logits needs a "
            "feature group with wide_deep: WIDE") in message


def test_fm_logits_over_embeddings_of_different_widths(tmp_path):
    text = edit("    num_expert: 2\n", "    num_expert: 2\n    use_fm_logits: true\n")
    text = edit('num_buckets: 50 embedding_dim: 4', 'num_buckets: 50 embedding_dim: 8', text)
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'use_fm_logits')}: mmoe.use_fm_logits needs one "
            "embedding_dim for all embedded DEEP features; they differ:") in message


def test_model_class_does_not_match_block(tmp_path):
    start = BASE.index("  mmoe {")
    end = BASE.index("  }\n", start) + len("  }\n")
    text = BASE[:start] + "  esmm {}\n" + BASE[end:]
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'model_class')}: model_class 'MMoE' does not match the "
            "`esmm` block") in message
    assert "use `mmoe { ... }` or model_class 'ESMM'" in message


def test_unknown_model_class_lists_known_ones(tmp_path):
    text = edit('model_class: "MMoE"', 'model_class: "MMOE2"')
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'MMOE2')}: model_class 'MMOE2' is not a known model" in message
    for name in ("MMoE", "ESMM", "PLE", "DBMTL", "SimpleMultiTask"):
        assert name in message.split("known:", 1)[1]


def test_model_class_without_block(tmp_path):
    start = BASE.index("  mmoe {")
    end = BASE.index("  }\n", start) + len("  }\n")
    text = BASE[:start] + BASE[end:]
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'model_class')}: model_class 'MMoE' needs a `mmoe {{ ... }}`" \
        in message


def test_id_feature_with_hash_bucket_size_and_vocab_list(tmp_path):
    text = edit('input_names: "user" hash_bucket_size: 100',
                'input_names: "user" hash_bucket_size: 100 vocab_list: ["a", "b"]')
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'vocab_list')}: IdFeature 'user' needs exactly one of "
            "hash_bucket_size, num_buckets, vocab_list, vocab_file "
            "(has hash_bucket_size, vocab_list).") in message


def test_tower_label_not_an_input(tmp_path):
    text = edit('label_name: "buy"', 'label_name: "pay"')
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'pay')}: tower 'cvr': label 'pay' is not an input field." \
        in message


def test_use_moving_average_is_an_error(tmp_path):
    text = edit("  optimizer_config {\n", "  optimizer_config {\n    use_moving_average: true\n")
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'use_moving_average')}: use_moving_average: true is not "
            "supported") in message


def test_dense_moments_on_lazy_adam_is_an_error(tmp_path):
    text = edit("  optimizer_config {\n    adam_optimizer {\n",
                "  optimizer_config {\n    lazy_adam_optimizer {\n      dense_moments: true\n")
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'dense_moments')}: lazy_adam_optimizer cannot have "
            "dense_moments: true") in message


def test_exascale_strategy_is_an_error(tmp_path):
    text = edit("  num_steps: 10\n", "  num_steps: 10\n  train_distribute: ExascaleStrategy\n")
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'ExascaleStrategy')}: train_distribute: ExascaleStrategy "
            "is not supported (") in message
    assert "use one of NoStrategy, MirroredStrategy" in message


def test_neither_num_steps_nor_num_epochs(tmp_path):
    text = edit("  num_steps: 10\n", "")
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'train_config')}: set train_config.num_steps or "
            "data_config.num_epochs") in message


def test_num_epochs_alone_is_enough(tmp_path):
    text = edit("  num_steps: 10\n", "").replace("  batch_size: 4\n",
                                                  "  batch_size: 4\n  num_epochs: 2\n")
    assert config_lib.load(write(tmp_path, text)).pipeline.data_config.num_epochs == 2


def test_several_problems_are_all_listed(tmp_path):
    text = edit('label_name: "buy"', 'label_name: "pay"')
    text = edit("  num_steps: 10\n", "  num_steps: 10\n  train_distribute: HorovodStrategy\n",
                text)
    path, message = load_error(tmp_path, text)
    assert message.startswith(f"{path}: 2 problems:\n")
    assert "label 'pay'" in message and "HorovodStrategy" in message


def test_sync_replicas_is_a_warning_not_an_error(tmp_path):
    text = edit("  num_steps: 10\n", "  num_steps: 10\n  sync_replicas: true\n")
    path = write(tmp_path, text)
    loaded = config_lib.load(path)
    assert len(loaded.warnings) == 1
    warning = loaded.warnings[0]
    assert warning.startswith(f"{path}:{line_of(text, 'sync_replicas')}: ")
    assert "sync_replicas" in warning and "ignored" in warning


def test_validate_errors_of_python_built_config_name_generated_lines():
    pipeline = parsed(edit('label_name: "buy"', 'label_name: "pay"'))
    generated = config_lib.to_text(pipeline)
    with pytest.raises(ConfigError) as info:
        config_lib.from_pipeline(pipeline, "built.config")
    message = str(info.value)
    assert f"built.config:{line_of(generated, 'pay')}: tower 'cvr'" in message


# ---------------------------------------------------------------------------
# Defaults, filled in by fill_defaults before validation


def test_tower_without_label_name_gets_label_field():
    text = edit('tower_name: "ctr" label_name: "clk"', 'tower_name: "ctr"')
    text = edit('tower_name: "cvr" label_name: "buy"', 'tower_name: "cvr"', text)
    loaded = config_lib.from_pipeline(parsed(text))
    towers = loaded.pipeline.model_config.mmoe.task_towers
    assert [t.label_name for t in towers] == ["clk", "buy"]


def test_tower_without_any_name_is_named_after_its_label():
    text = edit('tower_name: "ctr" label_name: "clk"', "")
    text = edit('tower_name: "cvr" label_name: "buy"', "", text)
    loaded = config_lib.from_pipeline(parsed(text))
    towers = loaded.pipeline.model_config.mmoe.task_towers
    assert [(t.tower_name, t.label_name) for t in towers] == [("clk", "clk"), ("buy", "buy")]


def test_tower_without_label_and_no_label_field_is_an_error():
    text = edit('  label_fields: "clk"\n  label_fields: "buy"\n', "")
    text = edit('tower_name: "cvr" label_name: "buy"', 'tower_name: "cvr"', text)
    with pytest.raises(ConfigError, match=r"tower 'cvr' has no label_name and there is no "
                                          r"label_fields\[1\]"):
        config_lib.from_pipeline(parsed(text))


def test_feature_name_defaults_to_first_input_name():
    pipeline = parsed()
    assert [f.feature_name for f in pipeline.feature_config.features] == ["", ""]
    config_lib.from_pipeline(pipeline)
    assert [f.feature_name for f in pipeline.feature_config.features] == ["user", "price"]
    assert config_lib.feature_name(pipeline.feature_config.features[0]) == "user"


def test_legacy_feature_configs_form_is_read():
    text = edit('feature_config {\n'
                '  features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }\n'
                '  features { input_names: "price" num_buckets: 50 embedding_dim: 4 }\n'
                '}\n',
                'feature_configs { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }\n'
                'feature_configs { feature_name: "p" input_names: "price" num_buckets: 50 '
                'embedding_dim: 4 }\n')
    text = edit('feature_names: "price"', 'feature_names: "p"', text)
    pipeline = config_lib.from_pipeline(parsed(text)).pipeline
    assert [config_lib.feature_name(f) for f in config_lib.all_features(pipeline)] == \
        ["user", "p"]


def test_combiner_defaults_to_sum():
    pipeline = parsed()
    feature = pipeline.feature_config.features[0]
    assert not feature.HasField("combiner")
    assert feature.combiner == "sum"


def test_bad_combiner_is_an_error(tmp_path):
    text = edit('input_names: "user" hash_bucket_size: 100',
                'input_names: "user" combiner: "max" hash_bucket_size: 100')
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'max')}: feature 'user': combiner must be \"mean\" or "
            "\"sum\", got 'max'.") in message


# ---------------------------------------------------------------------------
# Overrides: set_path / apply_overrides / load(edit_config_json=..., sets=...)


def test_set_dotted_scalar_path():
    pipeline = parsed()
    config_lib.set_path(pipeline, "data_config.batch_size", 512)
    assert pipeline.data_config.batch_size == 512
    config_lib.set_path(pipeline, "model_dir", "/tmp/x")
    assert pipeline.model_dir == "/tmp/x"
    config_lib.set_path(pipeline, "model_config.mmoe.expert_dnn.use_bn", False)
    assert pipeline.model_config.mmoe.expert_dnn.HasField("use_bn")
    assert pipeline.model_config.mmoe.expert_dnn.use_bn is False


def test_set_indexed_entry_of_legacy_feature_configs():
    text = edit('feature_config {\n'
                '  features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }\n'
                '  features { input_names: "price" num_buckets: 50 embedding_dim: 4 }\n'
                '}\n',
                'feature_configs { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }\n'
                'feature_configs { input_names: "price" num_buckets: 50 embedding_dim: 4 }\n')
    pipeline = parsed(text)
    config_lib.set_path(pipeline, "feature_configs[0].embedding_dim", 32)
    assert [f.embedding_dim for f in pipeline.feature_configs] == [32, 4]
    config_lib.set_path(pipeline, "feature_configs[-1].embedding_dim", 8)
    assert [f.embedding_dim for f in pipeline.feature_configs] == [32, 8]


def test_set_all_entries():
    pipeline = parsed()
    config_lib.set_path(pipeline, "feature_config.features[:].embedding_dim", 16)
    assert [f.embedding_dim for f in pipeline.feature_config.features] == [16, 16]
    config_lib.set_path(pipeline, "model_config.mmoe.task_towers[:].weight", 0.25)
    assert [t.weight for t in pipeline.model_config.mmoe.task_towers] == [0.25, 0.25]


def test_set_entry_selected_by_nested_condition():
    pipeline = parsed()
    config_lib.set_path(pipeline, "feature_config.features[input_names[0]=price].num_buckets", 70)
    assert [f.num_buckets for f in pipeline.feature_config.features] == [0, 70]
    assert pipeline.feature_config.features[0].hash_bucket_size == 100


def test_set_entry_selected_by_name():
    pipeline = parsed()
    config_lib.set_path(pipeline, "model_config.mmoe.task_towers[tower_name=cvr].weight", 0.5)
    assert [t.weight for t in pipeline.model_config.mmoe.task_towers] == [1.0, 0.5]


def test_selector_comparison_operators():
    pipeline = parsed()
    config_lib.set_path(pipeline, "feature_config.features[embedding_dim>=4].embedding_dim", 6)
    config_lib.set_path(pipeline, "feature_config.features[num_buckets>10].embedding_dim", 9)
    assert [f.embedding_dim for f in pipeline.feature_config.features] == [6, 9]
    config_lib.set_path(pipeline, "model_config.mmoe.task_towers[tower_name!=ctr].num_class", 3)
    assert [t.num_class for t in pipeline.model_config.mmoe.task_towers] == [1, 3]


def test_selector_matching_nothing_is_an_error():
    with pytest.raises(ConfigError, match=r"no entry of task_towers matches \[tower_name=ctcvr\]"):
        config_lib.set_path(parsed(), "model_config.mmoe.task_towers[tower_name=ctcvr].weight", 1)


def test_set_enum_by_name_and_number():
    pipeline = parsed()
    config_lib.set_path(pipeline, "train_config.train_distribute", "MirroredStrategy")
    assert pipeline.train_config.train_distribute == train_pb2.MirroredStrategy
    config_lib.set_path(pipeline, "data_config.input_fields[input_name=price].input_type",
                        "DOUBLE")
    assert pipeline.data_config.input_fields[3].input_type == \
        pipeline.data_config.DOUBLE
    config_lib.set_path(pipeline, "train_config.train_distribute", 0)
    assert pipeline.train_config.train_distribute == train_pb2.NoStrategy


def test_set_unknown_enum_name_lists_names():
    with pytest.raises(ConfigError) as info:
        config_lib.set_path(parsed(), "train_config.train_distribute", "Mirrored")
    message = str(info.value)
    assert "'Mirrored' is not one of" in message
    assert "MirroredStrategy" in message and "NoStrategy" in message


def test_set_repeated_scalar_from_json_list():
    pipeline = parsed()
    config_lib.set_path(pipeline, "data_config.label_fields", ["buy", "clk", "user"])
    assert list(pipeline.data_config.label_fields) == ["buy", "clk", "user"]
    config_lib.set_path(pipeline, "model_config.mmoe.expert_dnn.hidden_units", [64, 32])
    assert list(pipeline.model_config.mmoe.expert_dnn.hidden_units) == [64, 32]
    config_lib.set_path(pipeline, "model_config.mmoe.expert_dnn.hidden_units[1]", 16)
    assert list(pipeline.model_config.mmoe.expert_dnn.hidden_units) == [64, 16]
    # A single value replaces the whole list.
    config_lib.set_path(pipeline, "model_config.mmoe.expert_dnn.hidden_units", 7)
    assert list(pipeline.model_config.mmoe.expert_dnn.hidden_units) == [7]


def test_set_message_field_from_text_format():
    pipeline = parsed()
    config_lib.set_path(pipeline, "model_config.mmoe.expert_dnn",
                        "hidden_units: [64, 32] use_bn: false")
    dnn = pipeline.model_config.mmoe.expert_dnn
    assert list(dnn.hidden_units) == [64, 32]
    assert dnn.use_bn is False
    # The message is replaced, not merged into.
    config_lib.set_path(pipeline, "model_config.mmoe.expert_dnn", "hidden_units: 5")
    assert list(dnn.hidden_units) == [5] and dnn.use_bn is True


def test_set_repeated_message_entry_from_text_format():
    pipeline = parsed()
    config_lib.set_path(pipeline, "model_config.mmoe.task_towers[tower_name=cvr]",
                        'tower_name: "cvr2" label_name: "clk" weight: 2')
    towers = pipeline.model_config.mmoe.task_towers
    assert [(t.tower_name, t.label_name, t.weight) for t in towers] == \
        [("ctr", "clk", 1.0), ("cvr2", "clk", 2.0)]


def test_set_message_field_with_bad_text_is_an_error():
    with pytest.raises(ConfigError, match=r"override 'model_config.mmoe.expert_dnn'"):
        config_lib.set_path(parsed(), "model_config.mmoe.expert_dnn", "hidden_unitz: 3")


def test_set_message_field_with_non_string_is_an_error():
    with pytest.raises(ConfigError, match="expert_dnn is a message; give its text format"):
        config_lib.set_path(parsed(), "model_config.mmoe.expert_dnn", 3)


def test_bad_path_lists_valid_field_names():
    with pytest.raises(ConfigError) as info:
        config_lib.set_path(parsed(), "data_config.batchsize", 1)
    message = str(info.value)
    assert message.startswith("override 'data_config.batchsize': DatasetConfig has no field "
                              "'batchsize'; its fields are: ")
    fields = message.split("its fields are: ", 1)[1].rstrip(".").split(", ")
    assert "batch_size" in fields and "label_fields" in fields and "input_fields" in fields
    assert fields == sorted(fields)


def test_bad_top_level_path_lists_pipeline_fields():
    with pytest.raises(ConfigError) as info:
        config_lib.set_path(parsed(), "data.batch_size", 1)
    assert "PipelineConfig has no field 'data'" in str(info.value)
    assert "data_config" in str(info.value)


def test_index_out_of_range():
    with pytest.raises(ConfigError) as info:
        config_lib.set_path(parsed(), "feature_config.features[2].embedding_dim", 8)
    assert str(info.value) == ("override 'feature_config.features[2].embedding_dim': index 2 "
                               "out of range (features has 2 entries).")
    with pytest.raises(ConfigError, match=r"index -3 out of range"):
        config_lib.set_path(parsed(), "feature_config.features[-3].embedding_dim", 8)


def test_repeated_field_without_selector_is_an_error():
    with pytest.raises(ConfigError, match=r"features is repeated; pick entries"):
        config_lib.set_path(parsed(), "feature_config.features.embedding_dim", 8)


def test_selector_on_singular_field_is_an_error():
    with pytest.raises(ConfigError, match=r"data_config is not repeated; drop \[0\]"):
        config_lib.set_path(parsed(), "data_config[0].batch_size", 8)


def test_path_through_a_scalar_field_is_an_error_that_says_so():
    with pytest.raises(ConfigError) as info:
        config_lib.set_path(parsed(), "data_config.batch_size.value", 8)
    message = str(info.value)
    assert "batch_size" in message
    # batch_size is a singular integer, not a repeated field.
    assert "is repeated" not in message


@pytest.mark.parametrize("path, value, fragment", [
    ("data_config.batch_size", "abc", "'abc' is not a valid non-negative integer for batch_size"),
    ("data_config.batch_size", -1, "-1 is not a valid non-negative integer for batch_size"),
    ("data_config.batch_size", [1, 2], "is not a valid non-negative integer for batch_size"),
    ("data_config.shuffle", "maybe", "'maybe' is not a valid bool for shuffle"),
    ("model_config.mmoe.task_towers[0].weight", "heavy", "'heavy' is not a valid number for weight"),
    ("export_config.batch_size", "x", "'x' is not a valid integer for batch_size"),
])
def test_value_of_wrong_type_is_an_error(path, value, fragment):
    with pytest.raises(ConfigError) as info:
        config_lib.set_path(parsed(), path, value)
    assert str(info.value).startswith(f"override {path!r}: ")
    assert fragment in str(info.value)


def test_fractional_value_for_integer_field_is_an_error():
    # int(3.5) == 3 would silently truncate the user's value.
    pipeline = parsed()
    with pytest.raises(ConfigError, match="batch_size"):
        config_lib.set_path(pipeline, "data_config.batch_size", 3.5)


def test_whole_float_for_integer_field_is_accepted():
    pipeline = parsed()
    config_lib.set_path(pipeline, "data_config.batch_size", 256.0)
    assert pipeline.data_config.batch_size == 256


def test_apply_overrides_json_then_sets():
    pipeline = parsed()
    config_lib.apply_overrides(
        pipeline,
        edit_config_json='{"data_config.batch_size": 64, "train_config.num_steps": 7}',
        sets=["data_config.batch_size=512", "data_config.shuffle=false",
              "model_dir=experiments/x", "model_config.mmoe.task_towers[tower_name=cvr].weight=0.5",
              "feature_config.features[input_names[0]=price].num_buckets=20"])
    assert pipeline.data_config.batch_size == 512  # --set wins over --edit_config_json
    assert pipeline.train_config.num_steps == 7
    assert pipeline.data_config.shuffle is False
    assert pipeline.model_dir == "experiments/x"
    assert pipeline.model_config.mmoe.task_towers[1].weight == 0.5
    assert pipeline.feature_config.features[1].num_buckets == 20


def test_apply_overrides_takes_a_dict():
    pipeline = parsed()
    config_lib.apply_overrides(pipeline, {"data_config.label_fields": ["buy"]})
    assert list(pipeline.data_config.label_fields) == ["buy"]


@pytest.mark.parametrize("edit_json, fragment", [
    ("{not json", "--edit_config_json is not valid JSON"),
    ("[1, 2]", "--edit_config_json must be a JSON object"),
])
def test_apply_overrides_bad_json(edit_json, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_lib.apply_overrides(parsed(), edit_json)


def test_set_without_equals_is_an_error():
    with pytest.raises(ConfigError, match=r"expected path=value"):
        config_lib.apply_overrides(parsed(), sets=["data_config.batch_size"])


@pytest.mark.parametrize("raw, expected", [
    ("512", 512), ("true", True), ("false", False), ("0.5", 0.5), ("[64, 32]", [64, 32]),
    ("hello", "hello"), ("/data/train.csv", "/data/train.csv"), ('"quoted"', "quoted"),
])
def test_set_value_parsing(raw, expected):
    # --set values are kept as typed and decoded for non-string fields like JSON.
    value = overrides._decode_raw(overrides._parse_set_value(raw))
    assert value == expected
    assert type(value) is type(expected)


def test_set_values_reach_fields_with_their_types():
    pipeline = parsed()
    config_lib.apply_overrides(pipeline, sets=[
        "data_config.batch_size=512", "data_config.with_header=true",
        "model_config.model_name=my model", "data_config.separator=;",
        "model_config.mmoe.expert_dnn.hidden_units=[64, 32]"])
    assert pipeline.data_config.batch_size == 512
    assert pipeline.data_config.with_header is True
    assert pipeline.model_config.model_name == "my model"
    assert pipeline.data_config.separator == ";"
    assert list(pipeline.model_config.mmoe.expert_dnn.hidden_units) == [64, 32]


def test_set_string_field_keeps_number_like_text():
    # A string field given a value that looks like a number must keep the text as typed.
    pipeline = parsed()
    config_lib.apply_overrides(pipeline, sets=["model_config.model_name=2024",
                                               "data_config.input_fields[2].default_val=1.10"])
    assert pipeline.model_config.model_name == "2024"
    assert pipeline.data_config.input_fields[2].default_val == "1.10"


def test_load_with_edit_config_json_and_sets(tmp_path):
    path = write(tmp_path, BASE)
    loaded = config_lib.load(path, edit_config_json={"feature_config.features[:].embedding_dim": 8},
                             sets=["train_config.num_steps=99"], model_dir=str(tmp_path / "m"))
    assert [f.embedding_dim for f in loaded.pipeline.feature_config.features] == [8, 8]
    assert loaded.pipeline.train_config.num_steps == 99
    assert loaded.pipeline.model_dir == str(tmp_path / "m")


def test_load_validates_after_overrides(tmp_path):
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError, match="train_distribute: HorovodStrategy is not supported"):
        config_lib.load(path, sets=["train_config.train_distribute=HorovodStrategy"])
    with pytest.raises(ConfigError, match=r"override 'train_config.num_step'"):
        config_lib.load(path, sets=["train_config.num_step=5"])


def test_to_text_round_trips():
    pipeline = config_lib.from_pipeline(parsed()).pipeline
    again = config_lib.parse_text(config_lib.to_text(pipeline))
    assert again == pipeline
    assert json.loads(json.dumps(config_lib.label_names(again))) == ["clk", "buy"]


def test_bad_enum_value_lists_the_valid_values(tmp_path):
    path = tmp_path / "enum.config"
    path.write_text('data_config {\n  input_fields {\n    input_name: "a"\n'
                    '    input_type: FLOAT32\n  }\n}\n')
    with pytest.raises(ConfigError) as error:
        config_lib.load(str(path))
    message = str(error.value)
    assert f"{path}:4:" in message
    assert "Valid values: INT32, INT64, STRING, FLOAT, DOUBLE, BOOL." in message


def test_misspelt_field_suggests_the_right_name(tmp_path):
    path = tmp_path / "typo.config"
    path.write_text('feature_configs {\n  input_names: "a"\n  embeding_dim: 8\n}\n')
    with pytest.raises(ConfigError) as error:
        config_lib.load(str(path))
    assert f"{path}:3:" in str(error.value)
    assert "Did you mean `embedding_dim`?" in str(error.value)


# ---------------------------------------------------------------------------
# Validation never changes the config; defaults are filled in before it, in one step

RANK_MODEL_WITHOUT_PARAMS = TINY_INPUTS + """\
model_config {
  model_class: "RankModel"
  feature_groups { group_name: "all" feature_names: "user" }
  backbone { blocks { name: "mlp" inputs { feature_group_name: "all" }
                      keras_layer { class_name: "MLP" mlp { hidden_units: [4] } } } }
}
"""
UNCHANGED_CASES = {
    **{os.path.basename(p): open(p, encoding="utf-8").read() for p in SAMPLE_CONFIGS},
    "rank_model_without_model_params": RANK_MODEL_WITHOUT_PARAMS,
    "towers_without_names": edit('tower_name: "cvr" label_name: "buy"', "",
                                 edit('tower_name: "ctr" label_name: "clk"', "")),
}


@pytest.mark.parametrize("name", sorted(UNCHANGED_CASES))
def test_validation_never_changes_the_config(name):
    text = UNCHANGED_CASES[name]
    pipeline = config_lib.parse_text(text, name)
    config_lib.fill_defaults(pipeline)
    checked = copy.deepcopy(pipeline)
    config_lib.validate(checked, config_lib.Source(name, text))
    assert checked == pipeline
    assert config_lib.to_text(checked) == config_lib.to_text(pipeline)


def test_fill_defaults_gives_a_rank_model_its_params_and_tower():
    pipeline = config_lib.parse_text(RANK_MODEL_WITHOUT_PARAMS)
    assert pipeline.model_config.WhichOneof("model") is None
    config_lib.fill_defaults(pipeline)
    assert pipeline.model_config.WhichOneof("model") == "model_params"
    assert [(t.tower_name, t.label_name) for t in config_lib.task_towers(
        pipeline.model_config)] == [("clk", "clk")]
    assert config_lib.from_pipeline(pipeline).warnings == []


def test_defaults_do_not_create_a_missing_esmm_tower(tmp_path):
    text = TINY_INPUTS + """\
model_config {
  model_class: "ESMM"
  feature_groups { group_name: "all" feature_names: ["user", "price"] }
  esmm {
    cvr_tower { tower_name: "cvr" label_name: "buy" }
  }
}
"""
    path, message = load_error(tmp_path, text)
    assert message == f"{path}: 1 problem:\n  {path}:{line_of(text, 'esmm {')}: esmm needs a " \
                      "ctr_tower."


def test_at_most_50_problems_are_listed(tmp_path):
    features = "".join(f'  features {{ input_names: "nope{i}" hash_bucket_size: 10 '
                       f'embedding_dim: 4 }}\n' for i in range(60))
    text = edit("feature_config {\n", "feature_config {\n" + features)
    path, message = load_error(tmp_path, text)
    lines = message.splitlines()
    assert lines[0] == f"{path}: 60 problems:"
    assert len(lines) == 1 + 50 + 1
    assert lines[50].endswith("feature 'nope49' reads 'nope49', which is not in "
                              "data_config.input_fields.")
    assert lines[-1] == "  ... and 10 more."


def test_source_where_splits_the_text_once():
    source = config_lib.Source("x.config", "a: 1  # b: 2\nb: 2\n")
    assert source.where("b") == "x.config:2"
    source.text = "b: 3\n"  # the lines are cached at the first lookup
    assert source.where("b") == "x.config:2"


def test_wide_and_deep_group_is_an_error_naming_its_line(tmp_path):
    text = edit('feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }',
                'feature_groups { group_name: "all" feature_names: "user" }\n'
                '  feature_groups { group_name: "both" feature_names: "price"\n'
                '                   wide_deep: WIDE_AND_DEEP }')
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'WIDE_AND_DEEP')}: feature group 'both': wide_deep: "
            "WIDE_AND_DEEP (the group feeds both the wide and the deep part) is not supported; "
            "list its features in two groups, one with `wide_deep: WIDE` and one with "
            "`wide_deep: DEEP`.") in message


# ---------------------------------------------------------------------------
# Each model's own checks (mtrec.models.checks) name a line

PLE = TINY_INPUTS + """\
model_config {
  model_class: "PLE"
  feature_groups { group_name: "all" feature_names: ["user", "price"] }
  ple {
    extraction_networks {
      network_name: "first"
      expert_num_per_task: 1
      share_num: 1
      task_expert_net { hidden_units: [8] }
      share_expert_net { hidden_units: [8] }
    }
    extraction_networks {
      network_name: "second"
      expert_num_per_task: 1
      share_num: 1
      task_expert_net { hidden_units: [6] }
      share_expert_net { hidden_units: [6] }
    }
    task_towers { tower_name: "ctr" label_name: "clk" }
    task_towers { tower_name: "cvr" label_name: "buy" }
  }
}
"""


def test_ple_sample_is_valid(tmp_path):
    assert config_lib.load(write(tmp_path, PLE)).warnings == []


@pytest.mark.parametrize("old, new, line_needle, fragment", [
    ('second"\n      expert_num_per_task: 1\n      share_num: 1',
     'second"\n      expert_num_per_task: 0\n      share_num: 0',
     "second", "ple.extraction_networks[1] ('second') has no experts: set expert_num_per_task or "
               "share_num to at least 1."),
    ("share_expert_net { hidden_units: [6] }", "share_expert_net { use_bn: false }",
     "second", "ple.extraction_networks[1] ('second') needs share_expert_net "
               "{ hidden_units: ... } for its 1 expert(s)."),
    ("share_expert_net { hidden_units: [6] }", "share_expert_net { hidden_units: [4] }",
     "second", "ple.extraction_networks[1] ('second'): task_expert_net and share_expert_net "
               "must end with the same width (one gate mixes both), got 6 and 4."),
])
def test_ple_checks_name_the_extraction_network(tmp_path, old, new, line_needle, fragment):
    text = edit(old, new, PLE)
    path, message = load_error(tmp_path, text)
    # The line of the level's `extraction_networks {`: just above its network_name.
    line = line_of(text, f'network_name: "{line_needle}"') - 1
    assert f"{path}:{line}: {fragment}" in message


def test_ple_without_levels_names_its_block(tmp_path):
    start, end = PLE.index("    extraction_networks {"), PLE.index("    task_towers")
    text = PLE[:start] + PLE[end:]
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'ple {')}: ple needs at least one "
            "`extraction_networks { ... }` level.") in message


PEPNET = DOMAIN_INPUTS + """\
model_config {
  model_class: "PEPNet"
  feature_groups { group_name: "all" feature_names: ["price", "dom"] }
  feature_groups { group_name: "prior" feature_names: "user" }
  pepnet {
    domain_feature: "dom"
    prior_group_name: "prior"
""" + DOMAIN_TOWERS + "  }\n}\n"


def test_pepnet_ppnet_towers_must_agree_names_the_tower(tmp_path):
    assert config_lib.load(write(tmp_path, PEPNET)).warnings == []
    text = edit('label_name: "buy" dnn { hidden_units: [8] use_bn: false }',
                'label_name: "buy" dnn { hidden_units: [8] use_bn: true }', PEPNET)
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'use_bn: true')}: pepnet with ppnet: every task tower's "
            "dnn must use the same activation, use_bn and dropout_ratio") in message


def test_pepnet_ppnet_needs_one_dropout_ratio_names_the_tower(tmp_path):
    text = PEPNET.replace("use_bn: false }", "use_bn: false dropout_ratio: [0.1, 0.2] }")
    text = text.replace("hidden_units: [8]", "hidden_units: [8, 4]")
    path, message = load_error(tmp_path, text)
    line = line_of(text, 'tower_name: "ctr"')
    assert (f"{path}:{line}: pepnet with ppnet: give one "
            "dropout_ratio per tower dnn.") in message


APG = DOMAIN_INPUTS + """\
model_config {
  model_class: "APG"
  feature_groups { group_name: "all" feature_names: ["user", "price", "dom"] }
  apg {
    domain_feature: "dom"
    hidden_units: [8]
    mf_k: 2
""" + DOMAIN_TOWERS + "  }\n}\n"


def test_apg_checks_name_a_line(tmp_path):
    assert config_lib.load(write(tmp_path, APG)).warnings == []
    text = edit("mf_k: 2", "mf_k: 0", APG)
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'mf_k: 0')}: apg.mf_k and apg.mf_p must be at least 1." \
        in message
    text = edit("    hidden_units: [8]\n", "", APG)
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'apg {')}: apg needs hidden_units" in message


STAR = DOMAIN_INPUTS + """\
model_config {
  model_class: "STAR"
  feature_groups { group_name: "all" feature_names: ["user", "price"] }
  star {
    domain_feature: "dom"
    hidden_units: [8, 4]
""" + DOMAIN_TOWERS + "  }\n}\n"


def test_star_checks_name_a_line(tmp_path):
    assert config_lib.load(write(tmp_path, STAR)).warnings == []
    text = edit("hidden_units: [8, 4]", "hidden_units: [8, 0]", STAR)
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, '[8, 0]')}: star.hidden_units must be positive." in message


def test_a_singular_field_set_twice_keeps_its_last_value(tmp_path, caplog):
    """EasyRec parses with text_format.Merge; four of its sample configs set
    log_step_count_steps twice and rely on the last value."""
    import logging
    from mtrec.config.loader import parse_text
    text = "train_config {\n  num_steps: 5\n  log_step_count_steps: 100\n  log_step_count_steps: 200\n}\n"
    with caplog.at_level(logging.WARNING, logger="mtrec"):
        config = parse_text(text, "dup.config")
    assert config.train_config.log_step_count_steps == 200
    assert config.train_config.num_steps == 5
    assert "dup.config:4: log_step_count_steps is set more than once" in caplog.text
