"""EasyRec's binary Criteo input (input_type: CriteoInput): the file layout, and the files of
binary_train_input / binary_eval_input as parts (a category, a dense and a label file
holding the same rows). Free of TensorFlow, so that `mtrec check` can look at the files;
mtrec/data/criteo_binary.py reads them.

Per row, each in its own file, little-endian with no header: one int32 label (4 bytes),
13 float32 dense values (52 bytes), 26 uint32 category ids (104 bytes). The columns are
named as EasyRec names them: label, f1..f13 (dense), c1..c26 (category).
"""
import os

from mtrec.config.paths import expand

# (kind, numpy dtype of one value, values per row, column names), in part order.
LAYOUT = (("category", "<u4", 26, tuple(f"c{i}" for i in range(1, 27))),
          ("dense", "<f4", 13, tuple(f"f{i}" for i in range(1, 14))),
          ("label", "<i4", 1, ("label",)))
# Bytes per row of each kind of file.
ROW_BYTES = {kind: 4 * width for kind, _, width, _ in LAYOUT}
# Every column the files hold.
COLUMNS = tuple(name for *_, names in LAYOUT for name in names)
# The pipeline fields of the two splits.
FIELDS = {"train": "binary_train_input", "eval": "binary_eval_input"}


class Part(str):
    """One part of a binary input: its category, dense and label files (which hold the same
    rows). As a string (in messages and lists of input files), the three paths joined by
    " + "."""

    def __new__(cls, category: str, dense: str, label: str):
        part = super().__new__(cls, f"{category} + {dense} + {label}")
        part.category, part.dense, part.label = category, dense, label
        return part

    def files(self) -> dict:
        """{kind: path}."""
        return {"category": self.category, "dense": self.dense, "label": self.label}


def expand_parts(binary_input, what: str) -> tuple[list[Part], str | None]:
    """(the parts of a BinaryDataInput, why there are none or the lists do not match, or
    None). Each entry of each list is expanded (a file, directory or glob, sorted); the
    i-th entries of the three lists must expand to the same number of files."""
    lists = {kind: list(getattr(binary_input, f"{kind}_path")) for kind in ROW_BYTES}
    counts = {kind: len(paths) for kind, paths in lists.items()}
    if not any(counts.values()):
        return [], f"{what} names no files: give category_path, dense_path and label_path."
    if len(set(counts.values())) > 1:
        return [], (f"{what} has {counts['category']} category_path, {counts['dense']} "
                    f"dense_path and {counts['label']} label_path entries; give one of each "
                    "per part of the data.")
    parts = []
    for entry in range(counts["label"]):
        matched = {}
        for kind, paths in lists.items():
            files, why = expand(paths[entry], f"{what}.{kind}_path")
            if why:
                return [], why
            matched[kind] = files
        sizes = {kind: len(files) for kind, files in matched.items()}
        if len(set(sizes.values())) > 1:
            return [], (f"{what}: {', '.join(repr(lists[k][entry]) for k in lists)} match "
                        f"{sizes['category']}, {sizes['dense']} and {sizes['label']} files; "
                        "each category file needs its dense and label file (sorted by name).")
        parts += [Part(*files) for files in zip(*matched.values())]
    return parts, None


def part_rows(part: Part) -> tuple[int, str | None]:
    """(rows of one part, why its files are not a readable part, or None): every file must
    exist, be a whole number of rows long, and the three must hold the same rows."""
    rows = {}
    for kind, path in part.files().items():
        try:
            size = os.path.getsize(path)
        except OSError as e:
            return 0, f"{path}: cannot be read ({e.strerror or e})."
        if size % ROW_BYTES[kind]:
            return 0, (f"{path}: {size} bytes is not a whole number of rows: a {kind} file "
                       f"holds {ROW_BYTES[kind]} bytes per row ({_row_text(kind)}); the file "
                       "is truncated or not a binary Criteo " + kind + " file.")
        rows[kind] = size // ROW_BYTES[kind]
    if len(set(rows.values())) > 1:
        return 0, (f"{part.category}, {part.dense} and {part.label} hold {rows['category']}, "
                   f"{rows['dense']} and {rows['label']} rows; the files of one part must "
                   "hold the same rows.")
    return rows["label"], None


def _row_text(kind: str) -> str:
    _, dtype, width, _ = next(entry for entry in LAYOUT if entry[0] == kind)
    name = {"<u4": "uint32", "<f4": "float32", "<i4": "int32"}[dtype]
    return f"{width} little-endian {name}" + (" values" if width > 1 else "")
