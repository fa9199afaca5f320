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
    out = tmp_path / "scores.csv"
    result = run_cli("predict", "--saved_model", export_dir, "--input", test_path, "--output",
                     str(out), "--reserved_cols", "user_id,clk", "--output_cols", "probs_ctr")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert lines[0] == "user_id,clk,probs_ctr" and len(lines) == 401
    result = run_cli("predict", "--saved_model", export_dir, "--input", test_path, "--output",
                     str(out), "--output_cols", "nope")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--output_cols nope not among the model outputs" in result.stderr


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
