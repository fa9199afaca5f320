"""Validation of data_config: the input columns, labels, sample weight, separator, input
format and compression; and, for `mtrec check`, the input files themselves."""
import csv
import io
import zlib

from mtrec.config import binary_input
from mtrec.config.paths import (COMPRESSION_TYPES, compression, expand, is_remote,
                                open_binary, split_paths)
from mtrec.config.source import Problems
from mtrec.protos import train_pb2


def check_data(pipeline, p: Problems) -> dict:
    """{input_name: its input_fields entry}, reporting bad columns."""
    data = pipeline.data_config
    inputs = {}
    if not data.input_fields:
        p.error("data_config has no input_fields; list the columns of your rows.", "data_config")
    for field in data.input_fields:
        if not field.input_name:
            p.error("an input_fields entry has no input_name.", "input_fields")
        elif field.input_name in inputs:
            p.error(f"input_fields: {field.input_name!r} is listed twice.", "input_name",
                    field.input_name)
        inputs[field.input_name] = field
    if data.batch_size == 0:
        p.error("data_config.batch_size must be at least 1.", "batch_size")
    for name in data.label_fields:
        if name not in inputs:
            p.error(f"label_fields: {name!r} is not an input field.", "label_fields", name)
    if data.sample_weight and data.sample_weight not in inputs:
        p.error(f"sample_weight: {data.sample_weight!r} is not an input field.", "sample_weight")
    if data.selected_cols:
        for name in data.selected_cols.split(","):
            if name.strip() not in inputs:
                p.error(f"selected_cols: {name.strip()!r} is not an input field.", "selected_cols")
    if len(data.separator) != 1 and data.input_type == data.CSVInput:
        p.error(f"data_config.separator must be one character, got {data.separator!r}.",
                "separator")
    check_format(data, p)
    check_binary_input(pipeline, p)
    if data.chief_redundant:
        parameter_servers = pipeline.train_config.train_distribute == train_pb2.PSStrategy
        p.warn("chief_redundant is ignored: " + (
            "under PSStrategy mtrec's chief only coordinates and reads no training rows "
            "already." if parameter_servers else "it only matters for EasyRec's "
            "parameter-server jobs; every worker of mtrec's strategies trains."),
            "chief_redundant")
    return inputs


def check_format(data, p: Problems) -> None:
    """input_type, data_compression_type and the fields only some formats have."""
    if data.HasField("n_data_batch_tfrecord") and data.input_type != data.BatchTFRecordInput:
        p.warn("n_data_batch_tfrecord is ignored: only input_type BatchTFRecordInput reads "
               "several rows per record.", "n_data_batch_tfrecord")
    kind = data.data_compression_type
    if kind not in COMPRESSION_TYPES:
        upper = f" (did you mean {kind.upper()!r}?)" if kind.upper() in COMPRESSION_TYPES else ""
        p.error(f"data_compression_type {kind!r} is not one of \"GZIP\", \"ZLIB\" or \"\" "
                f"(none){upper}.", "data_compression_type")
    elif kind and data.input_type in (data.ParquetInput, data.CriteoInput):
        p.error("data_compression_type is for CSV and TFRecord files; "
                + ("Parquet files carry their own compression" if data.input_type ==
                   data.ParquetInput else "binary Criteo files are read uncompressed")
                + ": remove it.", "data_compression_type")
    elif kind == "ZLIB" and data.input_type == data.CSVInput:
        p.error("data_compression_type \"ZLIB\" is for TFRecord files; CSV files may be "
                "GZIP-compressed (\"GZIP\", or a name ending in .gz).", "data_compression_type")


def check_binary_input(pipeline, p: Problems) -> None:
    """binary_train_input / binary_eval_input go with input_type CriteoInput, whose columns
    are label, f1..f13 and c1..c26 (mtrec/config/binary_input.py)."""
    data = pipeline.data_config
    criteo = data.input_type == data.CriteoInput
    for kind, field in binary_input.FIELDS.items():
        path_field = f"{kind}_input_path"
        if not pipeline.HasField(field):
            if criteo and kind == "train":
                p.error("input_type: CriteoInput reads binary_train_input { category_path "
                        "dense_path label_path } (and binary_eval_input), not "
                        "train_input_path.", "input_type", "CriteoInput")
            continue
        if not criteo:
            p.error(f"{field} names binary Criteo files: set data_config input_type: "
                    "CriteoInput, or name other files with " + path_field + ".", field)
        if getattr(pipeline, path_field):
            p.error(f"{field} and {path_field} both name the {kind} files; keep one.", field)
        message = getattr(pipeline, field)
        counts = [len(getattr(message, f"{k}_path")) for k in binary_input.ROW_BYTES]
        if not any(counts) or len(set(counts)) > 1:
            p.error(f"{field} has {counts[0]} category_path, {counts[1]} dense_path and "
                    f"{counts[2]} label_path entries; give one of each per part of the data.",
                    field)
    if criteo:
        for f in data.input_fields:
            if f.input_name and f.input_name not in binary_input.COLUMNS:
                p.error(f"input_fields {f.input_name!r}: input_type CriteoInput reads the "
                        "columns label, f1..f13 and c1..c26 (by these names); "
                        f"{f.input_name!r} is none of them.", "input_name", f.input_name)


def check_input_files(pipeline, p: Problems) -> None:
    """`mtrec check`: every local train_input_path / eval_input_path entry is an existing
    file, a directory holding one, or a glob matching one (binary_train_input /
    binary_eval_input: parts of whole rows, see binary_input.part_rows); with a CSV header
    (with_header), each file's header names every input field. Remote paths (hdfs://,
    oss://, ...) are not looked at (a warning): mtrec's readers read local or mounted
    files, which is checked where the job runs."""
    data = pipeline.data_config
    for field in binary_input.FIELDS.values():
        if pipeline.HasField(field):
            parts, why = binary_input.expand_parts(getattr(pipeline, field), field)
            problems = [why] if why else [binary_input.part_rows(part)[1] for part in parts]
            for problem in filter(None, problems):
                p.error(problem, field)
    for what in ("train_input_path", "eval_input_path"):
        files = []
        for pattern in split_paths(getattr(pipeline, what)):
            if is_remote(pattern):
                p.warn(f"{what} {pattern!r} is on a remote file system and was not checked; "
                       "mtrec reads local or mounted files.", what)
                continue
            matched, why = expand(pattern, what)
            if why:
                p.error(f"{why[:-1]}; relative paths are from the current directory "
                        "(mtrec check --skip_data_check checks the config without its data).",
                        what)
            files.extend(matched)
        for path in files:
            if path.endswith((".tar.gz", ".tgz")) and data.input_type != data.ParquetInput:
                p.error(f"{what} {path!r} is a tar archive; extract its files and name them.",
                        what)
            elif data.input_type == data.CSVInput and data.with_header:
                problem = header_problem(data, path)
                if problem:
                    p.error(problem, what)


def header_problem(data, path: str) -> str | None:
    """Why a CSV file's header (line 1) does not name every input field, or None."""
    try:
        with io.TextIOWrapper(open_binary(path, compression(data, path)),
                              encoding="utf-8-sig", errors="replace", newline="") as f:
            line = f.readline().rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as e:
        return f"{path}: cannot be read ({e})."
    names = next(csv.reader([line], delimiter=data.separator), []) if line else []
    missing = [f.input_name for f in data.input_fields if f.input_name not in names]
    if not missing:
        return None
    return (f"{path}:1: the header has no column {', '.join(map(repr, missing))}"
            f"{'; it has: ' + ', '.join(names) if names else ' (line 1 is empty)'}.")
