"""How model_dir and export directories are written: nothing saved is ever left
half-written, one trainer at a time writes to a model_dir, no file is written through a
symbolic link planted there, and the temporary files of killed processes are removed."""
import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import tempfile

from mtrec.errors import TrainingError

log = logging.getLogger("mtrec")

# Temporary names carry the writer's pid and host (".tmp-<pid>-<host>-<random>"), so a
# later process can tell a killed writer's leftovers from a live writer's work.
_TEMP = re.compile(r"^\.tmp-(\d+)-(.+)-[^-]+$")
# What tf.train.CheckpointManager leaves when killed while saving: the shard directory
# "ckpt-N_temp/" and the index file's temporary "checkpoint.tmp<uuid>".
_CHECKPOINT_TEMP = re.compile(r"^(ckpt-\d+_temp|checkpoint\.tmp[0-9a-f]{32})$")


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def temp_prefix() -> str:
    """The prefix of every temporary file or directory mtrec creates."""
    return f".tmp-{os.getpid()}-{socket.gethostname()}-"


def link_error(path: str) -> TrainingError:
    return TrainingError(f"{path} is a symbolic link; mtrec writes no file through a link in "
                         "model_dir or export_dir. Remove the link and run again (its target "
                         "was not touched).")


def refuse_link(path: str) -> None:
    """One clear error if path is a symbolic link."""
    if os.path.islink(path):
        raise link_error(path)


def open_nofollow(path: str, flags: int, mode: int = 0o666) -> int:
    """os.open that refuses a symbolic link at path (one clear error)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise link_error(path) from None
        raise


def atomic_write(path: str, text: str) -> None:
    """Write to a temporary file in the same directory, then rename over `path`."""
    refuse_link(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # mkstemp creates with O_EXCL | O_NOFOLLOW: never through a planted link.
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(), dir=directory)
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
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        pass
    else:
        with os.fdopen(fd, encoding="utf-8") as f:
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
        with os.fdopen(open_nofollow(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise TrainingError(f"model_dir {model_dir!r} is not writable: {e.strerror}.") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(directory: str, checkpoint_temps: bool = False) -> None:
    """Remove the temporary files and directories that killed mtrec processes left in
    directory: those whose name carries this host and a pid that is no longer running.
    checkpoint_temps: also TensorFlow's checkpoint temporaries (only the holder of the
    model_dir lock may say so: no one else saves checkpoints there)."""
    host = socket.gethostname()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = _TEMP.match(entry.name)
        stale = (match is not None and match.group(2) == host
                 and not _alive(int(match.group(1))))
        if not stale and not (checkpoint_temps and _CHECKPOINT_TEMP.match(entry.name)):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
            log.info("removed %s, left by a process that was killed while writing it",
                     entry.path)
        except OSError as e:
            log.warning("could not remove the leftover %s: %s", entry.path, e.strerror)


@contextlib.contextmanager
def model_dir_lock(model_dir: str):
    """Hold an exclusive lock on model_dir while training, so that a second `mtrec train`
    on the same directory refuses instead of interleaving checkpoints. The operating
    system releases the lock when the process ends, even on kill -9. Once it holds the
    lock, removes what killed processes left behind in model_dir."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        fd = open_nofollow(os.path.join(model_dir, ".train.lock"), os.O_RDWR | os.O_CREAT)
        handle = os.fdopen(fd, "r+", encoding="utf-8")
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
        remove_stale_temps(model_dir, checkpoint_temps=True)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
