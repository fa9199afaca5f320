"""The measured status of every EasyRec sample config under mtrec (issues #17, #22).

    python scripts/easyrec_status.py --samples /work/shared/easyrec/samples/model_config \\
        --out docs/easyrec.md [--only GLOB] [--no-train] [--steps 5] [--timeout 600]
        [--separate_export] [--work_dir DIR]

For every `*.config` in --samples:
  1. check: what `mtrec check` runs (mtrec.config.load: parse, overrides, defaults,
     validation, the memory estimate), in this process; no data is read. A failure is
     recorded as its first problem (file:line and message, as the CLI's error boundary
     mtrec.errors.describe words it) and the number of problems it lists.
  2. train+export, for configs that pass check and are multi-task, multi-scenario or
     rank configs: small data in the config's input_type (CSV, TFRecord, batch TFRecord,
     Parquet or binary Criteo files) with its input_fields is generated (tag and
     sequence cells use the feature's separators; labels are valid for their towers;
     relative export_config.asset_files get stand-ins, also for check), and
     `mtrec train` runs --steps steps on it (training ends with an evaluation and the
     export of the final SavedModel, whose saved_model.pb is checked; --separate_export
     also runs `mtrec export`), with the CLI's own `--set` overrides for the input paths,
     step and batch counts (the config file is never changed), in one subprocess per
     config with a timeout, --jobs subprocesses at a time. A PSStrategy config trains
     on a local 127.0.0.1 cluster: worker and ps tasks (`mtrec train` with their
     TF_CONFIG, stopped by process id afterwards) and the chief.
  3. For a config that fails check, `every_problem` also lists the problems after the
     first (the parser stops at the first unknown field), for the "what blocks the most
     configs" table.
The markdown is written to --out (again after every trained config, so a stopped run
leaves a partial table), and the most common problems to stdout.
"""
import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import fnmatch
import glob
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

from mtrec import config as config_lib  # noqa: E402
from mtrec.config import binary_input  # noqa: E402
from mtrec.config.check_kd import label_shapes  # noqa: E402
from mtrec.data.synthetic import token_cells  # noqa: E402
from mtrec.errors import describe  # noqa: E402
from mtrec.protos import data_pb2, feature_pb2, loss_pb2, train_pb2  # noqa: E402

DEFAULT_SAMPLES = "/work/shared/easyrec/samples/model_config"

MULTI_TASK = "multi-task"
MULTI_SCENARIO = "multi-scenario"
DIN_BST = "DIN/BST rank"
RANK = "other rank"
MATCH = "match/recall"
FAMILIES = (MULTI_TASK, MULTI_SCENARIO, DIN_BST, RANK, MATCH)
# The families issues #17 and #22 ask to train: a config of these that passes check is trained.
TRAINED_FAMILIES = (MULTI_TASK, MULTI_SCENARIO, DIN_BST, RANK)

# Issue #17's multi-task name prefixes, and the model classes that are multi-task.
_MULTI_TASK_PREFIXES = ("mmoe", "esmm", "ple", "dbmtl", "simple_multi_task", "aitm", "ppnet")
_MULTI_TASK_CLASSES = {"MMoE", "ESMM", "PLE", "DBMTL", "SimpleMultiTask", "MultiTaskModel",
                       "AITM", "PPNet", "SharedBottom"}
_MULTI_SCENARIO_CLASSES = {"STAR", "M2M", "PEPNet", "HMoE", "APG", "SARNet", "MultiDomain"}
_MATCH_CLASSES = {"DSSM", "DSSM_SENet", "MIND", "MultiTowerRecall", "DropoutNet", "MatchModel",
                  "CoMetricLearningI2I", "DAT", "PDN"}
_DIN_BST_CLASSES = {"MultiTowerDIN", "MultiTowerBST", "DIN", "BST"}

_MODEL_CLASS = re.compile(r"""^\s*model_class\s*:\s*["']?(\w+)""", re.M)
_BLOCK_CLASS = re.compile(r"""^\s*class_name\s*:\s*["'](\w+)["']""", re.M)

FC = feature_pb2.FeatureConfig
DC = data_pb2.DatasetConfig
# The local cluster a PSStrategy config trains on: a chief, these workers and ps tasks.
PS_WORKERS, PS_TASKS = 1, 2


@dataclasses.dataclass
class Row:
    """One config's line of the table."""
    name: str
    family: str
    model_class: str
    check: str                 # "pass" or "fail"
    problems: int = 0          # problems `check` listed (0 when it passes)
    first_problem: str = ""    # the first of them, "file:line: message"
    # "pass", "fail", "timeout", "pending", "not run" (--no-train) or "-" (not attempted)
    train: str = "-"
    train_error: str = ""      # the one-line error of train/export
    seconds: float = 0.0       # wall time of the train+export subprocess
    every_problem: list = dataclasses.field(default_factory=list)  # see every_problem()


# ---------------------------------------------------------------------------
# What a config is


def model_class(text: str) -> str:
    """model_class as written in the config text (found even when the text does not parse)."""
    match = _MODEL_CLASS.search(text)
    return match.group(1) if match else ""


def family(name: str, text: str) -> str:
    """The family of a sample config, from its file name, model_class and backbone blocks."""
    cls = model_class(text)
    blocks = set(_BLOCK_CLASS.findall(text))
    if name.startswith(_MULTI_TASK_PREFIXES) or cls in _MULTI_TASK_CLASSES:
        return MULTI_TASK
    if cls in _MULTI_SCENARIO_CLASSES:
        return MULTI_SCENARIO
    if cls in _MATCH_CLASSES:
        return MATCH
    if (name.startswith(("din_", "bst_")) or cls in _DIN_BST_CLASSES
            or blocks & _DIN_BST_CLASSES):
        return DIN_BST
    return RANK


# ---------------------------------------------------------------------------
# Check


def split_problems(message: str) -> tuple[int, str]:
    """(number of problems, the first) of a check failure as describe() words it: either
    "path: N problems:\\n  first\\n  ..." (validation) or one line (a parse error)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return 1, ""
    head = re.match(r"^.*: (\d+) problems?:$", lines[0])
    if head and len(lines) > 1:
        return int(head.group(1)), lines[1]
    return 1, lines[0]


def check(path: str, sets=()):
    """Run what `mtrec check` runs on `path`: (LoadedConfig or None, number of problems,
    first problem). The samples directory is cut from the problem's path."""
    try:
        return config_lib.load(path, None, list(sets)), 0, ""
    except Exception as e:  # noqa: BLE001 - the CLI's boundary: every failure is a result
        count, first = split_problems(describe(e, "check"))
        return None, count, first.replace(os.path.dirname(path) + os.sep, "")


_UNKNOWN = re.compile(r'has no field named "(\w+)"|has no value named (\w+)')
_LOCATION = re.compile(r"^\S+?:(\d+):(\d+): ")


def _value_end(text: str, i: int) -> int:
    """Where the value that starts at text[i] ends: a `{...}`/`<...>` message or `[...]`
    list (nesting and quoted strings respected), quoted strings, or a bare token."""
    if i < len(text) and text[i] in "{<[":
        depth, k = 0, i
        while k < len(text):
            ch = text[k]
            if ch in "\"'":
                k = _string_end(text, k)
                continue
            if ch == "#":
                k = text.find("\n", k) if "\n" in text[k:] else len(text)
                continue
            if ch in "{<[":
                depth += 1
            elif ch in "}>]":
                depth -= 1
                if depth == 0:
                    return k + 1
            k += 1
        return len(text)
    k = i
    while k < len(text) and text[k] in "\"'":  # adjacent literals concatenate
        k = _string_end(text, k)
        while k < len(text) and text[k] in " \t\r\n":
            k += 1
    if k > i:
        return k
    match = re.compile(r"[^\s,;{}\[\]<>#]+").match(text, i)
    return match.end() if match else i


def _string_end(text: str, i: int) -> int:
    quote, k = text[i], i + 1
    while k < len(text) and text[k] != quote and text[k] != "\n":
        k += 2 if text[k] == "\\" else 1
    return k + 1


def _blank_field(text: str, line: int, column: int, name: str) -> str | None:
    """The text with the field `name` on `line` (its name at or before `column`) and its
    value replaced by spaces (newlines kept, so later lines keep their numbers)."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    if line > len(starts):
        return None
    line_start = starts[line - 1]
    line_end = text.find("\n", line_start) if "\n" in text[line_start:] else len(text)
    spots = [m for m in re.finditer(rf"\b{re.escape(name)}\b", text[line_start:line_end])
             if m.start() <= column - 1] if name else []
    if not spots:
        return None
    start = line_start + spots[-1].start()
    k = start + len(name)
    while k < len(text) and text[k] in " \t\r\n":
        k += 1
    if k < len(text) and text[k] == ":":
        k += 1
        while k < len(text) and text[k] in " \t\r\n":
            k += 1
    end = _value_end(text, k)
    if end <= start:
        return None
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def every_problem(path: str, limit: int = 60) -> list[str]:
    """Every problem check would report if each were fixed in turn: the parser stops at
    the first unknown field or enum value, so each is blanked out (in memory; the file is
    not changed) and the text parsed again, until it parses or fails otherwise; then the
    validation problems of what is left. Each problem is `file:line: message`."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    where = os.path.basename(path)
    found = []
    for _ in range(limit):
        try:
            pipeline = config_lib.parse_text(text, where)
        except Exception as e:  # noqa: BLE001 - each failure is a result
            message = describe(e, "check").splitlines()[0]
            found.append(message)
            unknown, location = _UNKNOWN.search(message), _LOCATION.match(message)
            if not (unknown and location):
                return found
            line, column = int(location.group(1)), int(location.group(2))
            if unknown.group(1):
                blanked = _blank_field(text, line, column, unknown.group(1))
            else:  # an enum value: blank the field it is the value of
                code = text.splitlines()[line - 1][:column - 1]
                field = re.findall(r"(\w+)\s*:\s*$", code)
                blanked = _blank_field(text, line, column, field[-1]) if field else None
            if blanked is None or blanked == text:
                return found
            text = blanked
            continue
        try:
            config_lib.apply_overrides(pipeline)
            config_lib.prepare(pipeline, config_lib.Source(where, text))
        except Exception as e:  # noqa: BLE001
            message = describe(e, "check")
            lines = [line.strip() for line in message.splitlines()[1:] if line.strip()]
            found += [line for line in lines if not line.startswith("... and ")] or [message]
        return found
    return found


# ---------------------------------------------------------------------------
# Data with a config's columns


def _feature_type(feature) -> str:
    return FC.FeatureType.Name(feature.feature_type)


def _get(message, field: str, default=None):
    """A field that this mtrec's proto may or may not have yet (other work adds fields):
    its value when set, else `default`."""
    try:
        return getattr(message, field) if message.HasField(field) else default
    except ValueError:  # not a field of this proto
        return default


def _id_pool(feature, numeric: bool) -> list:
    """Values a feature's id space knows: its vocabulary, [0, num_buckets), or a few
    (numbers in a numeric column, else strings)."""
    if feature.vocab_list:
        return list(feature.vocab_list)
    if feature.num_buckets:
        return list(range(min(int(feature.num_buckets), 20)))
    return list(range(20)) if numeric else [f"v{k}" for k in range(20)]


def _number_range(feature) -> tuple[float, float]:
    low, high = _get(feature, "min_val"), _get(feature, "max_val")
    if feature.boundaries:
        low = min(feature.boundaries) - 1.0 if low is None else low
        high = max(feature.boundaries) + 1.0 if high is None else high
    low = 0.0 if low is None else float(low)
    high = low + 1.0 if high is None or high <= low else float(high)
    return low, high


def _numbers(rng, n, low, high, integer) -> list[str]:
    if integer:
        return [str(v) for v in rng.integers(int(np.floor(low)), int(np.floor(high)) + 1, n)]
    return [f"{v:.4f}" for v in rng.uniform(low, high, n)]


def _feature_cells(feature, position: int, rng, n: int, integer: bool, numeric: bool,
                   seq_lengths):
    """Cells of the feature's input number `position` (a column of integers, of numbers,
    or of strings), or None when the feature puts no constraint on the column. Every
    sequence has seq_lengths[i] items in row i: the sequences one attention reads
    together must have the same length per row."""
    kind = _feature_type(feature)
    sub_kind = _get(feature, "sub_feature_type")
    sub_raw = sub_kind is not None and FC.FeatureType.Name(sub_kind) == "RawFeature"
    if kind == "SequenceFeature":
        tokens = (_numbers(rng, 20, *_number_range(feature), False) if sub_raw
                  else _id_pool(feature, numeric))
        inner = _get(feature, "seq_multi_sep", "")
        inner_len = (int(feature.raw_input_dim or 1) if sub_raw else 2) if inner else 1
        return token_cells(rng, n, tokens, feature.separator, inner_separator=inner,
                           inner_len=inner_len, lengths=seq_lengths)
    if kind == "TagFeature":
        return token_cells(rng, n, _id_pool(feature, numeric), feature.separator, max_len=4,
                           kv_separator=feature.kv_separator)
    if kind == "LookupFeature" and position == 1:  # the map `k1:v1|k2:v2`
        keys = [f"k{k}" for k in range(5)]
        return token_cells(rng, n, keys, feature.separator, min_len=1, max_len=3,
                           kv_separator=feature.kv_separator or ":")
    if kind == "LookupFeature":  # the row's key
        return list(rng.choice([f"k{k}" for k in range(5)], n))
    if kind in ("RawFeature", "ExprFeature"):
        low, high = _number_range(feature)
        dim = int(feature.raw_input_dim or 1)
        if dim > 1:
            columns = [_numbers(rng, n, low, high, integer) for _ in range(dim)]
            return [feature.separator.join(values) for values in zip(*columns)]
        return _numbers(rng, n, low, high, integer)
    if kind in ("IdFeature", "ComboFeature"):
        pool = _id_pool(feature, numeric)
        return [str(pool[k]) for k in rng.integers(0, len(pool), n)]
    return None


# The more structure a feature asks of a shared column, the earlier it decides its cells.
_PRECEDENCE = {"SequenceFeature": 0, "LookupFeature": 1, "TagFeature": 2, "RawFeature": 3,
               "ExprFeature": 3, "IdFeature": 4, "ComboFeature": 5}


# Losses of a real-valued label (any other loss gets 0/1 or class-id labels).
_REAL_LABEL_LOSSES = ("L2_LOSS", "ZILN_LOSS")


def _label_kinds(pipeline) -> dict:
    """{label column: number of classes (2 for binary, 0 for a real value)}."""
    kinds = {}
    towers = config_lib.task_towers(pipeline.model_config)
    label_fields = list(pipeline.data_config.label_fields)
    for k, tower in enumerate(towers):
        label = tower.label_name or (label_fields[k] if k < len(label_fields) else "")
        loss_types = [loss.loss_type for loss in tower.losses] or [tower.loss_type]
        regression = all(loss_pb2.LossType.Name(t) in _REAL_LABEL_LOSSES for t in loss_types)
        if label:
            kinds[label] = 0 if regression else max(2, int(tower.num_class or 1))
        if tower.task_space_indicator_label:
            kinds[tower.task_space_indicator_label] = 2
    for label in label_fields:
        kinds.setdefault(label, 2)
    return kinds


def column_cells(pipeline, n: int, seed: int = 0) -> dict:
    """{input column: n cells (strings)} for a config's input_fields: labels valid for their
    towers (both classes present), feature columns in the form their features read (tags
    and sequences split by the feature's separators, ids inside num_buckets / vocab_list,
    numbers around the boundaries), other columns by their input_type."""
    rng = np.random.default_rng(seed)
    labels = _label_kinds(pipeline)
    # Up to 6 items, and no more than the shortest sequence_length / max_seq_len set.
    caps = [int(_get(f, field, 0) or 0) for f in config_lib.all_features(pipeline)
            if _feature_type(f) == "SequenceFeature"
            for field in ("sequence_length", "max_seq_len")]
    seq_lengths = rng.integers(0, min([6] + [c for c in caps if c > 0]) + 1, n)
    readers = collections.defaultdict(list)
    for feature in config_lib.all_features(pipeline):
        for position, name in enumerate(feature.input_names):
            readers[name].append((feature, position))
    columns = {}
    multi_value_labels = label_shapes(pipeline.data_config)
    for field in pipeline.data_config.input_fields:
        name = field.input_name
        integer = field.input_type in (DC.INT32, DC.INT64)
        numeric = integer or field.input_type in (DC.FLOAT, DC.DOUBLE)
        cells = None
        if name in multi_value_labels:  # label_dim values per cell, split by label_sep
            dim, sep = multi_value_labels[name]
            if sep:
                cells = [sep[:1].join(f"{v:.3f}" for v in row)
                         for row in rng.uniform(0.0, 1.0, (n, dim))]
            else:  # an empty label_sep splits the cell into its characters
                cells = ["".join(str(d) for d in row) for row in rng.integers(0, 10, (n, dim))]
        elif name in labels:
            classes = labels[name]
            if classes:
                values = np.arange(n) % classes  # every class present
                rng.shuffle(values)
                cells = [str(v) for v in values]
            else:
                cells = _numbers(rng, n, 0.0, 5.0, integer)
        elif name == pipeline.data_config.sample_weight:
            cells = _numbers(rng, n, 1.0, 2.0, integer)
        elif field.input_type == DC.BOOL:
            cells = [str(v) for v in rng.integers(0, 2, n)]
        else:
            ordered = sorted(readers.get(name, []),
                             key=lambda fp: _PRECEDENCE.get(_feature_type(fp[0]), 9))
            for feature, position in ordered:
                cells = _feature_cells(feature, position, rng, n, integer, numeric,
                                       seq_lengths)
                if cells is not None:
                    break
        if cells is None:
            cells = (_numbers(rng, n, 0.0, 10.0, integer) if numeric
                     else [f"s{v}" for v in rng.integers(0, 20, n)])
        columns[name] = cells
    return columns


def write_csv(pipeline, path: str, n: int, seed: int = 0) -> None:
    """A CSV of n rows with the config's columns, separator and header setting."""
    data = pipeline.data_config
    columns = column_cells(pipeline, n, seed)
    separator = data.separator or ","
    with open(path, "w", encoding="utf-8") as f:
        if data.with_header:
            f.write(separator.join(columns) + "\n")
        for row in zip(*columns.values()):
            f.write(separator.join(row) + "\n")


def _typed(field, cells: list[str]) -> list:
    """Cells of one column as the Python values its input_type stores ("" stays missing)."""
    if field.input_type in (DC.INT32, DC.INT64, DC.BOOL):
        return [int(float(c)) if c != "" else None for c in cells]
    if field.input_type in (DC.FLOAT, DC.DOUBLE):
        return [float(c) if c != "" else None for c in cells]
    return cells


def write_tfrecord(pipeline, path: str, n: int, seed: int = 0) -> None:
    """n tf.train.Example records with the config's columns (one value per feature)."""
    import tensorflow as tf
    columns = column_cells(pipeline, n, seed)
    fields = {f.input_name: f for f in pipeline.data_config.input_fields}
    typed = {name: _typed(fields[name], cells) for name, cells in columns.items()}
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(n):
            feature = {}
            for name, values in typed.items():
                value = values[i]
                if value is None:
                    continue  # missing: the reader takes default_val
                if isinstance(value, int):
                    feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
                elif isinstance(value, float):
                    feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
                else:
                    feature[name] = tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def write_parquet(pipeline, path: str, n: int, seed: int = 0) -> None:
    """A Parquet file of n rows with the config's columns, typed by input_type."""
    import pandas as pd
    columns = column_cells(pipeline, n, seed)
    fields = {f.input_name: f for f in pipeline.data_config.input_fields}
    frame = pd.DataFrame({name: _typed(fields[name], cells) for name, cells in columns.items()})
    frame.to_parquet(path, index=False)


def _feature(value) -> "tf.train.Feature":
    """One typed value (None: missing) as a tf.train.Feature (empty when missing)."""
    import tensorflow as tf
    if value is None:
        return tf.train.Feature()
    if isinstance(value, int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    if isinstance(value, float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))


def write_batch_tfrecord(pipeline, path: str, n: int, seed: int = 0) -> None:
    """n rows as tf.train.SequenceExample records of n_data_batch_tfrecord rows each (10
    if unset; the last record holds the rest): one feature_list per column, one Feature
    per row (empty when the cell is missing)."""
    import tensorflow as tf
    columns = column_cells(pipeline, n, seed)
    fields = {f.input_name: f for f in pipeline.data_config.input_fields}
    typed = {name: _typed(fields[name], cells) for name, cells in columns.items()}
    per_record = int(pipeline.data_config.n_data_batch_tfrecord or 10)
    with tf.io.TFRecordWriter(path) as writer:
        for start in range(0, n, per_record):
            lists = {name: tf.train.FeatureList(feature=[
                _feature(v) for v in values[start:start + per_record]])
                for name, values in typed.items()}
            record = tf.train.SequenceExample(
                feature_lists=tf.train.FeatureLists(feature_list=lists))
            writer.write(record.SerializeToString())


def write_criteo_binary(pipeline, path: str, n: int, seed: int = 0) -> None:
    """n rows of EasyRec's binary Criteo files: path + "_category.bin", "_dense.bin" and
    "_label.bin" (mtrec/config/binary_input.py has the layout), the columns of the
    config's input_fields as column_cells generates them; columns it does not list are 0."""
    columns = column_cells(pipeline, n, seed)
    for kind, dtype, _, names in binary_input.LAYOUT:
        values = np.zeros((n, len(names)), dtype)
        for k, name in enumerate(names):
            if name in columns:
                values[:, k] = [float(c) if c != "" else 0.0 for c in columns[name]]
        values.tofile(f"{path}_{kind}.bin")


def criteo_parts(path: str) -> dict:
    """{kind: file} that write_criteo_binary(.., path, ..) wrote."""
    return {kind: f"{path}_{kind}.bin" for kind in binary_input.ROW_BYTES}


# The data each input_type reads: (file suffix, writer).
WRITERS = {DC.CSVInput: (".csv", write_csv), DC.TFRecordInput: (".tfrecord", write_tfrecord),
           DC.ParquetInput: (".parquet", write_parquet),
           DC.BatchTFRecordInput: (".tfrecord", write_batch_tfrecord),
           DC.CriteoInput: ("", write_criteo_binary)}


# ---------------------------------------------------------------------------
# Files a config names besides its data: stand-ins


def asset_paths(pipeline) -> list[str]:
    """The relative paths of export_config.asset_files (absolute ones are never written)."""
    return [a for a in pipeline.export_config.asset_files if a and not os.path.isabs(a)]


def write_stand_ins(paths, root: str) -> list[str]:
    """A small stand-in file at each relative path under root that is not there yet (a
    JSON object for .json); -> the files written. The samples name assets (e.g. RTP's
    fg.json) that are not part of EasyRec's sample directory."""
    written = []
    for relative in paths:
        target = os.path.normpath(os.path.join(root, relative))
        if not target.startswith(os.path.abspath(root) + os.sep) or os.path.exists(target):
            continue  # a path leaving root (../) is not written
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write('{"stand_in": "written by scripts/easyrec_status.py"}\n'
                    if target.endswith(".json") else
                    "stand-in written by scripts/easyrec_status.py\n")
        written.append(target)
    return written


@contextlib.contextmanager
def working_dir(path: str):
    """Run the block with `path` as the current directory."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


# ---------------------------------------------------------------------------
# Train and export, one subprocess per config


def train_sets(train_path: str, eval_path: str, steps: int, binary: bool = False) -> list[str]:
    """The --set overrides of a short run: only input paths and step/batch counts.
    binary: the paths are of binary Criteo files (binary_train_input / binary_eval_input,
    as criteo_parts names them)."""
    if binary:
        paths = [f"binary_{split}_input.{kind}_path={file}"
                 for split, base in (("train", train_path), ("eval", eval_path))
                 for kind, file in criteo_parts(base).items()]
    else:
        paths = [f"train_input_path={train_path}", f"eval_input_path={eval_path}"]
    return paths + [
        f"train_config.num_steps={steps}", f"train_config.save_checkpoints_steps={steps}",
        f"train_config.log_step_count_steps={steps}", "data_config.batch_size=32",
        "data_config.eval_batch_size=64"]


# ---------------------------------------------------------------------------
# PSStrategy: a local cluster


def free_ports(n: int) -> list[int]:
    """n TCP ports on 127.0.0.1 free at the moment."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ps_cluster(ports: list[int], workers: int = PS_WORKERS, ps: int = PS_TASKS) -> dict:
    """The TF_CONFIG of every task of a local PSStrategy cluster on 127.0.0.1: {(task
    type, index): TF_CONFIG text}, the chief on ports[0], then the workers, then the ps
    tasks."""
    if len(ports) != 1 + workers + ps:
        raise ValueError(f"{1 + workers + ps} ports needed, got {len(ports)}")
    hosts = [f"127.0.0.1:{p}" for p in ports]
    spec = {"chief": hosts[:1], "worker": hosts[1:1 + workers], "ps": hosts[1 + workers:]}
    return {(kind, i): json.dumps({"cluster": spec, "task": {"type": kind, "index": i}})
            for kind, members in spec.items() for i in range(len(members))}


def start_servers(tf_configs: dict, command: list[str], env: dict, cwd: str) -> list:
    """Start every worker and ps task (`mtrec train` with its TF_CONFIG, which serves until
    stopped); -> [(Popen, log file)]."""
    servers = []
    for (kind, index), tf_config in tf_configs.items():
        if kind == "chief":
            continue
        log = open(os.path.join(cwd, f"{kind}{index}.log"), "w")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=dict(env, TF_CONFIG=tf_config))
        servers.append((proc, log))
    return servers


def stop_servers(servers) -> None:
    """Stop the tasks start_servers started (by their process, one at a time)."""
    for proc, log in servers:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        log.close()


# Lines of TensorFlow's and autograph's messages that say where, not what.
_MARKERS = ("[[", "File ", "Detected at node", "Op:", "Stack trace")


def one_line(message: str) -> str:
    """The first line of an error message; when it only introduces what follows (ends with
    ':', as TensorFlow's "Graph execution error:"), with the last line that says what
    failed (not a node, stack or op marker)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        detail = next((line for line in reversed(lines[1:])
                       if not line.startswith(_MARKERS)), lines[1])
        first = f"{first} {detail}"
    return first


def error_detail(error: BaseException) -> str:
    """The last line that says what failed in a multi-line error message (of the error,
    else of its cause): what TensorFlow and autograph put after their stacks, and what a
    one-line description of the error can leave out."""
    for err in (error, error.__cause__ or error.__context__):
        lines = [line.strip() for line in str(err or "").splitlines() if line.strip()]
        lines = [line for line in lines[1:] if not line.startswith(_MARKERS)]
        if lines:
            return lines[-1]
    return ""


def _saved_models(pattern: str) -> list[str]:
    return [d for d in glob.glob(pattern) if os.path.isfile(os.path.join(d, "saved_model.pb"))]


def _child(argv) -> int:
    """In the subprocess: `mtrec train` (which exports the final model under
    model_dir/export/<exporter_type>/), then with --export_dir also `mtrec export` from the
    checkpoint, through the CLI's parser and dispatch; each failure worded by the CLI's
    boundary (describe). The last stdout line is a JSON result."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--export_dir")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args(argv)
    from mtrec import cli
    sets = [a for s in args.sets for a in ("--set", s)]
    step = "train"
    try:
        cli.run(["train", "--config", args.config, "--model_dir", args.model_dir] + sets)
        if not _saved_models(os.path.join(args.model_dir, "export", "*", "*")):
            raise RuntimeError(f"train left no saved_model.pb under {args.model_dir}/export")
        if args.export_dir:
            step = "export"
            cli.run(["export", "--config", args.config, "--model_dir", args.model_dir,
                     "--export_dir", args.export_dir] + sets)
            if not _saved_models(os.path.join(args.export_dir, "*")):
                raise RuntimeError(f"export wrote no saved_model.pb under {args.export_dir}")
        result = {"ok": True}
    except Exception as e:  # noqa: BLE001 - one line per failure, as the CLI prints it
        message = one_line(describe(e, step))
        detail = error_detail(e)
        if detail and detail not in message:
            message += f" [{detail}]"
        result = {"ok": False, "error": message if message.startswith(f"{step}:")
                  else f"{step}: {message}"}
    print(json.dumps(result), flush=True)
    return 0


def train_export(path: str, loaded, work_dir: str, steps: int = 5, timeout: float = 600,
                 rows: int = 200, separate_export: bool = False) -> tuple[str, str, float]:
    """Generate data for a checked config, train it (train exports the final model) and
    with separate_export also run `mtrec export`, in a subprocess:
    ("pass" | "fail" | "timeout", one-line error, seconds)."""
    work_dir, path = os.path.abspath(work_dir), os.path.abspath(path)
    os.makedirs(work_dir, exist_ok=True)
    pipeline = loaded.pipeline
    input_type = pipeline.data_config.input_type
    if input_type not in WRITERS:
        kind = DC.InputType.Name(input_type)
        return "fail", f"data: this script generates no {kind} data", 0.0
    suffix, write = WRITERS[input_type]
    train_path = os.path.join(work_dir, "train" + suffix)
    eval_path = os.path.join(work_dir, "eval" + suffix)
    write(pipeline, train_path, rows, seed=1)
    write(pipeline, eval_path, 64, seed=2)
    write_stand_ins(asset_paths(pipeline), work_dir)  # the subprocesses run in work_dir
    command = [sys.executable, os.path.abspath(__file__), "--child", "--config", path,
               "--model_dir", os.path.join(work_dir, "model")]
    if separate_export:
        command += ["--export_dir", os.path.join(work_dir, "export")]
    sets = train_sets(train_path, eval_path, steps, binary=input_type == DC.CriteoInput)
    for item in sets:
        command += ["--set", item]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    servers = []
    if pipeline.train_config.train_distribute == train_pb2.PSStrategy:
        # A local cluster: the worker and ps tasks serve until stopped, the chief trains.
        tf_configs = ps_cluster(free_ports(1 + PS_WORKERS + PS_TASKS))
        serve = [sys.executable, "-m", "mtrec", "train", "--config", path, "--model_dir",
                 os.path.join(work_dir, "server")] + [a for s in sets for a in ("--set", s)]
        servers = start_servers(tf_configs, serve, env, work_dir)
        env = dict(env, TF_CONFIG=tf_configs[("chief", 0)])
    start = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=work_dir)
    except subprocess.TimeoutExpired:
        return "timeout", f"no result after {timeout:g} s", time.time() - start
    finally:
        stop_servers(servers)
    seconds = time.time() - start
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            return ("pass", "", seconds) if result["ok"] else ("fail", result["error"], seconds)
    tail = [line for line in done.stderr.splitlines() if line.strip()]
    why = (f"killed by signal {-done.returncode}" if done.returncode < 0
           else f"exit code {done.returncode}")
    return "fail", f"crashed ({why}){': ' + tail[-1].strip() if tail else ''}", seconds


# ---------------------------------------------------------------------------
# The table


def check_row(path: str):
    """(a config's row with its check result, the LoadedConfig or None); a row to be
    trained has train "pending". A config naming relative export_config.asset_files is
    checked from a temporary directory holding stand-ins for them (write_stand_ins)."""
    name = os.path.basename(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    row = Row(name, family(name, text), model_class(text), "fail")
    try:
        assets = asset_paths(config_lib.parse_text(text, name))
    except Exception:  # noqa: BLE001 - check reports the parse error
        assets = []
    if assets:
        path = os.path.abspath(path)
        with tempfile.TemporaryDirectory(prefix="easyrec_assets_") as root, working_dir(root):
            write_stand_ins(assets, root)
            loaded, row.problems, row.first_problem = check(path)
    else:
        loaded, row.problems, row.first_problem = check(path)
    if loaded is None:
        row.every_problem = every_problem(path)
        return row, None
    row.check = "pass"
    if row.family in TRAINED_FAMILIES:
        row.train = "pending"
    return row, loaded


def train_row(row: Row, path: str, loaded, work_root: str | None = None, steps: int = 5,
              timeout: float = 600, separate_export: bool = False) -> Row:
    """Fill in train+export of a pending row, in a temporary directory under work_root."""
    if work_root:
        os.makedirs(work_root, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="easyrec_status_", dir=work_root) as work:
        row.train, row.train_error, row.seconds = train_export(
            path, loaded, work, steps=steps, timeout=timeout, separate_export=separate_export)
    return row


def status(path: str, train: bool = True, work_root: str | None = None, steps: int = 5,
           timeout: float = 600, separate_export: bool = False) -> Row:
    """One config's row: check, then (if it passes and its family is trained) train+export."""
    row, loaded = check_row(path)
    if row.train != "pending":
        return row
    if not train:
        row.train = "not run"
        return row
    return train_row(row, path, loaded, work_root, steps, timeout, separate_export)


_GENERIC_HINT = re.compile(r" mtrec does not support `\w+` here; remove it, or check the spelling "
                           r"against the schema in protos/mtrec/protos/\.")


def problem_key(problem: str) -> str:
    """A problem without its location, the quoted line and the generic hints, and with
    single-quoted names blanked, so the same cause in many configs counts once."""
    text = re.sub(r"^\S+?\.config(:\d+){0,2}:\s*", "", problem)
    text = re.sub(r"^'[^\n]*?': ", "", text)
    text = re.sub(r" Did you mean `\w+`\?", "", text)
    text = _GENERIC_HINT.sub("", text)
    # Names the user chose are blanked; the model and layer classes mtrec lacks are kept.
    return re.sub(r"(?<!model_class )(?<!class_name )'[^']*'", "'…'", text).strip()


def top_problems(rows, n: int = 15) -> list[tuple[str, int]]:
    """The n most common first problems (check, else train+export) and how many configs
    each blocks."""
    counts = collections.Counter(
        problem_key(row.first_problem) if row.check == "fail" else problem_key(row.train_error)
        for row in rows if row.check == "fail" or row.train in ("fail", "timeout"))
    return counts.most_common(n)


def top_blockers(rows, n: int = 25) -> list[tuple[str, int]]:
    """The n problems (every_problem, keyed as problem_key) found in the most configs."""
    counts = collections.Counter()
    for row in rows:
        counts.update({problem_key(p) for p in row.every_problem})
    return counts.most_common(n)


def _cell(text: str, limit: int = 220) -> str:
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _commit() -> str:
    """`git rev-parse --short HEAD`, and whether the checkout has uncommitted changes."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(rows, steps: int, trained: bool, seconds: float,
           separate_export: bool = False, jobs: int = 1) -> str:
    """docs/easyrec.md: header, summary per family, one row per config, top problems."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pending = sum(r.train == "pending" for r in rows)
    out = ["# EasyRec sample configs under mtrec, measured", "",
           f"Generated by `scripts/easyrec_status.py` on {date}, mtrec commit {_commit()}, "
           f"on {_machine()} (total {seconds / 60:.1f} min). Regenerate with:", "",
           "    python scripts/easyrec_status.py --samples "
           "/work/shared/easyrec/samples/model_config --out docs/easyrec.md", ""]
    if pending:
        out += [f"**Partial: train+export of {pending} configs still pending when this was "
                "written.**", ""]
    out += [
        "What was run, per config:",
        "- **check**: what `mtrec check` runs (parse, defaults, validation, memory "
        "estimate), no data read. `fail` shows the first problem (file:line and message, "
        "as the CLI prints it) and how many problems check listed (a parse error stops "
        "at the first, so it counts 1).",
        "- **train+export**: every config that passes check, except the match/recall "
        "family: generated data in the config's input_type (CSV, TFRecord, batch "
        "TFRecord of SequenceExamples, Parquet, or binary Criteo category/dense/label "
        "files) with its input_fields (tag/sequence cells split by the feature's "
        "separators, labels valid for their towers; 200 train rows, 64 eval rows), then "
        f"`mtrec train` for {steps} steps (batch 32), which evaluates and exports the "
        "final SavedModel (its saved_model.pb is checked)"
        + (", then `mtrec export` from the checkpoint" if separate_export else "")
        + "; only `--set` overrides of the input paths, step and batch counts; one "
        f"subprocess per config, {jobs} at a time. A PSStrategy config trains on a local "
        f"cluster on 127.0.0.1 (the chief, {PS_WORKERS} worker and {PS_TASKS} ps tasks, "
        "each an `mtrec train` process with its own TF_CONFIG). A file named by "
        "export_config.asset_files that is not in EasyRec's samples (e.g. "
        "samples/rtp_fg/fg.json) gets a small stand-in, written at that relative path "
        "under the directory check and train run from. "
        + ("" if trained else "**Not run in this table (--no-train).** ")
        + "`-`: not attempted (check failed or another family); a time is the wall time "
        "of the subprocess, on a machine shared with other jobs.",
        "- family: multi-task by file name (mmoe*, esmm*, ple*, dbmtl*, "
        "simple_multi_task*, aitm*, ppnet*) or model_class; match/recall by model_class "
        "(DSSM, MIND, MultiTowerRecall, DropoutNet, MatchModel, DAT, PDN, "
        "CoMetricLearningI2I); DIN/BST rank by file name din*/bst*, model_class "
        "MultiTowerDIN/MultiTowerBST, or a backbone block DIN/BST; everything else is "
        "other rank.", "", "## Summary", "",
        "| family | configs | check passes | train+export passes |", "|---|---|---|---|"]
    for fam in FAMILIES + ("all",):
        members = [r for r in rows if fam == "all" or r.family == fam]
        passed = sum(r.check == "pass" for r in members)
        if fam in TRAINED_FAMILIES or fam == "all":
            attempted = [r for r in members if r.train in ("pass", "fail", "timeout")]
            trained_cell = (f"{sum(r.train == 'pass' for r in members)} of {len(attempted)} "
                            "tried" if trained else "not run")
        else:
            trained_cell = "not tried"
        label = "**total**" if fam == "all" else fam
        out.append(f"| {label} | {len(members)} | {passed} | {trained_cell} |")
    out += ["", "## Most common first problems", "",
            "Each config counted once, by its first problem (check's, else train+export's); "
            "quoted names (features, groups, blocks) blanked as '…'.", "",
            "| configs | first problem |", "|---|---|"]
    for key, count in top_problems(rows):
        out.append(f"| {count} | {_cell(key, 300)} |")
    out += ["", "## What blocks the most configs (every problem, not only the first)", "",
            "The parser stops at the first unknown field, so for each config that fails "
            "check, each unknown field or enum value is blanked out in memory and the text "
            "parsed again, then validated; a config counts once per problem. A blanked block "
            "can cause a follow-on problem (e.g. an unknown model block leaves its "
            "model_class unknown).", "", "| configs | problem |", "|---|---|"]
    for key, count in top_blockers(rows):
        out.append(f"| {count} | {_cell(key, 300)} |")
    out += ["", "## Every config", "",
            "| config | family | model_class | check | train+export | first problem |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        check_cell = "pass" if r.check == "pass" else f"fail ({r.problems})"
        train_cell = f"{r.train} ({r.seconds:.0f} s)" if r.train in ("pass", "fail",
                                                                        "timeout") else r.train
        problem = _GENERIC_HINT.sub("", r.first_problem if r.check == "fail"
                                    else r.train_error)
        out.append(f"| {r.name} | {r.family} | {r.model_class or '?'} | {check_cell} | "
                   f"{train_cell} | {_cell(problem)} |")
    return "\n".join(out) + "\n"


def configs(samples: str, only: str | None = None) -> list[str]:
    paths = sorted(glob.glob(os.path.join(samples, "*.config")))
    return [p for p in paths if not only or fnmatch.fnmatch(os.path.basename(p), only)]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default=DEFAULT_SAMPLES,
                        help="directory of EasyRec's samples/model_config")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "easyrec.md"))
    parser.add_argument("--only", help="only configs whose file name matches this glob")
    parser.add_argument("--no-train", dest="train", action="store_false",
                        help="check only; do not train and export")
    parser.add_argument("--steps", type=int, default=5, help="training steps per config")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds one train+export subprocess may take")
    parser.add_argument("--separate_export", action="store_true",
                        help="after train (which exports the final model), also run "
                        "`mtrec export` from the checkpoint")
    parser.add_argument("--work_dir", help="where temporary model dirs go (default: $TMPDIR)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="configs trained at once (each in its own subprocess)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    paths = configs(args.samples, args.only)
    if not paths:
        parser.error(f"no *.config in {args.samples}" + (f" matching {args.only!r}"
                                                         if args.only else ""))
    start = time.time()
    checked = [check_row(path) for path in paths]
    rows = [row for row, _ in checked]
    if not args.train:
        for row in rows:
            row.train = "not run" if row.train == "pending" else row.train

    def write():  # after every trained config, so a stopped run leaves a (partial) table
        text = render(rows, args.steps, args.train, time.time() - start, args.separate_export,
                      args.jobs)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)

    write()
    pending = [(path, row, loaded) for path, (row, loaded) in zip(paths, checked)
               if row.train == "pending"]
    lock = threading.Lock()

    def train_one(item):
        path, row, loaded = item
        train_row(row, path, loaded, args.work_dir, args.steps, args.timeout,
                  args.separate_export)
        with lock:
            print(f"{row.name}: train+export {row.train} ({row.seconds:.0f} s) "
                  f"{row.train_error}", file=sys.stderr, flush=True)
            write()

    # Each config trains in its own subprocess; --jobs of them run at once.
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(train_one, pending))
    print(f"wrote {args.out}: {len(rows)} configs, "
          f"{sum(r.check == 'pass' for r in rows)} pass check, "
          f"{sum(r.train == 'pass' for r in rows)} pass train+export")
    print("most common first problems:")
    for key, count in top_problems(rows):
        print(f"{count:4d}  {key}")
    print("problems found in the most configs (every problem):")
    for key, count in top_blockers(rows):
        print(f"{count:4d}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
