"""User mistakes end in one clear message and exit code 1, never a traceback."""
import subprocess
import sys

import pytest

from conftest import ROOT, sample_config


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "mtrec.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_help_is_fast_and_lists_verbs():
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in ("train", "evaluate", "export", "predict", "check"):
        assert verb in result.stdout


def test_check_prints_summary():
    result = run_cli("check", "--config", sample_config("mmoe_on_taobao.config"))
    assert result.returncode == 0, result.stderr
    assert "model: MMoE" in result.stdout and "ctr(clk)" in result.stdout
    # Without --verbose none of TensorFlow's start-up lines (oneDNN, CUDA) show.
    assert "absl" not in result.stderr and "port.cc" not in result.stderr, result.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--config", "missing.config"], "missing.config: config file not found"),
    (["check", "--config", sample_config("mmoe_on_taobao.config"), "--set",
      "data_config.batch_size=abc"], "'abc' is not a valid non-negative integer"),
    (["check", "--config", sample_config("mmoe_on_taobao.config"), "--set",
      "model_config.mmoe.nope=1"], "MMoE has no field 'nope'"),
    pytest.param(["train", "--config", sample_config("mmoe_on_taobao.config"), "--set",
                  "train_input_path=/no/such/file.csv", "--model_dir", "{tmp}"],
                 "train_input_path file '/no/such/file.csv' not found", marks=pytest.mark.slow),
    (["evaluate", "--model_dir", "{tmp}"], "has no pipeline.config"),
])
def test_errors_are_one_message(args, message, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli(*args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.slow
def test_bad_row_names_file_and_line(tmp_path, small_taobao):
    train_path, _ = small_taobao
    with open(train_path) as f:
        lines = f.readlines()[:300]
    lines[136] = "1,0,only,three\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines))
    result = run_cli("train", "--config", sample_config("mmoe_on_taobao.config"),
                     "--model_dir", str(tmp_path / "m"), "--set", f"train_input_path={bad}",
                     "--set", "eval_input_path=", "--set", "train_config.num_steps=5",
                     "--set", "data_config.shuffle=false")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}:137: expected 20 fields" in result.stderr, result.stderr[-2000:]


def test_malformed_config_names_line(tmp_path):
    path = tmp_path / "broken.config"
    text = open(sample_config("mmoe_on_taobao.config")).read().replace(
        "num_expert: 4", "num_expert: four")
    path.write_text(text)
    line = text.splitlines().index("    num_expert: four") + 1
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{path}:{line}:" in result.stderr


@pytest.mark.slow
def test_predict_command(tmp_path, small_taobao):
    import mtrec
    from conftest import fast_overrides
    train_path, test_path = small_taobao
    model_dir = str(tmp_path / "m")
    mtrec.train(sample_config("simple_multi_task_on_taobao.config"), model_dir=model_dir,
                sets=fast_overrides(train_path, test_path, steps=5) + ["eval_input_path="])
    export_dir = mtrec.export(model_dir=model_dir, export_dir=str(tmp_path / "e"))
    out, unused = tmp_path / "scores.csv", tmp_path / "unused.csv"
    # The two commands run side by side (each mostly starts TensorFlow).
    good, bad = (subprocess.Popen([sys.executable, "-m", "mtrec.cli", "predict", "--saved_model",
                                   export_dir, "--input", test_path, *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=ROOT)
                 for args in (["--output", str(out), "--reserved_cols", "user_id,clk",
                               "--output_cols", "probs_ctr"],
                              ["--output", str(unused), "--output_cols", "nope"]))
    try:
        _, good_err = good.communicate(timeout=300)
        _, bad_err = bad.communicate(timeout=300)
    finally:
        for proc in (good, bad):
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert good.returncode == 0, good_err[-2000:]
    lines = out.read_text().splitlines()
    assert lines[0] == "user_id,clk,probs_ctr" and len(lines) == 401
    assert bad.returncode == 1 and "Traceback" not in bad_err
    assert "--output_cols nope not among the model outputs" in bad_err


@pytest.mark.slow
def test_check_counts_parameters_memory_and_flops(tmp_path):
    from test_reliability import CONFIG
    path = tmp_path / "tiny.config"
    path.write_text(CONFIG)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Input 5 (user embedding 4 + raw price 1); experts 2 x (5*8+8); gates 2 x (5*2+2);
    # towers 2 x ((8*4+4) + (4+1)); the user table 100 x 4.
    assert "    mmoe: 120" in out and "    tower_ctr: 41" in out
    assert "parameters: 602 (400 embedding, 202 dense)" in out
    assert "with the optimizer's 2 slot(s) per parameter" in out  # Adam
    flops = int(out.split("FLOPs per example (forward): ")[1].split()[0].replace(",", ""))
    assert flops >= 2 * (2 * 5 * 8 + 2 * 5 * 2 + 2 * (8 * 4 + 4 * 1))  # the matmuls alone


@pytest.mark.slow
def test_resume_with_a_changed_model_is_one_message(tmp_path, small_taobao):
    from conftest import fast_overrides
    train_path, test_path = small_taobao
    common = ["train", "--config", sample_config("simple_multi_task_on_taobao.config"),
              "--model_dir", str(tmp_path / "m")]
    sets = [a for s in fast_overrides(train_path, "", steps=2) for a in ("--set", s)]
    assert run_cli(*common, *sets).returncode == 0
    result = run_cli(*common, *sets, "--set",
                     "model_config.simple_multi_task.task_towers[0].dnn.hidden_units=[16]")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "does not fit this config's model" in result.stderr, result.stderr[-1500:]


def test_version_is_the_package_version():
    from importlib import metadata
    import mtrec
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mtrec {metadata.version('mtrec')}"
    assert metadata.version("mtrec") == mtrec.__version__  # pyproject.toml and __init__ agree


STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796547897.640110   25533 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796547897.640496   25533 cudart_stub.cc:31] Could not find cuda drivers.
W0000 00:00:1796547897.714787   25533 cpu_feature_guard.cc:227] This binary is optimized.
To enable the following instructions: AVX2 FMA, rebuild TensorFlow.
/x/y.py:3: UserWarning: a Python warning
  warnings.warn(
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796547900.558692   25533 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796547900.559449   25533 cudart_stub.cc:31] Could not find cuda drivers.
E0000 00:00:1796547902.303565   25533 cuda_platform.cc:52] failed call to cuInit
"""


@pytest.mark.parametrize("level, shown", [
    (0, [0, 1, 2, 3, 4, 5, 6, 10]),   # everything, each message once
    (1, [0, 3, 4, 5, 6, 10]),         # no INFO
    (3, [5, 6]),                      # the default without --verbose: only Python's own
])
def test_tensorflow_startup_lines_once_and_by_level(level, shown):
    from mtrec.cli import startup_lines
    lines = STARTUP.splitlines()
    assert startup_lines(STARTUP, level) == [lines[i] for i in shown]


@pytest.mark.slow
def test_check_lists_sequence_attention_without_warnings(tmp_path):
    """A group's target attention is listed; building the model (a dummy row whose
    histories have one position) raises no Keras softmax warning; under --verbose each
    TensorFlow start-up message shows once."""
    text = open(sample_config("mmoe_on_taobao.config")).read().replace(
        '"samples/data/', f'"{ROOT}/samples/data/')
    text = text.replace('group_name: "all"', 'group_name: "all" sequence_features { '
                        'group_name: "din" seq_att_map { key: "brand" key: "cate_id" '
                        'hist_seq: "brand_seq" hist_seq: "cate_seq" aux_hist_seq: "aux" } }')
    for name, column in (("brand_seq", "tag_brand_list"), ("cate_seq", "tag_category_list"),
                         ("aux", "tag_category_list")):
        text += (f'feature_configs {{ input_names: "{column}" feature_name: "{name}" '
                 'feature_type: SequenceFeature hash_bucket_size: 1000 embedding_dim: 16 }\n')
    path = tmp_path / "din.config"
    path.write_text(text)
    result = run_cli("-v", "check", "--config", str(path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("\n    sequence_features din: key brand, cate_id -> hist_seq brand_seq, cate_seq; "
            "aux_hist_seq aux\n") in result.stdout
    assert "Warning" not in result.stderr.replace("WARNING: All log messages", ""), \
        result.stderr
    for message in ("All log messages before absl::InitializeLog()",
                    "oneDNN custom operations are on", "Could not find cuda drivers"):
        assert result.stderr.count(message) <= 1, result.stderr


def test_python_api_takes_the_cli_flag_names():
    """check(set=...) is check(sets=...) (the CLI's --set); an unknown keyword is Python's
    TypeError; the verbs log progress by default (see the next test)."""
    import mtrec
    from mtrec.errors import ConfigError
    config = sample_config("mmoe_on_taobao.config")
    for kwargs in ({"sets": ["data_config.batch_size=abc"]},
                   {"set": ["data_config.batch_size=abc"]}):
        with pytest.raises(ConfigError, match="'abc' is not a valid non-negative integer"):
            mtrec.check(config, **kwargs)
    with pytest.raises(TypeError, match="unexpected keyword argument 'checkpoint_dir'"):
        mtrec.evaluate(config, checkpoint_dir="x")
    with pytest.raises(TypeError, match="unexpected keyword argument 'input_file'"):
        mtrec.predict("x", input_file="y")


@pytest.mark.parametrize("setup, shown", [
    ("", True),                                              # nothing configured: shown
    ("logging.basicConfig(level=logging.WARNING)", False),   # the caller's config wins
    ("logging.getLogger('mtrec').setLevel(logging.WARNING)", False),
])
def test_python_api_logs_progress_by_default(setup, shown):
    code = ("import logging, mtrec.api as api\n" + setup + "\n"
            "api._logs_progress(lambda: logging.getLogger('mtrec').info('step 1/2'))()\n"
            "logging.getLogger('mtrec').info('after the call')\n"
            "assert all(hasattr(getattr(api, v), '__wrapped__') "
            "for v in ('train', 'evaluate', 'export', 'predict'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (" INFO step 1/2" in result.stderr) == shown, result.stderr
    assert "after the call" not in result.stderr  # the handler is gone after the call


@pytest.mark.slow  # imports TensorFlow
def test_first_progress_line_excludes_tracing(tmp_path, monkeypatch):
    """The first call of the train loop (one step, where tracing happens) is not timed:
    steps 2..10 in 9 s at batch 4 are 4 examples/s, so 90 steps left take 90 s."""
    import types
    from mtrec.protos import train_pb2
    from mtrec.training import loop
    clock = [1000.0]
    monkeypatch.setattr(loop.time, "time", lambda: clock[0])
    config = types.SimpleNamespace(train_config=train_pb2.TrainConfig(
        num_steps=100, log_step_count_steps=10))
    job = types.SimpleNamespace(pipeline=config, loss_names=["ctr"],
                                sparse_optimizer=types.SimpleNamespace(
                                    learning_rate=lambda step: 0.1),
                                model=types.SimpleNamespace(  # no dynamic tables
                                    feature_groups=types.SimpleNamespace(dynamic=None)))
    progress = loop._Progress(job, str(tmp_path), batch_size=4, start_step=0)
    lines = []
    monkeypatch.setattr(loop.log, "info", lambda message, *a: lines.append(message % a))
    import tensorflow as tf
    clock[0] += 60.0  # tracing and the first step
    progress.add(1, 1, tf.constant([0.5]), 0.5, 0, last_chunk=False)
    clock[0] += 9.0
    progress.add(10, 9, tf.constant([4.5]), 4.5, 0, last_chunk=False)
    assert lines == ["step 10/100 | loss ctr=0.50000 total=0.50000 | 4 examples/s | ETA 1m30s"]
