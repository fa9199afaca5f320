"""User-facing errors. The CLI prints these as one message, never a traceback; `describe`
turns any other failure that reaches the CLI into one such message."""
import errno
import os
import re
import sys


class MtrecError(Exception):
    """A mistake the user can fix: the message says what and where."""


class ConfigError(MtrecError):
    """A config that does not parse or does not make sense."""


class DataError(MtrecError):
    """Input files that are missing or hold a malformed row."""


class TrainingError(MtrecError):
    """Training cannot go on (a non-finite loss, an unusable model_dir)."""


# Said after "free some space and run the same command again": what a failed command
# leaves intact.
_INTACT = {
    "train": "; it resumes from the last checkpoint in model_dir, which is intact",
    "export": "; earlier exports are intact",
    "predict": "; no partial output file is left",
}
# How each command can get by with less memory.
_LESS_MEMORY = {
    "predict": "lower --batch_size",
    "check": "lower the embedding table sizes (hash_bucket_size, num_buckets, embedding_dim)",
}
_LESS_MEMORY_DEFAULT = ("lower data_config.batch_size or the embedding table sizes "
                        "(hash_bucket_size, num_buckets, embedding_dim); `mtrec check` shows "
                        "the memory of the tables")


def describe(error: BaseException, step: str, verbose: bool = False) -> str:
    """One line for any exception that reached the CLI: the command (`step`) that failed,
    what failed, and what to do. Known failure classes get their own message; anything
    else is a bug in mtrec. TensorFlow is consulted only if it is already imported, so a
    TF-free command stays TF-free."""
    if isinstance(error, MtrecError):
        return str(error)
    if isinstance(error, OSError):
        return f"{step}: {_os_error(error, step)}"
    tf_errors = _tf_errors()
    if tf_errors is not None and isinstance(error, tf_errors.OpError):
        message = reason_line(re.sub(r"\{\{[^}]*\}\}\s*", "", error.message or ""))
        if isinstance(error, tf_errors.ResourceExhaustedError):
            # TensorFlow reports a full disk (ENOSPC, EDQUOT) with this class too.
            for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
                if code is not None and os.strerror(code) in message:
                    return f"{step}: disk full{_detail(message)}. " + _free_space(step)
            return f"{step}: out of memory{_detail(message)}. " + _less_memory(step)
        if isinstance(error, tf_errors.PermissionDeniedError):
            return (f"{step}: permission denied{_detail(message)}. Make the path accessible "
                    "to this user, or choose another one.")
        return f"{step}: TensorFlow {type(error).__name__}{_detail(message)}."
    if isinstance(error, MemoryError):
        return f"{step}: out of memory{_detail(str(error))}. " + _less_memory(step)
    line = reason_line(str(error)).rstrip(".")
    return (f"{step}: unexpected {type(error).__name__}{': ' + line if line else ''}. This is "
            "a bug in mtrec; please report it" +
            ("." if verbose else " (run with --verbose for the traceback)."))


def _os_error(error: OSError, step: str) -> str:
    path = " -> ".join(repr(p) for p in (error.filename, error.filename2) if p is not None)
    what = _detail(path or error.strerror or str(error))
    code = error.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
        return f"disk full{what}. " + _free_space(step)
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied{what}. Make it accessible to this user, or choose another path."
    if code == errno.EROFS:
        return f"read-only file system{what}. Choose a writable path."
    if code == errno.ENOENT:
        return f"no such file or directory{what}. Check the path."
    reason = error.strerror or type(error).__name__
    return f"{reason}{_detail(path)}." if path or error.strerror else \
        f"{type(error).__name__}{_detail(str(error))}."


def _free_space(step: str) -> str:
    return "Free some space and run the same command again" + _INTACT.get(step, "") + "."


def _less_memory(step: str) -> str:
    return "To need less, " + _LESS_MEMORY.get(step, _LESS_MEMORY_DEFAULT) + "."


def _tf_errors():
    tf = sys.modules.get("tensorflow")
    return getattr(tf, "errors", None) if tf is not None else None


def _detail(text) -> str:
    """" (first line of text)", or nothing when there is no text."""
    line = reason_line(text).rstrip(".")
    return f" ({line})" if line else ""


def reason_line(text) -> str:
    """The line of an error message that says what went wrong: its first line, unless that
    only introduces the rest ("Graph execution error:", autograph's "in user code:"); then
    the last line that is not TF's [[node ...]] marker."""
    lines = [line.strip() for line in str(text).splitlines()
             if line.strip() and not line.strip().startswith("[[")]
    if len(lines) > 1 and lines[0].endswith(":"):
        return lines[-1]
    return lines[0] if lines else ""


