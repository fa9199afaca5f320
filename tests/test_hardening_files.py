"""Files mtrec writes in model_dir and export dirs (#25): concurrent exports each publish a
loadable version, a failed export changes nothing, planted symbolic links are refused,
killed writers' leftovers are removed, a finished job keeps its export, and "best" with a
metric that is never defined still exports."""
import errno
import os
import socket
import subprocess
import sys
import threading

import pytest

from mtrec.errors import MtrecError, TrainingError
from mtrec.training import storage
from test_reliability import CONFIG, good_rows, write_case


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, model_dir) of a tiny model trained 10 steps (export_config "final")."""
    import mtrec
    tmp_path = tmp_path_factory.mktemp("trained")
    config, _ = write_case(tmp_path, good_rows(40), steps=10)
    model_dir = str(tmp_path / "model")
    mtrec.train(config, model_dir=model_dir)
    return config, model_dir


def versions(export_dir):
    return sorted(d for d in os.listdir(export_dir) if d.isdigit())


def loads(path):
    import tensorflow as tf
    return "serving_default" in tf.saved_model.load(path).signatures


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_two_exports_in_the_same_second_both_publish_a_loadable_version(trained, tmp_path,
                                                                         monkeypatch):
    import time
    import mtrec
    import tensorflow as tf
    from mtrec.serving import saved_model
    _, model_dir = trained
    export_dir = str(tmp_path / "e")
    old = mtrec.export(model_dir=model_dir, export_dir=export_dir)
    stale = os.path.join(export_dir, f".tmp-{dead_pid()}-{socket.gethostname()}-abc123")
    os.makedirs(os.path.join(stale, "variables"))  # a killed export's leftover
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)
    real_save = tf.saved_model.save
    one_at_a_time, both_written = threading.Lock(), threading.Barrier(2, timeout=120)

    def save(*args, **kwargs):
        with one_at_a_time:
            real_save(*args, **kwargs)
        both_written.wait()  # then both publish at once, for the same version

    monkeypatch.setattr(tf.saved_model, "save", save)
    results, errors = [], []

    def run():
        try:
            results.append(saved_model.export_saved_model(job, export_dir))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    from mtrec.api import _load, _restored_job
    job, _ = _restored_job(_load(None, model_dir))
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # One claimed the version, the other the next one; neither removed the other's
    # (exports_to_keep: 1 removes only versions that existed before it began).
    first = int(os.path.basename(old)) + 1
    assert sorted(os.path.basename(p) for p in results) == [str(first), str(first + 1)]
    # The older version was pruned (exports_to_keep: 1), and so was the killed one's leftover.
    assert sorted(os.listdir(export_dir)) == sorted(os.path.basename(p) for p in results)
    for path in results:
        assert loads(path)
        assert saved_model.exported_step(path) == 10


def test_a_full_disk_export_is_one_message_and_changes_nothing(trained, tmp_path, monkeypatch):
    import mtrec
    import tensorflow as tf
    _, model_dir = trained
    export_dir = str(tmp_path / "e")
    old = mtrec.export(model_dir=model_dir, export_dir=export_dir)

    def save(module, path, **kwargs):
        with open(os.path.join(path, "saved_model.pb"), "w") as f:
            f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", save)
    with pytest.raises(MtrecError, match=f"could not export a SavedModel to '{export_dir}': No "
                                         "space left on device. Nothing was published there, "
                                         "and the versions it already held are untouched"):
        mtrec.export(model_dir=model_dir, export_dir=export_dir)
    assert os.listdir(export_dir) == [os.path.basename(old)]
    assert loads(old)


def test_the_trainers_final_export_on_a_full_disk_is_one_message(tmp_path, monkeypatch):
    import mtrec
    import tensorflow as tf

    def save(module, path, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", save)
    config, _ = write_case(tmp_path, good_rows(20), steps=5)
    model_dir = tmp_path / "model"
    with pytest.raises(MtrecError, match="could not export a SavedModel to .*final': No space "
                                         "left on device"):
        mtrec.train(config, model_dir=str(model_dir))
    assert os.listdir(model_dir / "export" / "final") == []
    # Once there is space, the same command exports the finished job (nothing to train).
    monkeypatch.undo()
    mtrec.train(config, model_dir=str(model_dir))
    assert len(versions(model_dir / "export" / "final")) == 1


@pytest.mark.parametrize("name, write", [
    (".train.lock", lambda d, p: storage.model_dir_lock(d).__enter__()),
    (".write_test", lambda d, p: storage.check_model_dir(d)),
    ("eval_result.txt", lambda d, p: storage.append_line(p, "{}")),
    ("pipeline.config", lambda d, p: storage.atomic_write(p, "x")),
])
def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path, name, write):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    target = tmp_path / "outside.txt"
    target.write_text("precious\n")
    link = model_dir / name
    link.symlink_to(target)
    with pytest.raises(TrainingError, match=f"{link} is a symbolic link; mtrec writes no file "
                                            "through a link"):
        write(str(model_dir), str(link))
    assert target.read_text() == "precious\n"
    assert link.is_symlink()


def test_a_planted_export_symlink_is_refused_before_training(tmp_path):
    import mtrec
    config, _ = write_case(tmp_path, good_rows(20), steps=5)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (model_dir / "export").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TrainingError, match="export is a symbolic link"):
        mtrec.train(config, model_dir=str(model_dir))
    assert os.listdir(tmp_path / "elsewhere") == []
    assert not [f for f in os.listdir(model_dir) if f.startswith("ckpt")]


def test_leftovers_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    model_dir = tmp_path / "model"
    host = socket.gethostname()
    (model_dir / "ckpt-7_temp").mkdir(parents=True)  # a killed checkpoint save
    (model_dir / "ckpt-7_temp" / "part-00000-of-00001.data-00000-of-00001").write_text("x")
    (model_dir / ("checkpoint.tmp" + "0" * 32)).write_text("x")
    (model_dir / f".tmp-{dead_pid()}-{host}-k1ll3d").write_text("x")  # a killed atomic_write
    live = model_dir / f".tmp-{os.getpid()}-{host}-l1ve"
    live.write_text("x")
    other_host = model_dir / f".tmp-1-not-{host}-abc"
    other_host.write_text("x")
    with storage.model_dir_lock(str(model_dir)):
        assert sorted(os.listdir(model_dir)) == sorted([".train.lock", live.name,
                                                        other_host.name])


def test_a_finished_job_says_so_once_and_keeps_its_export(trained, caplog):
    import logging
    import mtrec
    from mtrec.serving.saved_model import exported_step
    config, model_dir = trained
    final = os.path.join(model_dir, "export", "final")
    before = versions(final)
    assert len(before) == 1 and exported_step(os.path.join(final, before[0])) == 10
    with caplog.at_level(logging.INFO, logger="mtrec"):
        assert mtrec.train(config, model_dir=model_dir) == {}
    assert caplog.text.count("nothing to train") == 1
    assert "training MMoE from step" not in caplog.text
    assert f"the export {os.path.join(final, before[0])} (step 10) is kept" in caplog.text
    assert versions(final) == before


def test_best_with_a_metric_never_defined_exports_the_latest_and_says_so(tmp_path, caplog):
    import logging
    import mtrec
    rows = [f"{i % 2},{int(i % 6 == 0)},u{i % 7},{i % 40}" for i in range(20)]
    config, _ = write_case(tmp_path, rows, CONFIG + 'export_config { exporter_type: "best" '
                           'best_exporter_metric: "auc_ctr" }\n', steps=10)
    one_class = tmp_path / "eval.csv"
    one_class.write_text("".join(f"0,0,u{i},{i}\n" for i in range(8)))
    with open(config, "a") as f:
        f.write(f'eval_input_path: "{one_class}"\n')
    model_dir = tmp_path / "model"
    with caplog.at_level(logging.INFO, logger="mtrec"):
        mtrec.train(config, model_dir=str(model_dir))
    assert ("exporter_type \"best\": best_exporter_metric 'auc_ctr' was never defined"
            in caplog.text)
    assert "exporting the latest checkpoint (step 10) instead" in caplog.text
    (version,) = versions(model_dir / "export" / "best")
    assert loads(str(model_dir / "export" / "best" / version))
