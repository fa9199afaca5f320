"""Issue #25, config-time checks: memory, dense sizes, weights and rates, activation names,
and parsing edge cases; every one a ConfigError naming file:line before anything is built."""
import time

import pytest

from mtrec import api, cli
from mtrec import config as config_lib
from mtrec.config import activations, sizes
from mtrec.errors import ConfigError
from test_config import BASE, edit, line_of, load_error, write

GIB = 2 ** 30


def one_problem(path: str, message: str) -> str:
    """The one listed problem of a ConfigError's message."""
    head = f"{path}: 1 problem:\n  "
    assert message.startswith(head), message
    return message[len(head):]


# ---------------------------------------------------------------------------
# The memory estimate: a pure function, the available memory, the check


def test_peak_training_bytes_counts_each_part_exactly():
    # state = 1000 x (1 + 2) + 100 x (1 + 1) = 3200 floats; a checkpoint copies it; 100
    # dense gradients; activations 2 x 8 rows x 50 floats.
    floats = 2 * 3200 + 100 + 2 * 8 * 50
    assert sizes.peak_training_bytes(1000, 100, 2, 1, 8, 50) == 4 * floats + 512 * 2 ** 20
    assert sizes.peak_training_bytes(0, 0, 2, 2, 1, 0) == sizes.RUNTIME_BYTES


def test_available_memory_reads_memavailable_then_falls_back_to_physical(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\n"
                       "MemAvailable:    8000000 kB\n")
    assert sizes.available_memory(str(meminfo)) == (8000000 * 1024, "available (MemAvailable)")
    memory, kind = sizes.available_memory(str(tmp_path / "missing"))
    assert kind == "physical" and memory > 0


def dense_of(text: str) -> sizes.DenseSizes:
    from mtrec.config import check_data, check_features, check_model
    from mtrec.config.source import Problems, Source
    pipeline = config_lib.parse_text(text)
    config_lib.fill_defaults(pipeline)
    p = Problems(Source("x", text))
    inputs = check_data.check_data(pipeline, p)
    features, _ = check_features.check_features(pipeline, inputs, p)
    dense = check_model.check_model(pipeline, inputs, features, p)
    assert not p.errors
    return dense


def test_dense_parameters_are_counted_from_the_config_by_multiplying():
    # BASE: user (4) + price (4) = 8 inputs; 2 experts of one Dense(8) with batch norm;
    # 2 gates Dense(8 -> 2); 2 towers of logits Dense(8 -> 1).
    dense = dense_of(BASE)
    assert dense.input_width == 8
    assert [(q.name, q.copies, q.params, q.layers, q.units) for q in dense.parts] == [
        ("mmoe.expert_dnn", 2, 8 * 8 + 8 + 4 * 8, 1, 8),
        ("mmoe gates", 2, 8 * 2 + 2, 1, 2),
        ("tower 'ctr' dnn", 1, 0, 0, 0), ("tower 'ctr' logits", 1, 8 + 1, 1, 1),
        ("tower 'cvr' dnn", 1, 0, 0, 0), ("tower 'cvr' logits", 1, 8 + 1, 1, 1)]
    # A million experts cost one multiplication, not a million steps.
    start = time.process_time()
    big = dense_of(BASE.replace("num_expert: 2", "num_expert: 1000000"))
    assert time.process_time() - start < 1
    assert big.parts[0].copies == 1000000 and big.parts[0].total == 1000000 * 104


def test_memory_tables_that_do_not_fit_in_available_memory_are_refused_with_numbers(
        tmp_path, monkeypatch):
    monkeypatch.setattr(sizes, "available_memory", lambda: (2 * GIB, "available (MemAvailable)"))
    text = edit("hash_bucket_size: 100", "hash_bucket_size: 30000000")
    path, message = load_error(tmp_path, text)
    tables = 30000000 * 4 + 50 * 4
    dense = 2 * 104 + 2 * 18 + 2 * 9
    per_example = 8 + 2 * 8 + 2 * 2 + 2 * 1
    need = 4 * (2 * (3 * tables + 3 * dense) + dense + 2 * 4096 * per_example) + 512 * 2 ** 20
    assert one_problem(path, message) == (
        f"{path}:{line_of(text, 'hash_bucket_size: 30000000')}: training would need "
        f"~{need / GIB:.1f} GiB at its peak (embedding tables {4 * tables / GIB:.1f} GiB and "
        f"their 2 optimizer slot(s) {8 * tables / GIB:.1f} GiB, dense weights with slots and "
        f"gradients 0.0 GiB, a checkpoint's copy of both {12 * tables / GIB:.1f} GiB, "
        "activations at batch size 4,096 (the larger of batch_size and eval_batch_size) "
        "0.0 GiB, TensorFlow 0.5 GiB), more than this machine's 2.0 GiB of available "
        "(MemAvailable) memory less a 10% margin (1.8 GiB); the largest table is 'user' "
        "(120,000,000 floats); lower its hash_bucket_size or embedding_dim. If you know it "
        "fits, pass --skip_memory_check.")
    # Users who know better skip it, from Python and from the command line.
    assert config_lib.load(path, skip_memory_check=True).pipeline.model_config.mmoe.num_expert
    args = cli.build_parser().parse_args(["train", "--config", path, "--skip_memory_check"])
    assert args.skip_memory_check  # the CLI hands it to the API, which loads with it
    assert api._load(path, skip_memory_check=True).pipeline.model_config.mmoe.num_expert
    assert not cli.build_parser().parse_args(["train", "--config", path]).skip_memory_check
    with pytest.raises(ConfigError, match="training would need"):
        api._load(path)


def test_memory_activations_at_the_batch_size_count_too(tmp_path, monkeypatch):
    monkeypatch.setattr(sizes, "available_memory", lambda: (GIB // 2, "physical"))
    path, message = load_error(tmp_path, BASE)
    problem = one_problem(path, message)
    assert problem.startswith(f"{path}:{line_of(BASE, 'batch_size: 4')}: training would need ")
    assert problem.endswith("more than this machine's 0.5 GiB of physical memory less a 10% "
                            "margin (0.5 GiB); lower data_config.batch_size and "
                            "eval_batch_size. If you know it fits, pass --skip_memory_check.")


# ---------------------------------------------------------------------------
# Absurd dense sizes: refused with file:line whatever the memory, before anything is built


@pytest.mark.parametrize("old, new, needle, expected", [
    ("hidden_units: [8]", "hidden_units: [2147483647]", "2147483647",
     "the model would have 60,129,542,154 dense parameters (224.0 GiB of float32), more than "
     "the 2,147,483,648 mtrec builds; the largest part is mmoe.expert_dnn (2 x "
     "27,917,287,411). Lower its hidden_units."),
    ('tower_name: "ctr" label_name: "clk" }',
     'tower_name: "ctr" label_name: "clk" num_class: 2147483648 }', "2147483648",
     "the model would have 19,327,353,085 dense parameters (72.0 GiB of float32), more than "
     "the 2,147,483,648 mtrec builds; the largest part is tower 'ctr' logits (1 x "
     "19,327,352,832). Lower its num_class."),
    ("num_expert: 2", "num_expert: 1000000", "num_expert",
     "the model would build 1,000,004 dense layers (the most in mmoe.expert_dnn: 1,000,000 x "
     "1), more than the 10,000 mtrec builds. Lower its num_expert."),
    ('input_names: "user" hash_bucket_size: 100 embedding_dim: 4',
     'input_names: "user" hash_bucket_size: 1 embedding_dim: 4000000000', "4000000000",
     "the DEEP feature groups give 4,000,000,004 floats per example, more than the 1,048,576 "
     "mtrec builds a model on; the widest feature is 'user' (4,000,000,000). Lower its "
     "embedding_dim."),
])
def test_absurd_dense_sizes_are_refused_before_anything_is_built(tmp_path, monkeypatch, old,
                                                                 new, needle, expected):
    monkeypatch.setattr(sizes, "available_memory", lambda: (2 ** 60, "physical"))
    text = edit(old, new)
    start = time.process_time()
    path, message = load_error(tmp_path, text)
    assert time.process_time() - start < 2
    assert one_problem(path, message) == f"{path}:{line_of(text, needle)}: {expected}"


def test_check_refuses_a_million_experts_before_building_the_model(tmp_path):
    import resource
    import subprocess
    import sys
    path = write(tmp_path, BASE.replace("num_expert: 2", "num_expert: 1000000"))
    def child_cpu():
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    start = child_cpu()
    result = subprocess.run([sys.executable, "-m", "mtrec", "check", "--config", path],
                            capture_output=True, text=True, timeout=300)
    assert child_cpu() - start < 30  # CPU seconds: other jobs must not fail the test
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"{path}:{line_of(BASE, 'num_expert')}: the model would build 1,000,004 dense "
            "layers") in result.stderr


# ---------------------------------------------------------------------------
# Weights, rates, regularisation: in range, with file:line


@pytest.mark.parametrize("old, new, needle, expected", [
    ('tower_name: "ctr" label_name: "clk" }', 'tower_name: "ctr" label_name: "clk"\n'
     '      weight: -1 }', "weight: -1",
     "model_config.mmoe.task_towers[0].weight must be a finite number >= 0, got -1."),
    ('tower_name: "cvr" label_name: "buy" }', 'tower_name: "cvr" label_name: "buy"\n'
     '      losses { weight: inf } }', "weight: inf",
     "model_config.mmoe.task_towers[1].losses[0].weight must be a finite number >= 0, got inf."),
    ("num_expert: 2", "num_expert: 2\n    l2_regularization: -0.5", "l2_regularization",
     "model_config.mmoe.l2_regularization must be a finite number >= 0, got -0.5."),
    ("constant_learning_rate { learning_rate: 0.01 }",
     "constant_learning_rate { learning_rate: -1e-3 }", "learning_rate: -1e-3",
     "train_config.optimizer_config[0].adam_optimizer.learning_rate.constant_learning_rate."
     "learning_rate must be a finite number >= 0, got -0.001."),
    ("constant_learning_rate { learning_rate: 0.01 }",
     "exponential_decay_learning_rate {\n          initial_learning_rate: 0.01\n"
     "          min_learning_rate: 0.1 }", "min_learning_rate",
     "adam_optimizer: min_learning_rate 0.1 is above initial_learning_rate 0.01, so the rate "
     "would never decay from it; use a min_learning_rate below the initial rate."),
    ('hidden_units: [8]', 'hidden_units: [8] activation: "relux"', "relux",
     "model_config.mmoe.expert_dnn.activation: unknown activation 'relux'; use a Keras "
     "activation name such as 'relu', 'gelu', 'swish' or 'tanh'."),
])
def test_values_out_of_range_are_config_errors_at_their_line(tmp_path, old, new, needle,
                                                              expected):
    text = edit(old, new)
    path, message = load_error(tmp_path, text)
    assert one_problem(path, message) == f"{path}:{line_of(text, needle)}: {expected}"


def test_two_bad_weights_are_each_reported_at_their_own_line(tmp_path):
    text = edit('tower_name: "ctr" label_name: "clk" }',
                'tower_name: "ctr" label_name: "clk"\n      weight: -2 }')
    text = edit('tower_name: "cvr" label_name: "buy" }',
                'tower_name: "cvr" label_name: "buy"\n      weight: -2.0 }', text)
    path, message = load_error(tmp_path, text)
    assert message.splitlines()[1:] == [
        f"  {path}:{line_of(text, 'weight: -2 ')}: model_config.mmoe.task_towers[0].weight "
        "must be a finite number >= 0, got -2.",
        f"  {path}:{line_of(text, 'weight: -2.0')}: model_config.mmoe.task_towers[1].weight "
        "must be a finite number >= 0, got -2."]


def test_easyrec_activation_aliases_pass(tmp_path):
    text = edit("hidden_units: [8]", 'hidden_units: [8] activation: "tf.nn.relu"')
    assert config_lib.load(write(tmp_path, text)).pipeline


def test_activation_list_equals_what_keras_accepts():
    import keras
    public = {name for name in dir(keras.activations) if not name.startswith("_")
              and callable(getattr(keras.activations, name))} - {"get", "serialize",
                                                                  "deserialize"}
    assert activations.KERAS_ACTIVATIONS == public
    for name in activations.KERAS_ACTIVATIONS:
        assert callable(keras.activations.get(name))
    for alias, name in activations.ACTIVATION_ALIASES.items():
        assert name in activations.KERAS_ACTIVATIONS, alias
    from mtrec.layers.dnn import activation_name
    assert activation_name("tf.nn.gelu") == "gelu"
    with pytest.raises(ValueError, match="unknown activation 'relux'"):
        activation_name("relux")


# ---------------------------------------------------------------------------
# Parsing edge cases


def test_struct_nested_thousands_deep_is_one_config_error(tmp_path):
    depth = 5000
    nested = 'fields { key: "a" value { struct_value { ' * depth + "} } }" * depth
    text = edit('  feature_groups { group_name: "all"',
                '  backbone { blocks { name: "b" keras_layer { class_name: "MLP" st_params { '
                + nested + " } } } }\n" + '  feature_groups { group_name: "all"')
    path, message = load_error(tmp_path, text)
    assert message == (f"{path}: the config nests messages too deeply to parse (a Struct or "
                       "message inside itself thousands of times); flatten it.")


def test_binary_vocab_file_is_reported_at_its_vocab_file_line(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"red\ngreen\n\xff\xfe\x00blue\n")
    text = edit('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }',
                f'features {{ input_names: "user" vocab_file: "{vocab}" embedding_dim: 4 }}')
    path, message = load_error(tmp_path, text)
    assert one_problem(path, message) == (
        f"{path}:{line_of(text, 'vocab_file')}: feature 'user': vocab_file '{vocab}' is not "
        "UTF-8 text (invalid start byte at byte 10, its line 3); a vocabulary is a text file "
        "of one token per line.")


def test_many_problems_are_found_in_linear_time_and_listed_first_fifty(tmp_path):
    feature = '  features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }\n'
    text = edit(feature, feature * 20000)
    path = write(tmp_path, text)
    # CPU time, not wall time: other jobs on the machine must not fail the test.
    start = time.process_time()
    with pytest.raises(ConfigError) as info:
        config_lib.load(path)
    assert time.process_time() - start < 5
    lines = str(info.value).splitlines()
    first = line_of(BASE, 'input_names: "user"')
    assert lines[0] == f"{path}: 19999 problems:"
    # Each duplicate is named at its own line.
    assert lines[1:3] == [f"  {path}:{first + k}: feature 'user' is defined twice; give one a "
                          "feature_name." for k in (1, 2)]
    assert lines[51:] == ["  ... and 19949 more."]


def test_bad_byte_escape_in_a_string_is_reported_at_the_string_line(tmp_path):
    text = edit('tower_name: "ctr" label_name: "clk" }',
                'label_name: "clk"\n      tower_name: "c\\xfftr"\n    }')
    path, message = load_error(tmp_path, text)
    line = line_of(text, "c\\xfftr")
    assert message == (f"{path}:{line}:19: Couldn't parse string: "
                       "'utf-8' codec can't decode byte 0xff in position 1: invalid start "
                       "byte.")


def test_raw_byte_that_is_not_utf8_names_line_and_column(tmp_path):
    path = tmp_path / "pipeline.config"
    path.write_bytes(BASE.replace('"ctr"', '"c\xfftr"').encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        config_lib.load(str(path))
    line = line_of(BASE, '"ctr"')
    column = BASE.splitlines()[line - 1].index('"ctr"') + 3
    offset = BASE.index('"ctr"') + 2
    assert str(info.value) == (f"{path}:{line}:{column}: not a UTF-8 text file (invalid "
                               f"start byte at byte {offset}).")


def test_oversized_set_value_names_the_override(tmp_path):
    path = write(tmp_path, BASE)
    # A number as JSON reads it; past JSON's digit limit, the text, cut to be readable.
    for value, shown in (("99999999999999999999", "99999999999999999999"),
                         ("9" * 5000, "'" + "9" * 39 + "..." + "9" * 9 + "' (5002 characters)")):
        with pytest.raises(ConfigError) as info:
            config_lib.load(path, sets=[f"data_config.batch_size={value}"])
        assert str(info.value) == (f"--set: override 'data_config.batch_size': {shown} is out of "
                                   "range for batch_size (0 to 4294967295).")


def test_utf8_byte_order_mark_is_accepted_and_lines_still_count(tmp_path):
    path = write(tmp_path, "\ufeff" + BASE)
    assert config_lib.load(path).pipeline.model_config.model_class == "MMoE"
    text = edit("num_expert: 2", "num_expert: 0")
    path = write(tmp_path, "\ufeff" + text)
    with pytest.raises(ConfigError) as info:
        config_lib.load(path)
    assert f"{path}:{line_of(text, 'num_expert: 0')}: mmoe.num_expert must be at least 1." \
        in str(info.value)
