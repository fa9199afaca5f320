"""How model_dir is written: nothing saved is ever left half-written, and one trainer at
a time writes there."""
import contextlib
import fcntl
import os
import tempfile

from mtrec.errors import TrainingError


def atomic_write(path: str, text: str) -> None:
    """Write to a temporary file in the same directory, then rename over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def append_line(path: str, line: str) -> None:
    """Append one line atomically (the old content plus the line replaces the file)."""
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if old and not old.endswith("\n"):
            old += "\n"
    atomic_write(path, old + line.rstrip("\n") + "\n")


def check_model_dir(model_dir: str) -> None:
    """model_dir is set, exists and is writable; else one clear error."""
    if not model_dir:
        raise TrainingError("no model_dir: set it in the config or pass --model_dir.")
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise TrainingError(f"model_dir {model_dir!r} is not writable: {e.strerror}.") from None


@contextlib.contextmanager
def model_dir_lock(model_dir: str):
    """Hold an exclusive lock on model_dir while training, so that a second `mtrec train`
    on the same directory refuses instead of interleaving checkpoints. The operating
    system releases the lock when the process ends, even on kill -9."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        handle = open(os.path.join(model_dir, ".train.lock"), "a+", encoding="utf-8")
    except OSError as e:
        raise TrainingError(f"model_dir {model_dir!r} is not writable: {e.strerror}.") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise TrainingError(f"model_dir {model_dir!r} is being trained by another process "
                                f"(pid {owner}); wait for it to finish or use another "
                                "model_dir.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
