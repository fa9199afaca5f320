"""Input paths: comma-separated files, directories and globs, expanded to files. Free of
TensorFlow, so that `mtrec check` can look at the data without importing it."""
import glob
import os
import re

# `scheme://` of a remote file system (hdfs://, oss://, s3://); file:// is local.
_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Compression types of data_config.data_compression_type (tf.data's names).
COMPRESSION_TYPES = ("", "GZIP", "ZLIB")


def split_paths(paths: str) -> list[str]:
    """The comma-separated paths of train_input_path / eval_input_path."""
    return [p.strip() for p in paths.split(",") if p.strip()]


def is_remote(path: str) -> bool:
    return bool(_REMOTE.match(path)) and not path.startswith("file://")


def expand(pattern: str, what: str = "input") -> tuple[list[str], str | None]:
    """(sorted files of one path, glob or directory; why there are none, or None)."""
    if pattern.startswith("file://"):
        pattern = pattern[len("file://"):]
    if is_remote(pattern):
        return [], (f"{what} path {pattern!r} is on a remote file system: mtrec reads local "
                    "or mounted files; mount it or copy the files.")
    if any(ch in pattern for ch in "*?["):
        matched = sorted(f for f in glob.glob(pattern) if os.path.isfile(f))
        return matched, None if matched else f"{what} path {pattern!r} matches no file."
    if os.path.isdir(pattern):
        matched = sorted(os.path.join(pattern, f) for f in os.listdir(pattern)
                         if os.path.isfile(os.path.join(pattern, f)) and not f.startswith("."))
        return matched, None if matched else f"{what} directory {pattern!r} holds no file."
    if os.path.isfile(pattern):
        return [pattern], None
    return [], f"{what} file {pattern!r} not found."


def compression(data_config, path: str) -> str:
    """The compression of one input file: data_config.data_compression_type, else GZIP for
    a name ending in .gz (as EasyRec reads CSV), else none."""
    if data_config.data_compression_type:
        return data_config.data_compression_type
    return "GZIP" if path.endswith(".gz") else ""


def open_binary(path: str, compression_type: str = ""):
    """A file opened for reading bytes, decompressed when compression_type is GZIP."""
    if compression_type == "GZIP":
        import gzip
        return gzip.open(path, "rb")
    return open(path, "rb")
