"""The CLI's one error boundary: every failure that reaches `mtrec.cli.main` is one line
on stderr naming the command and what to do, exit code 1, the traceback only under
--verbose; and `mtrec predict` leaves a complete output file or none."""
import errno
import os
import stat
import sys
from importlib import metadata

import pytest

import mtrec
from mtrec import cli
from mtrec.errors import describe


def run_main(capsys, *argv):
    """(exit code, stdout, stderr) of `mtrec ARGV` run in this process."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def one_error_line(code, err):
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mtrec: error: "), err
    return lines[0]


def test_version_is_the_installed_package_version(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert code == 0
    assert out.strip() == f"mtrec {metadata.version('mtrec')}"


def _disk_full_in_tensorflow():
    import tensorflow as tf
    tf.io.write_file("/dev/full", "x" * 10000)  # a real ENOSPC, as TensorFlow reports it


def _tf_error(name, message):
    import tensorflow as tf
    return getattr(tf.errors, name)(None, None, message)


@pytest.mark.parametrize("failure, expected", [
    (lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/m/ckpt-3.index"),
     "train: disk full ('/m/ckpt-3.index'). Free some space and run the same command again; "
     "it resumes from the last checkpoint in model_dir, which is intact."),
    (lambda: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/m/x"),
     "train: disk full ('/m/x')"),
    (lambda: PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/m/checkpoint"),
     "train: permission denied ('/m/checkpoint'). Make it accessible to this user"),
    (lambda: OSError(errno.EROFS, os.strerror(errno.EROFS), "/m"),
     "train: read-only file system ('/m'). Choose a writable path."),
    (lambda: FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/m/vocab.txt"),
     "train: no such file or directory ('/m/vocab.txt'). Check the path."),
    (lambda: _disk_full_in_tensorflow,
     "train: disk full (/dev/full; No space left on device [Op:WriteFile]). Free some space"),
    (lambda: _tf_error("ResourceExhaustedError",
                       "OOM when allocating tensor with shape[100000000,64]\ndetails"),
     "train: out of memory (OOM when allocating tensor with shape[100000000,64]). To need "
     "less, lower data_config.batch_size or the embedding table sizes"),
    (lambda: MemoryError(), "train: out of memory. To need less, lower data_config.batch_size"),
    (lambda: _tf_error("InternalError", "a kernel failed\nwith details"),
     "train: TensorFlow InternalError (a kernel failed)."),
    (lambda: RuntimeError("boom\nsecond line"),
     "train: unexpected RuntimeError: boom. This is a bug in mtrec; please report it (run "
     "with --verbose for the traceback)."),
], ids=["ENOSPC", "EDQUOT", "EACCES", "EROFS", "ENOENT", "tf-disk-full", "tf-OOM", "MemoryError",
        "tf-OpError", "bug"])
def test_each_failure_class_is_one_line_naming_the_step(capsys, monkeypatch, failure, expected):
    error = failure()

    def train(*args, **kwargs):
        if callable(error):
            error()
        raise error

    monkeypatch.setattr(mtrec, "train", train)
    line = one_error_line(*run_main(capsys, "train", "--config", "x.config")[::2])
    assert line.startswith("mtrec: error: " + expected), line


@pytest.mark.parametrize("flag_first", [True, False])
def test_verbose_prints_the_traceback_then_the_same_line(capsys, monkeypatch, flag_first):
    def train(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(mtrec, "train", train)
    argv = ["train", "--config", "x.config"]
    code, _, err = run_main(capsys, *(["-v", *argv] if flag_first else [*argv, "--verbose"]))
    assert code == 1
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err
    assert err.strip().splitlines()[-1] == (
        "mtrec: error: train: unexpected RuntimeError: boom. This is a bug in mtrec; please "
        "report it.")


def test_a_user_mistake_keeps_its_message(capsys):
    line = one_error_line(*run_main(capsys, "check", "--config", "missing.config")[::2])
    assert "missing.config: config file not found" in line


def test_interrupt_exits_130(capsys, monkeypatch):
    def train(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mtrec, "train", train)
    code, _, err = run_main(capsys, "train", "--config", "x.config")
    assert code == 130 and "Traceback" not in err
    assert "the last checkpoint in model_dir is intact" in err


def test_the_mapper_does_not_import_tensorflow(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert describe(MemoryError(), "check").startswith("check: out of memory")
    assert "tensorflow" not in sys.modules


# -- mtrec predict --------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(saved_model, input CSV of 40 rows) of the tiny MMoE of test_reliability."""
    from test_reliability import good_rows, write_case
    work = tmp_path_factory.mktemp("predict")
    config, data = write_case(work, good_rows(40), steps=5)
    mtrec.train(config, model_dir=str(work / "m"))
    return mtrec.export(model_dir=str(work / "m"), export_dir=str(work / "e")), data


def test_predict_writes_the_whole_file_with_usual_permissions(capsys, tmp_path, exported):
    saved_model, data = exported
    out = tmp_path / "scores.csv"
    code, _, err = run_main(capsys, "predict", "--saved_model", saved_model, "--input", data,
                            "--output", str(out), "--reserved_cols", "user", "--batch_size", "3")
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0].startswith("user,") and len(lines) == 41
    assert os.listdir(tmp_path) == ["scores.csv"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_predict_to_a_full_disk_is_one_message(capsys, exported):
    saved_model, data = exported
    line = one_error_line(*run_main(capsys, "predict", "--saved_model", saved_model, "--input",
                                    data, "--output", "/dev/full")[::2])
    assert line == ("mtrec: error: predict: disk full ('/dev/full'). Free some space and run "
                    "the same command again; no partial output file is left.")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # written to, never renamed over


def test_predict_into_a_missing_directory_is_one_message(capsys, tmp_path, exported):
    saved_model, data = exported
    out = tmp_path / "no" / "such" / "scores.csv"
    line = one_error_line(*run_main(capsys, "predict", "--saved_model", saved_model, "--input",
                                    data, "--output", str(out))[::2])
    assert line == (f"mtrec: error: --output {out}: the directory {out.parent} does not "
                    "exist.")
    assert not (tmp_path / "no").exists()


def test_predict_batch_size_0_names_the_flag(capsys, tmp_path, exported):
    saved_model, data = exported
    line = one_error_line(*run_main(capsys, "predict", "--saved_model", saved_model, "--input",
                                    data, "--output", str(tmp_path / "o.csv"),
                                    "--batch_size", "0")[::2])
    assert line == "mtrec: error: --batch_size must be at least 1, got 0."
    assert not os.listdir(tmp_path)


def test_a_failed_predict_leaves_the_old_output_untouched(capsys, tmp_path, exported):
    saved_model, data = exported
    rows = open(data).read().splitlines()
    rows[29] = "1,0,only_three"  # batch size 4: batches 1-7 are written before this one
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(rows) + "\n")
    out = tmp_path / "scores.csv"
    out.write_text("old scores\n")
    line = one_error_line(*run_main(capsys, "predict", "--saved_model", saved_model, "--input",
                                    str(bad), "--output", str(out), "--batch_size", "4")[::2])
    assert f"{bad}:30" in line, line
    assert out.read_text() == "old scores\n"
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "scores.csv"]


def test_an_introductory_first_line_gives_way_to_the_reason():
    """TF's "Graph execution error:" and autograph's "in user code:" only introduce the
    message; the one-line error must carry what went wrong."""
    from mtrec.errors import describe, reason_line
    graph = ("Graph execution error:\n\nDetected at node 'x' defined at:\n  File a.py\n"
             "sequences 'a' and 'b' differ in length\n\t [[{{node assert}}]]")
    assert reason_line(graph) == "sequences 'a' and 'b' differ in length"
    assert reason_line("bad value\nmore detail") == "bad value"
    error = TypeError("in user code:\n\n  File \"m.py\", line 3, in f\n\n"
                      "    TypeError: unsupported operand")
    assert "unexpected TypeError: TypeError: unsupported operand" in describe(error, "train")
