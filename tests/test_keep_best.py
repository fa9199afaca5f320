"""Issue #21: training keeps the best checkpoint without being asked (model_dir/best/, never
deleted by keep_checkpoint_max, kill-safe), the final export and `mtrec evaluate` / `export`
use it unless told otherwise, early stopping has a patience in steps and a minimum delta,
and the regularisers EasyRec users expect: dropout in every DNN, L2 on kernels, embedding
regularisation on the looked-up rows only, EasyRec's learning-rate schedules."""
import json
import logging
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import SAMPLES, TINY_INPUTS, TINY_MMOE, edit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = TINY_MMOE
# Rows in file order, learning rate 0.05, a checkpoint and evaluation every 5 steps.
CONFIG = edit("batch_size: 4", "batch_size: 4\n  shuffle: false", TINY_INPUTS).replace(
    "learning_rate: 0.01", "learning_rate: 0.05") + MODEL


def _rows(n, flip):
    """clk = buy = (user < 4), or its opposite when flip."""
    return [f"{int((i % 8) < 4) ^ flip},{int((i % 8) < 4) ^ flip},u{i % 8},{i % 40}"
            for i in range(n)]


def flip_case(tmp_path, steps=40, extra="", train_config=""):
    """Training data whose label flips after 40 rows (10 steps of batch 4), evaluated on
    the first relation: the eval AUC peaks early, then falls as training follows the flip."""
    train, evaluation = tmp_path / "train.csv", tmp_path / "eval.csv"
    train.write_text("\n".join(_rows(40, 0) + _rows(4 * steps, 1)) + "\n")
    evaluation.write_text("\n".join(_rows(40, 0)) + "\n")
    text = CONFIG.replace("num_steps: 10", f"num_steps: {steps}\n  save_checkpoints_steps: 5\n"
                          f"  log_step_count_steps: 5\n  seed: 3\n{train_config}")
    config = tmp_path / "pipeline.config"
    config.write_text(text + extra + f'train_input_path: "{train}"\n'
                      f'eval_input_path: "{evaluation}"\n')
    return str(config), str(evaluation)


def history(model_dir):
    with open(os.path.join(model_dir, "eval_result.txt")) as f:
        return [json.loads(line) for line in f]


def leftovers(directory):
    """Temporary names (mtrec's or TensorFlow's checkpoint ones) anywhere under directory."""
    found = []
    for root, dirs, files in os.walk(directory):
        found += [os.path.join(root, n) for n in dirs + files
                  if n.startswith(".tmp-") or n.endswith("_temp") or ".tmp" in n]
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training on the flip case with keep_checkpoint_max 1: (config, eval data,
    model_dir, the API's result, the log)."""
    import mtrec
    tmp_path = tmp_path_factory.mktemp("flip")
    config, data = flip_case(tmp_path, steps=20, train_config="  keep_checkpoint_max: 1\n")
    model_dir = str(tmp_path / "model")
    handler, logger = _Capture(), logging.getLogger("mtrec")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = mtrec.train(config, model_dir=model_dir)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return config, data, model_dir, result, "\n".join(handler.lines)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.mark.slow
def test_the_final_export_and_evaluate_use_the_best_step(trained):
    from mtrec.serving.saved_model import exported_step
    _, _, model_dir, result, log = trained
    evals = history(model_dir)
    assert [e["global_step"] for e in evals] == list(range(5, 25, 5))
    values = [e["auc_ctr"] for e in evals]
    best = evals[int(np.argmax(values))]  # the first of equal values: strict improvements
    # The data forced an early peak: the best is not the last.
    assert best["global_step"] < 20 and best["auc_ctr"] > values[-1] + 0.2
    # The API returns the last evaluation and the best one.
    assert result["global_step"] == 20 and result["auc_ctr"] == values[-1]
    assert result["best"]["global_step"] == best["global_step"]
    assert result["best"]["auc_ctr"] == best["auc_ctr"] and result["best"]["metric"] == "auc_ctr"
    assert result["best"]["checkpoint"] == os.path.join(model_dir, "best",
                                                        f"ckpt-{best['global_step']}")
    assert (f"best auc_ctr={best['auc_ctr']:.6g} at step {best['global_step']} | last "
            f"auc_ctr={values[-1]:.6g} at step 20") in log
    assert "chosen by auc_ctr (bigger is better; the first tower's first metric" in log
    # The final export holds the best step's weights, and the log says which and why.
    final = os.path.join(model_dir, "export", "final")
    (version,) = os.listdir(final)
    assert exported_step(os.path.join(final, version)) == best["global_step"]
    assert f"exporting {result['best']['checkpoint']} (the best checkpoint: auc_ctr=" in log
    # keep_checkpoint_max 1 kept the latest, and the best in best/.
    names = sorted(os.listdir(model_dir))
    assert [n for n in names if n.startswith("ckpt-")] == ["ckpt-20.data-00000-of-00001",
                                                           "ckpt-20.index"]
    assert sorted(os.listdir(os.path.join(model_dir, "best"))) == [
        "checkpoint", f"ckpt-{best['global_step']}.data-00000-of-00001",
        f"ckpt-{best['global_step']}.index"]
    assert not leftovers(model_dir)


@pytest.mark.slow
def test_evaluate_and_export_default_to_best_and_latest_overrides(trained, capsys, tmp_path):
    import mtrec
    from mtrec import cli
    from mtrec.serving.saved_model import exported_step
    _, data, model_dir, result, _ = trained
    best = result["best"]
    # mtrec evaluate from model_dir alone: the best checkpoint, the same metrics.
    again = mtrec.evaluate(model_dir=model_dir)
    assert again["global_step"] == best["global_step"]
    assert again["auc_ctr"] == pytest.approx(best["auc_ctr"], abs=1e-6)
    assert again["checkpoint"] == best["checkpoint"]
    # --checkpoint latest (CLI) overrides: the last step and its metrics.
    assert cli.run(["evaluate", "--model_dir", model_dir, "--checkpoint", "latest"]) == 0
    latest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert latest["global_step"] == 20
    assert latest["auc_ctr"] == pytest.approx(result["auc_ctr"], abs=1e-6)
    # One-off evaluations are recorded with their checkpoint, and stay out of the history
    # training picks the best from.
    from mtrec.training.best import eval_history
    assert [e["global_step"] for e in eval_history(model_dir)] == list(range(5, 25, 5))
    assert history(model_dir)[-1]["checkpoint"].endswith("ckpt-20")
    # mtrec export: best by default, latest or a path when told.
    assert exported_step(mtrec.export(model_dir=model_dir, export_dir=str(tmp_path / "a"))) \
        == best["global_step"]
    assert exported_step(mtrec.export(model_dir=model_dir, export_dir=str(tmp_path / "b"),
                                      checkpoint_path="latest")) == 20
    assert exported_step(mtrec.export(model_dir=model_dir, export_dir=str(tmp_path / "c"),
                                      checkpoint_path=os.path.join(model_dir, "ckpt-20"))) == 20
    # default_checkpoint "latest" in the config does the same as the flag.
    assert mtrec.evaluate(model_dir=model_dir, sets=["export_config.default_checkpoint=latest"]
                          )["global_step"] == 20


def test_no_best_without_an_eval_set(tmp_path):
    """No evaluation during training: no best/, and evaluate / export take the latest (and
    say so); asking for "best" explicitly is one clear error."""
    import mtrec
    from mtrec.errors import MtrecError
    config, data = flip_case(tmp_path, steps=5)
    text = open(config).read()
    open(config, "w").write("\n".join(l for l in text.splitlines()
                                      if not l.startswith("eval_input_path")) + "\n")
    model_dir = str(tmp_path / "model")
    result = mtrec.train(config, model_dir=model_dir)
    assert result == {} and not os.path.exists(os.path.join(model_dir, "best"))
    assert mtrec.evaluate(model_dir=model_dir, eval_input_path=data)["global_step"] == 5
    with pytest.raises(MtrecError, match="holds no best checkpoint .* use --checkpoint latest"):
        mtrec.evaluate(model_dir=model_dir, eval_input_path=data, checkpoint_path="best")


def _save_checkpoints(model_dir, steps):
    """Checkpoints ckpt-<step> of one variable whose value is the step."""
    import tensorflow as tf
    value = tf.Variable(0.0)
    step = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(value=value, step=step)
    manager = tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=None,
                                         step_counter=step)
    for s in steps:
        value.assign(float(s))
        step.assign(s)
        manager.save(checkpoint_number=s)


def _value_of(path):
    import tensorflow as tf
    return float(tf.train.load_checkpoint(path).get_tensor("value/.ATTRIBUTES/VARIABLE_VALUE"))


class _Watch:
    """What sync_best reads of a BestMetric."""

    def __init__(self, step):
        self.name, self.best, self.best_step = "auc_ctr", 0.7, step

    def rebase(self, step):
        self.best_step = step


def test_keep_best_survives_kills_at_each_moment(tmp_path, monkeypatch):
    """A kill while linking leaves a temporary directory, one after the files moved but
    before the index names them leaves unnamed files: in both cases the index still names
    the previous, complete best, and the next trainer (sync_best) removes the rest."""
    from mtrec.training import checkpoints
    model_dir = str(tmp_path / "model")
    _save_checkpoints(model_dir, [5, 10, 15])
    assert checkpoints.keep_best(model_dir, 5) == os.path.join(model_dir, "best", "ckpt-5")
    assert _value_of(checkpoints.best_checkpoint(model_dir)) == 5.0
    # The index is rewritten only after the files of the new best are in place.
    monkeypatch.setattr(checkpoints, "_write_index", _raise)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.keep_best(model_dir, 10)
    monkeypatch.undo()
    assert _value_of(checkpoints.best_checkpoint(model_dir)) == 5.0
    assert "ckpt-10.index" in os.listdir(os.path.join(model_dir, "best"))  # unnamed
    # A real kill -9 while linking (in a child process): its temporary directory stays.
    code = ("import os, signal, sys\nfrom mtrec.training import checkpoints\n"
            "def die(*a): os.kill(os.getpid(), signal.SIGKILL)\n"
            "real = os.link\ncalls = []\n"
            "def link(a, b):\n    real(a, b); calls.append(b)\n    if len(calls) == 1: die()\n"
            "os.link = link\ncheckpoints.keep_best(sys.argv[1], 15)\n")
    child = subprocess.run([sys.executable, "-c", code, model_dir], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert [n for n in os.listdir(os.path.join(model_dir, "best")) if n.startswith(".tmp-")]
    assert _value_of(checkpoints.best_checkpoint(model_dir)) == 5.0
    # The next trainer cleans up; the best still loads.
    checkpoints.sync_best(model_dir, _Watch(5))
    assert sorted(os.listdir(os.path.join(model_dir, "best"))) == [
        "checkpoint", "ckpt-5.data-00000-of-00001", "ckpt-5.index"]
    assert _value_of(checkpoints.best_checkpoint(model_dir)) == 5.0
    # keep_checkpoint_max deleting model_dir's ckpt-5 does not touch the best (hard links).
    for name in os.listdir(model_dir):
        if name.startswith("ckpt-5."):
            os.remove(os.path.join(model_dir, name))
    assert _value_of(checkpoints.best_checkpoint(model_dir)) == 5.0
    # A best recorded in eval_result.txt whose copy was not made (kill between the two) is
    # made by sync_best from model_dir's checkpoint; if that is gone, the kept one stays.
    checkpoints.sync_best(model_dir, _Watch(10))
    assert _value_of(checkpoints.best_checkpoint(model_dir)) == 10.0
    watch = _Watch(7)
    checkpoints.sync_best(model_dir, watch)
    assert watch.best_step == 10 and _value_of(checkpoints.best_checkpoint(model_dir)) == 10.0
    assert not leftovers(model_dir)


def _raise(*args):
    raise KeyboardInterrupt


@pytest.mark.slow
def test_kill_9_during_training_then_resume_keeps_the_best(tmp_path):
    """SIGKILL the trainer once best/ exists; the restart resumes and ends with best/ at the
    best step of the whole history, loadable, and no temporary file anywhere."""
    import time
    import tensorflow as tf
    from mtrec.training import checkpoints
    config, _ = flip_case(tmp_path, steps=20, train_config="  keep_checkpoint_max: 1\n")
    model_dir = str(tmp_path / "model")
    command = [sys.executable, "-m", "mtrec", "train", "--config", config, "--model_dir",
               model_dir]
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while not checkpoints.best_checkpoint(model_dir) and time.time() < deadline:
            assert proc.poll() is None, open(tmp_path / "log.txt").read()[-2000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    result = json.loads(final.stdout.strip().splitlines()[-1])
    evals = history(model_dir)
    values = [e["auc_ctr"] for e in evals]
    best_step = evals[int(np.argmax(values))]["global_step"]
    assert result["best"]["global_step"] == best_step and result["global_step"] == 20
    path = checkpoints.best_checkpoint(model_dir)
    assert path.endswith(f"ckpt-{best_step}")
    reader = tf.train.load_checkpoint(path)
    assert reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE") == best_step
    assert f"best auc_ctr={max(values):.6g} at step {best_step} | last" in final.stderr
    assert not leftovers(model_dir)


def _export_config(**fields):
    from mtrec.protos import export_pb2
    return export_pb2.ExportConfig(**fields)


def _history_file(tmp_path, values, metric="auc_ctr", extra=()):
    lines = [json.dumps({metric: v, "auc_cvr": 0.5, "global_step": 5 * (i + 1)})
             for i, v in enumerate(values)]
    (tmp_path / "eval_result.txt").write_text("\n".join(lines + list(extra)) + "\n")
    return str(tmp_path)


def test_early_stop_patience_in_steps_and_min_delta(tmp_path):
    from mtrec.training.best import BestMetric
    # Steps 5..25. Improvements by more than 0.02: steps 5 and 10 only.
    model_dir = _history_file(tmp_path, [0.5, 0.6, 0.605, 0.61, 0.6])
    watch = BestMetric(_export_config(enable_early_stop=True, max_check_steps=10,
                                      early_stop_min_delta=0.02), model_dir)
    assert (watch.name, watch.bigger) == ("auc_ctr", True)
    assert (watch.best, watch.best_step) == (0.61, 20)  # the best checkpoint: any improvement
    assert watch.reference_step == 10
    assert not watch.should_stop(15) and watch.should_stop(20) and watch.should_stop(25)
    # Without a minimum delta the patience restarts at step 20.
    watch = BestMetric(_export_config(enable_early_stop=True, max_check_steps=10), model_dir)
    assert watch.reference_step == 20 and not watch.should_stop(25) and watch.should_stop(30)
    # Patience only when early stopping is on.
    assert not BestMetric(_export_config(max_check_steps=10), model_dir).should_stop(1000)
    # A new evaluation that improves by more than min_delta restarts the patience.
    watch = BestMetric(_export_config(enable_early_stop=True, max_check_steps=10,
                                      early_stop_min_delta=0.02), model_dir)
    assert watch.update({"auc_ctr": 0.65, "auc_cvr": 0.5, "global_step": 30})
    assert watch.reference_step == 30 and not watch.should_stop(35)


def test_best_metric_choice_direction_and_history(tmp_path):
    from mtrec.training.best import BestMetric
    from mtrec.errors import TrainingError
    # One-off evaluations (with a checkpoint) and torn lines are not training's history.
    model_dir = _history_file(tmp_path, [0.3, 0.2, 0.25], metric="logloss_ctr", extra=[
        json.dumps({"logloss_ctr": 0.01, "global_step": 15, "checkpoint": "x/ckpt-15"}),
        '{"logloss_ctr": 0.0'])
    watch = BestMetric(_export_config(), model_dir)
    # First tower's first metric, smaller is better for logloss unless metric_bigger says.
    assert (watch.name, watch.bigger, watch.best, watch.best_step) == ("logloss_ctr", False,
                                                                        0.2, 10)
    watch = BestMetric(_export_config(metric_bigger=True), model_dir)
    assert (watch.best, watch.best_step) == (0.3, 5)
    watch = BestMetric(_export_config(best_exporter_metric="auc"), str(tmp_path / "none"))
    assert watch.update({"auc_ctr": 0.6, "auc_ctr/domain=0": 0.9, "logloss_ctr": 1.0,
                         "global_step": 5})
    assert watch.name == "auc_ctr"
    watch = BestMetric(_export_config(best_exporter_metric="auc"), str(tmp_path / "none"))
    with pytest.raises(TrainingError, match="'auc' is ambiguous; the evaluation reports: "
                                            "auc_ctr, auc_cvr"):
        watch.update({"auc_ctr": 0.6, "auc_cvr": 0.5, "global_step": 5})
    # A metric no evaluation reports (`mtrec check` warns): the first metric picks.
    watch = BestMetric(_export_config(best_exporter_metric="gauc"), str(tmp_path / "none"))
    assert watch.update({"auc_ctr": 0.6, "auc_cvr": 0.5, "global_step": 5})
    assert watch.name == "auc_ctr" and "first tower's first metric" in watch.describe()


def test_check_warns_of_a_best_exporter_metric_no_metrics_set_computes(tmp_path):
    from mtrec import config as config_lib
    config, _ = flip_case(tmp_path, extra='export_config { best_exporter_metric: "gauc" }\n'
                                          'eval_config { metrics_set { auc {} } }\n')
    warnings = config_lib.load(config).warnings
    assert len(warnings) == 1 and "pipeline.config:" in warnings[0], warnings
    assert "best_exporter_metric 'gauc' is not computed (the metrics_set has auc)" in warnings[0]
    config, _ = flip_case(tmp_path, extra='export_config { best_exporter_metric: "auc_ctr" }\n'
                                          'eval_config { metrics_set { auc {} } }\n')
    assert config_lib.load(config).warnings == []


@pytest.mark.slow
def test_early_stop_with_min_delta_stops_and_exports_the_best(tmp_path):
    """min_delta 1 in AUC units: no evaluation after the first counts, so training stops
    max_check_steps (10) after step 5; the final export is still the best evaluation."""
    import mtrec
    from mtrec.serving.saved_model import exported_step
    config, _ = flip_case(tmp_path, extra='export_config { enable_early_stop: true '
                          'max_check_steps: 10 early_stop_min_delta: 1.0 }\n')
    model_dir = str(tmp_path / "model")
    result = mtrec.train(config, model_dir=model_dir)
    assert result["global_step"] == 15
    evals = history(model_dir)
    assert [e["global_step"] for e in evals] == [5, 10, 15]
    best_step = evals[int(np.argmax([e["auc_ctr"] for e in evals]))]["global_step"]
    (version,) = os.listdir(os.path.join(model_dir, "export", "final"))
    assert exported_step(os.path.join(model_dir, "export", "final", version)) == best_step


def test_config_errors_name_the_line(tmp_path):
    from mtrec import config as config_lib
    from mtrec.errors import ConfigError
    cases = [
        ('export_config { default_checkpoint: "first" }\n',
         r"pipeline.config:\d+: export_config.default_checkpoint 'first' is not supported"),
        ("export_config { early_stop_min_delta: -0.1 }\n",
         r"pipeline.config:\d+: export_config.early_stop_min_delta must be a finite number"),
        ('export_config { early_stop_params: "{}" }\n',
         r"pipeline.config:\d+: export_config.early_stop_params are parameters"),
    ]
    for extra, message in cases:
        config, _ = flip_case(tmp_path, extra=extra)
        with pytest.raises(ConfigError, match=message):
            config_lib.load(config)
    schedules = [
        ("manual_step_learning_rate { initial_learning_rate: 0.1 }",
         "manual_step_learning_rate needs at least one schedule"),
        ("manual_step_learning_rate { schedule { step: 10 learning_rate: 0.1 } "
         "schedule { step: 10 learning_rate: 0.01 } }", r"strictly increasing, got \[10, 10\]"),
        ("poly_decay_learning_rate { learning_rate_base: 0.1 power: 1 }",
         "poly_decay_learning_rate needs total_steps"),
        ("transformer_learning_rate { learning_rate_base: 1 hidden_size: 0 warmup_steps: 4 }",
         "hidden_size, warmup_steps and step_scaling_rate must be positive"),
        ("cosine_decay_learning_rate { learning_rate_base: 0.1 total_steps: 5 "
         "warmup_steps: 10 }", "total_steps 5 is below warmup_steps"),
    ]
    for schedule, message in schedules:
        config, _ = flip_case(tmp_path)
        text = open(config).read().replace("constant_learning_rate { learning_rate: 0.05 }",
                                           schedule)
        open(config, "w").write(text)
        with pytest.raises(ConfigError, match=r"pipeline.config:\d+: adam_optimizer: .*"
                                              + message):
            config_lib.load(config)


# -- learning-rate schedules: the values at chosen steps are EasyRec's formulas ---------

def _schedule(text):
    from google.protobuf import text_format
    from mtrec.protos import optimizer_pb2
    from mtrec.training.optimizers import LearningRate
    return LearningRate(text_format.Parse(text, optimizer_pb2.LearningRate()))


def _values(schedule, steps):
    return [float(schedule(s)) for s in steps]


def test_exponential_decay_with_linear_burnin():
    lr = _schedule("exponential_decay_learning_rate { initial_learning_rate: 0.1 "
                   "decay_steps: 10 decay_factor: 0.5 staircase: false "
                   "burnin_learning_rate: 0.02 burnin_steps: 4 min_learning_rate: 0.001 }")
    steps = [0, 1, 3, 4, 9, 14, 24, 200]
    expected = [0.02 + (0.1 - 0.02) * s / 4 if s < 4 else
                max(0.1 * 0.5 ** ((s - 4) / 10), 0.001) for s in steps]
    np.testing.assert_allclose(_values(lr, steps), expected, rtol=1e-6)
    # staircase, no burn-in rate: flat at the initial rate during burn-in.
    lr = _schedule("exponential_decay_learning_rate { initial_learning_rate: 0.1 "
                   "decay_steps: 10 decay_factor: 0.5 burnin_steps: 4 }")
    np.testing.assert_allclose(_values(lr, [0, 3, 13, 14, 24]),
                               [0.1, 0.1, 0.1, 0.05, 0.025], rtol=1e-6)


def test_manual_step_with_and_without_warmup():
    text = ("manual_step_learning_rate { initial_learning_rate: 0.001 "
            "schedule { step: 10 learning_rate: 0.1 } schedule { step: 20 learning_rate: 0.01 } "
            "%s }")
    steps = [0, 5, 9, 10, 19, 20, 1000]
    np.testing.assert_allclose(_values(_schedule(text % ""), steps),
                               [0.001, 0.001, 0.001, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    warm = [0.001 + (0.1 - 0.001) * s / 10 for s in (0, 5, 9)] + [0.1, 0.1, 0.01, 0.01]
    np.testing.assert_allclose(_values(_schedule(text % "warmup: true"), steps), warm,
                               rtol=1e-6)


def test_polynomial_decay():
    lr = _schedule("poly_decay_learning_rate { learning_rate_base: 0.1 total_steps: 100 "
                   "power: 2 end_learning_rate: 0.01 }")
    steps = [0, 10, 50, 99, 100, 500]
    expected = [(0.1 - 0.01) * (1 - min(s, 100) / 100) ** 2 + 0.01 for s in steps]
    np.testing.assert_allclose(_values(lr, steps), expected, rtol=1e-6)


def test_cosine_with_warmup_and_hold():
    lr = _schedule("cosine_decay_learning_rate { learning_rate_base: 0.1 total_steps: 100 "
                   "warmup_learning_rate: 0.01 warmup_steps: 10 hold_base_rate_steps: 20 }")
    steps = [0, 5, 10, 25, 30, 65, 100, 150]

    def formula(s):
        if s < 10:
            return 0.01 + (0.1 - 0.01) * s / 10
        if s <= 30:
            return 0.1
        return 0.5 * 0.1 * (1 + math.cos(math.pi * min(s - 30, 70) / 70))

    np.testing.assert_allclose(_values(lr, steps), [formula(s) for s in steps], rtol=1e-5,
                               atol=1e-8)


def test_transformer_schedule():
    lr = _schedule("transformer_learning_rate { learning_rate_base: 2.0 hidden_size: 64 "
                   "warmup_steps: 100 step_scaling_rate: 0.5 }")
    steps = [0, 10, 49, 50, 99, 400, 10000]

    def formula(s):
        s, w = s * 0.5, 100 * 0.5
        return 2.0 * 64 ** -0.5 * min((s + 1) * w ** -1.5, (s + 1) ** -0.5)

    np.testing.assert_allclose(_values(lr, steps), [formula(s) for s in steps], rtol=1e-5)


def test_the_optimizers_use_the_schedule():
    """The dense (Keras) and the sparse (embedding) optimizer both read the schedule at the
    step about to be taken."""
    import tensorflow as tf
    from google.protobuf import text_format
    from mtrec.protos import optimizer_pb2
    from mtrec.training.optimizers import SparseOptimizer, build_dense_optimizer
    config = text_format.Parse(
        "adam_optimizer { learning_rate { manual_step_learning_rate { initial_learning_rate: "
        "0.5 schedule { step: 2 learning_rate: 0.25 } } } }", optimizer_pb2.Optimizer())
    dense = build_dense_optimizer(config)
    weight = tf.Variable([1.0])
    dense.build([weight])
    sparse = SparseOptimizer(config)
    seen = []
    for _ in range(3):
        seen.append((float(dense.learning_rate), float(sparse.learning_rate(sparse.iterations))))
        dense.apply_gradients([(tf.constant([0.1]), weight)])
        sparse.iterations.assign_add(1)
    assert seen == [(0.5, 0.5), (0.5, 0.5), (0.25, 0.25)]


# -- dropout, L2 on kernels, embedding regularisation -----------------------------------

def _walk(message):
    yield message
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        repeated = (field.is_repeated if hasattr(field, "is_repeated")
                    else field.label == field.LABEL_REPEATED)
        for child in (value if repeated else [value]):
            yield from _walk(child)


def _set_dropout(pipeline, ratio):
    """dropout_ratio `ratio` for every layer of every DNN / MLP message of the model (an
    MLP, as EasyRec's, gives missing trailing values none); how many were set."""
    count = 0
    for message in _walk(pipeline.model_config):
        if "dropout_ratio" in message.DESCRIPTOR.fields_by_name and len(message.hidden_units):
            del message.dropout_ratio[:]
            if ratio:
                message.dropout_ratio.extend([ratio] * len(message.hidden_units))
            count += 1
    return count


def _job(pipeline):
    from mtrec.training.job import Job
    job = Job.create(pipeline, for_training=False)
    job.build()
    return job


def _batch(pipeline, n=32, seed=0):
    """n rows of every input field: small random ids and numbers, tags joined by '|'."""
    import tensorflow as tf
    from mtrec.data.schema import field_dtype
    rng = np.random.default_rng(seed)
    columns = {}
    for f in pipeline.data_config.input_fields:
        dtype = field_dtype(f)
        if dtype == tf.string:
            columns[f.input_name] = tf.constant(
                ["|".join(str(v) for v in rng.integers(0, 9, 2)) for _ in range(n)])
        elif dtype.is_integer:
            columns[f.input_name] = tf.constant(rng.integers(0, 2, n), dtype=dtype)
        else:
            columns[f.input_name] = tf.constant(rng.uniform(0, 1, n), dtype=dtype)
    return columns


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(os.listdir(SAMPLES)))
def test_dropout_changes_training_outputs_not_inference(name):
    """Every DNN of every sample model gets dropout_ratio 0.5, and every DNN layer of the
    built model has its Dropout. Against the same model with those Dropouts at rate 0 (no
    dropout), inference outputs are equal and training outputs differ."""
    import keras
    from mtrec import config as config_lib
    from mtrec.layers.dnn import DNN
    keras.utils.set_random_seed(1)
    pipeline = config_lib.load(os.path.join(SAMPLES, name)).pipeline
    assert _set_dropout(pipeline, 0.5) > 0
    job = _job(pipeline)
    layers = list(job.model._flatten_layers())
    dropouts = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts and all(d.rate == 0.5 for d in dropouts), name
    # Every DNN has its Dropout, but those no DNN / MLP message configures: AITM's transfer
    # layers (transfer_units) and M2M's scenario layer (scenario_dim). (M2M's experts end
    # with their view layer, which has none; PEPNet's PPNet towers have one Dropout.)
    dnns = [layer for layer in layers if isinstance(layer, DNN) and layer.hidden_units
            and not layer.name.startswith(("transfer_", "scenario"))]
    assert all(any(d is not None for d in dnn.dropouts) for dnn in dnns), name
    features, _ = job.split(_batch(pipeline))

    def outputs(rate, training):
        for d in dropouts:
            d.rate = rate
        result = job.model(features, training=training)
        return {k: v.numpy() for k, v in result.items() if k.startswith(("logits", "y_"))}

    inference = outputs(0.5, False)
    assert inference
    for key, value in outputs(0.0, False).items():
        np.testing.assert_allclose(inference[key], value, atol=1e-6, err_msg=key)
    # Training outputs use batch statistics, not the moving ones training calls update.
    dropped, plain = outputs(0.5, True), outputs(0.0, True)
    assert any(not np.allclose(dropped[k], plain[k], atol=1e-6) for k in plain)


TINY_MODEL = TINY_INPUTS + """
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: ["price"] wide_deep: DEEP }
  embedding_regularization: %s
  mmoe {
    expert_dnn { hidden_units: [8, 6] use_bn: false }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] use_bn: false } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] use_bn: false } }
    l2_regularization: %s
  }
}
"""


def _tiny(embedding_regularization, l2):
    from mtrec import config as config_lib
    text = TINY_MODEL % (embedding_regularization, l2)
    pipeline = config_lib.parse_text(text, "x.config")
    config_lib.prepare(pipeline, config_lib.Source("x.config", text))
    return _job(pipeline)


def test_l2_regularization_is_on_dense_kernels_only():
    """l2 * sum of squared kernels of every expert, gate, tower and logits Dense layer (as
    EasyRec's kernel_regularizer); no biases, no embedding rows; nothing when l2 is 0."""
    import keras
    import tensorflow as tf
    job = _tiny(0.0, 0.1)
    features, _ = job.split(_batch(job.pipeline, 16))
    job.model(features, training=True)
    kernels = [layer.kernel for layer in job.model._flatten_layers()
               if isinstance(layer, keras.layers.Dense)]
    # 2 experts x 2 layers, 2 gates, 2 towers x (1 layer + logits).
    assert len(kernels) == 10
    expected = 0.1 * sum(float(tf.reduce_sum(tf.square(k))) for k in kernels)
    assert float(tf.add_n(job.model.losses)) == pytest.approx(expected, rel=1e-5)
    plain = _tiny(0.0, 0.0)
    plain.model(features, training=True)
    assert not plain.model.losses


def test_embedding_regularization_reads_and_moves_only_the_rows_looked_up():
    """loss = r * mean over the batch of the squared norms of the rows looked up; its
    gradient is row-sparse: exactly the rows of the batch's ids, 2 r count / batch * row."""
    import tensorflow as tf
    job = _tiny(0.3, 0.0)
    columns = _batch(job.pipeline, 16)
    columns["price"] = tf.constant([3, 3, 7, 11] * 4, tf.int32)
    features, _ = job.split(columns)
    (table,) = job.model.feature_groups.table_variables
    with tf.GradientTape() as tape:
        job.model(features, training=True)
        loss = tf.add_n(job.model.losses)
    rows = table.numpy()
    ids = np.array([3, 3, 7, 11] * 4)
    assert float(loss) == pytest.approx(0.3 * np.mean(np.sum(rows[ids] ** 2, axis=1)),
                                        rel=1e-5)
    grad = tape.gradient(loss, table)
    assert isinstance(grad, tf.IndexedSlices)  # never a dense (rows x dim) gradient
    dense = tf.convert_to_tensor(grad).numpy()
    assert sorted(np.flatnonzero(np.any(dense != 0, axis=1))) == [3, 7, 11]
    counts = {3: 8, 7: 4, 11: 4}
    for row, count in counts.items():
        np.testing.assert_allclose(dense[row], 2 * 0.3 * count / 16 * rows[row], rtol=1e-5)
