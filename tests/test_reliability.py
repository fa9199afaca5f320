"""Faults never lose work or end in a traceback: a locked model_dir, a non-finite loss,
labels outside their classes."""
import os
import subprocess
import sys
import time

import pytest

from conftest import TINY_INPUTS, edit
from mtrec.errors import DataError, TrainingError
from mtrec.training.storage import model_dir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny inputs, rows in file order, a raw DOUBLE price (1e300 in it is a finite DOUBLE
# that becomes inf in the model's float32: it poisons the loss), an MMoE.
CONFIG = edit("batch_size: 4", "batch_size: 4\n  shuffle: false", TINY_INPUTS)
CONFIG = edit('features { input_names: "price" num_buckets: 50 embedding_dim: 4 }',
              'features { input_names: "price" feature_type: RawFeature }',
              edit('input_fields { input_name: "price" input_type: INT32 }',
                   'input_fields { input_name: "price" input_type: DOUBLE }', CONFIG)) + """
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: ["user", "price"] wide_deep: DEEP }
  mmoe {
    expert_dnn { hidden_units: [8] use_bn: false }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] use_bn: false } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] use_bn: false } }
  }
}
"""


def write_case(tmp_path, rows, text=CONFIG, steps=20):
    data = tmp_path / "train.csv"
    data.write_text("".join(f"{r}\n" for r in rows))
    config = tmp_path / "pipeline.config"
    config.write_text(text.replace("num_steps: 10", f"num_steps: {steps}\n"
                                   "  save_checkpoints_steps: 5\n  log_step_count_steps: 5")
                      + f'train_input_path: "{data}"\n')
    return str(config), str(data)


def good_rows(n):
    return [f"{i % 2},{int(i % 6 == 0)},u{i % 7},{i % 40}" for i in range(n)]


@pytest.mark.slow
def test_a_second_trainer_on_the_same_model_dir_refuses(tmp_path):
    model_dir = str(tmp_path / "model")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from mtrec.training.storage import model_dir_lock\n"
         "with model_dir_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
         model_dir], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        config, _ = write_case(tmp_path, good_rows(40))
        cli = subprocess.run([sys.executable, "-m", "mtrec", "train", "--config", config,
                              "--model_dir", model_dir], capture_output=True, text=True,
                             cwd=ROOT, timeout=300)
        assert cli.returncode == 1
        assert f"is being trained by another process (pid {holder.pid})" in cli.stderr
        assert "Traceback" not in cli.stderr
        assert not [f for f in os.listdir(model_dir) if f.startswith("ckpt")]
    finally:
        holder.kill()
        holder.wait()
    # The OS released the killed holder's lock: the directory is usable again.
    with model_dir_lock(model_dir):
        with pytest.raises(TrainingError, match="being trained by another process"):
            with model_dir_lock(model_dir):
                pass


def test_non_finite_loss_names_step_and_keeps_the_last_good_checkpoint(tmp_path):
    import mtrec
    rows = good_rows(40)
    # A finite DOUBLE (nan is a data error) that is inf in float32.
    rows[4 * 7 + 1] = "1,0,u1,1e300"  # batch size 4: step 8 reads row 29
    config, _ = write_case(tmp_path, rows)
    model_dir = str(tmp_path / "model")
    with pytest.raises(TrainingError) as info:
        mtrec.train(config, model_dir=model_dir)
    message = str(info.value)
    # The overflow reaches the tower losses ("ctr, cvr") or, where fused CPU kernels turn it
    # into 0 in the forward pass (AVX-512), only the gradients; either way step 8 stops.
    assert ("loss became non-finite at step 8: ctr, cvr" in message
            or "loss became non-finite at step 8: the gradients or the regularization"
            in message)
    assert "nothing was saved after step 5" in message
    import tensorflow as tf
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-5")
    assert not os.path.exists(os.path.join(model_dir, "export"))


@pytest.mark.parametrize("bad, problem", [
    ("2,0,u1,3", "column 'clk': label 2 is not a class: the tower expects 0 or 1"),
    ("1,-1,u1,3", "column 'buy': label -1 is not a class: the tower expects 0 or 1"),
    ("0.5,0,u1,3", "column 'clk': '0.5' is not an integer"),
])
def test_label_outside_its_classes_names_file_and_line(tmp_path, bad, problem):
    import mtrec
    rows = good_rows(40)
    rows[17] = bad
    config, data = write_case(tmp_path, rows)
    with pytest.raises(DataError, match=f"{data}:18: {problem}"):
        mtrec.train(config, model_dir=str(tmp_path / "model"))


def test_label_outside_its_classes_is_skipped_and_counted_with_ignore_error(tmp_path, caplog):
    import mtrec
    rows = good_rows(40)
    rows[3], rows[30] = "2,0,u1,3", "1,7,u2,4"
    config, _ = write_case(tmp_path, rows, edit("batch_size: 4", "batch_size: 4\n  "
                                                "ignore_error: true", CONFIG), steps=9)
    result = mtrec.train(config, model_dir=str(tmp_path / "model"))
    assert result == {} or result["global_step"] == 9
    assert "2 malformed rows were skipped" in caplog.text


def export_case(tmp_path, export_block, lr=0.01, steps=40):
    text = CONFIG.replace("learning_rate: 0.01", f"learning_rate: {lr}") + export_block
    config, data = write_case(tmp_path, good_rows(60), text, steps=steps)
    with open(config, "a") as f:
        f.write(f'eval_input_path: "{data}"\n')
    return config


@pytest.mark.slow
def test_best_exporter_exports_exactly_the_improvements(tmp_path):
    import json
    import mtrec
    config = export_case(tmp_path, 'export_config { exporter_type: "best" '
                                   'best_exporter_metric: "auc_ctr" exports_to_keep: 20 }\n')
    model_dir = tmp_path / "model"
    mtrec.train(config, model_dir=str(model_dir))
    with open(model_dir / "eval_result.txt") as f:
        values = [json.loads(line)["auc_ctr"] for line in f]
    assert len(values) == 8  # every 5 steps
    improvements = sum(v > max(values[:i], default=-1) for i, v in enumerate(values))
    assert len(os.listdir(model_dir / "export" / "best")) == improvements >= 1


@pytest.mark.slow
def test_early_stop_when_the_metric_stops_improving(tmp_path):
    import json
    import mtrec
    # Learning rate 0: the first evaluation stays the best, so after 10 more steps training
    # stops at step 15 of 40.
    config = export_case(tmp_path, 'export_config { enable_early_stop: true '
                                   'max_check_steps: 10 best_exporter_metric: "auc" '
                                   'metric_bigger: true }\n', lr=0.0)
    model_dir = tmp_path / "model"
    with pytest.raises(TrainingError, match=r"best_exporter_metric 'auc' is ambiguous; the "
                                            r"evaluation reports: auc_ctr, auc_cvr"):
        mtrec.train(config, model_dir=str(model_dir))
    with open(config) as f:
        text = f.read().replace('best_exporter_metric: "auc"', 'best_exporter_metric: "auc_cvr"')
    with open(config, "w") as f:
        f.write(text)
    result = mtrec.train(config, model_dir=str(tmp_path / "model2"))
    assert result["global_step"] == 15
    with open(tmp_path / "model2" / "eval_result.txt") as f:
        assert [json.loads(line)["global_step"] for line in f] == [5, 10, 15]
    assert os.listdir(tmp_path / "model2" / "export" / "final")


def test_best_exporter_needs_eval_data(tmp_path):
    from mtrec import config as config_lib
    from mtrec.errors import ConfigError
    config, _ = write_case(tmp_path, good_rows(8), CONFIG + 'export_config { '
                           'exporter_type: "best" }\n')
    with pytest.raises(ConfigError, match='exporter_type "best" and enable_early_stop evaluate '
                                          "during training, so they need eval_input_path"):
        config_lib.load(config)


@pytest.mark.slow
def test_kill_9_at_random_steps_then_resume_to_exactly_num_steps(tmp_path):
    """SIGKILL the trainer several times at random moments: every restart resumes from the
    last checkpoint at its step, and nothing saved is ever corrupt."""
    import json
    import random
    import signal
    import tensorflow as tf
    text = edit("batch_size: 4", "batch_size: 4\n  num_epochs: 0", CONFIG)
    kills = int(os.environ.get("MTREC_KILLS", 3))
    steps = 15 * (kills + 1)
    config, data = write_case(tmp_path, good_rows(200), text, steps=steps)
    with open(config, "a") as f:
        f.write(f'eval_input_path: "{data}"\n')
    model_dir = str(tmp_path / "model")
    command = [sys.executable, "-m", "mtrec", "train", "--config", config, "--model_dir", model_dir]
    rng = random.Random(0)
    seen = []
    for _ in range(kills):
        before = tf.train.latest_checkpoint(model_dir)
        log = open(tmp_path / "log.txt", "w")
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        # Wait for a new checkpoint, then kill at a random moment soon after.
        while tf.train.latest_checkpoint(model_dir) == before and time.time() < deadline:
            assert proc.poll() is None, open(tmp_path / "log.txt").read()[-2000:]
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
        latest = tf.train.latest_checkpoint(model_dir)
        step = int(latest.rsplit("-", 1)[1])
        assert step % 5 == 0 and step > (seen[-1] if seen else 0)
        seen.append(step)
        if before:  # the restart began exactly at the last checkpoint's step
            assert f"from step {int(before.rsplit('-', 1)[1])}" in open(tmp_path / "log.txt").read()
        results = os.path.join(model_dir, "eval_result.txt")
        if os.path.exists(results):  # (the kill may come before the first evaluation)
            with open(results) as f:
                lines = [json.loads(line) for line in f]  # never a torn line
            assert [l["global_step"] for l in lines] == sorted(l["global_step"] for l in lines)
    final = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"from step {seen[-1]}" in final.stderr
    assert tf.train.latest_checkpoint(model_dir).endswith(f"ckpt-{steps}")
    assert json.loads(final.stdout.strip().splitlines()[-1])["global_step"] == steps


@pytest.mark.slow
def test_non_utf8_bytes_name_file_and_line_or_are_skipped(tmp_path, caplog):
    import mtrec
    rows = good_rows(40)
    config, data = write_case(tmp_path, rows)
    with open(data, "rb") as f:
        lines = f.read().split(b"\n")
    lines[9] = b"1,0,u\xff\xfe,3"
    with open(data, "wb") as f:
        f.write(b"\n".join(lines))
    with pytest.raises(DataError, match=f"{data}:10: bytes that are not UTF-8 at byte 6 of "
                                        "the line"):
        mtrec.train(config, model_dir=str(tmp_path / "model"))
    with open(config) as f:
        text = f.read().replace("batch_size: 4", "batch_size: 4\n  ignore_error: true")
    with open(config, "w") as f:
        f.write(text)
    mtrec.train(config, model_dir=str(tmp_path / "model2"))
    assert "2 malformed rows were skipped" in caplog.text  # 20 steps x 4 rows: 2 epochs


@pytest.mark.slow
def test_a_failed_checkpoint_write_is_one_message_and_the_last_one_survives(tmp_path,
                                                                             monkeypatch):
    import mtrec
    import tensorflow as tf
    real_save = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == 10:
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
        return real_save(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    config, _ = write_case(tmp_path, good_rows(40))
    model_dir = str(tmp_path / "model")
    with pytest.raises(TrainingError, match=r"could not write the checkpoint of step 10 .*No "
                                            r"space left on device. Is the disk full\? The "
                                            r"checkpoint of step 5 is intact"):
        mtrec.train(config, model_dir=model_dir)
    monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-5")
    assert mtrec.train(config, model_dir=model_dir) == {}  # resumes from 5 to 20
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-20")


def test_evaluate_takes_the_newest_checkpoint_when_its_pick_was_deleted(tmp_path, monkeypatch):
    """A running trainer deletes old checkpoints (keep_checkpoint_max) while `mtrec
    evaluate` / `export` start: they move on to the newest one."""
    import glob
    import mtrec
    import tensorflow as tf
    config, data = write_case(tmp_path, good_rows(40), steps=10)
    model_dir = str(tmp_path / "model")
    mtrec.train(config, model_dir=model_dir)
    for path in glob.glob(os.path.join(model_dir, "ckpt-5.*")):
        os.remove(path)  # as keep_checkpoint_max does
    stale = os.path.join(model_dir, "ckpt-5")
    calls = []
    real_latest = tf.train.latest_checkpoint

    def latest(directory):
        calls.append(directory)
        return stale if len(calls) == 1 else real_latest(directory)

    monkeypatch.setattr(tf.train, "latest_checkpoint", latest)
    result = mtrec.evaluate(model_dir=model_dir, eval_input_path=data)
    assert result["global_step"] == 10 and len(calls) == 2
