"""Specs: the structure and widths of the values flowing between backbone blocks, without
TensorFlow (config validation and the Keras layer share them).

A spec describes a value:
  Tensor((d,))       a (batch, d) tensor; Tensor((n, d)) a (batch, n, d) tensor;
                     a None in the shape means unknown;
  [spec, ...]        a Python list (a layer with several outputs, or a list input);
  None               unknown (an earlier error): nothing downstream is checked.

The checks here raise ValueError with what the caller needs; shape rules
(mtrec.backbone.shapes) use them to say what a layer takes.
"""
import dataclasses
import re
from typing import Any


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A tensor (batch, *shape)."""
    shape: tuple

    @property
    def width(self):
        return self.shape[-1] if self.shape else None

    def __str__(self):
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"a (batch, {dims}) tensor"


def describe(spec) -> str:
    """Human text for a spec in error messages."""
    if spec is None:
        return "an unknown value"
    if isinstance(spec, Tensor):
        return str(spec)
    inner = ", ".join(short(s) for s in spec[:6]) + (", ..." if len(spec) > 6 else "")
    return f"a list of {len(spec)} [{inner}]"


def short(spec) -> str:
    """(batch, ...) of a tensor spec for listing several specs."""
    if isinstance(spec, Tensor):
        return "(batch, " + ", ".join("?" if d is None else str(d) for d in spec.shape) + ")"
    return "list" if spec is not None else "?"


def is_list(spec) -> bool:
    return isinstance(spec, list)


def one_tensor(spec, what: str, rank: int | None = 2) -> Tensor:
    """spec must be a tensor (of `rank` including the batch axis); ValueError otherwise."""
    if not isinstance(spec, Tensor):
        raise ValueError(f"{what} takes one tensor, got {describe(spec)}; merge the inputs "
                         "into one tensor (no merge_inputs_into_list, an input_layer "
                         "without only_output_feature_list) or pick one with input_slice.")
    if rank is not None and len(spec.shape) + 1 != rank:
        raise ValueError(f"{what} takes a {rank}D (batch, d) tensor, got {describe(spec)}.")
    return spec


def tensor_list(spec, what: str, min_len: int = 1) -> list[Tensor]:
    """spec must be a list of 2D tensors."""
    if not is_list(spec) or any(not isinstance(s, Tensor) or len(s.shape) != 1 for s in spec):
        raise ValueError(f"{what} takes a list of (batch, d) tensors, got {describe(spec)}; "
                         "e.g. an input_layer with only_output_feature_list: true, or several "
                         "inputs with merge_inputs_into_list: true.")
    if len(spec) < min_len:
        raise ValueError(f"{what} takes at least {min_len} tensors, got {len(spec)}.")
    return spec


def fields_shape(spec, what: str) -> tuple[int, Any]:
    """A list of equal-width 2D tensors or a (batch, n, d) tensor -> (n, d)."""
    if isinstance(spec, Tensor) and len(spec.shape) == 2:
        return spec.shape
    items = tensor_list(spec, what)
    widths = {s.width for s in items if s.width is not None}
    if len(widths) > 1:
        raise ValueError(f"{what} needs embeddings of one width, got widths {sorted(widths)}.")
    return len(items), (widths.pop() if widths else None)


def total(widths):
    """Sum of widths; None if any is unknown."""
    return None if any(w is None for w in widths) else sum(widths)


# ---------------------------------------------------------------------------
# Merging, slicing

def concat_specs(specs: list, axis: int, what: str) -> Tensor:
    """Concatenated tensors' spec; ValueError if ranks or the other dims differ."""
    ranks = {len(s.shape) for s in specs}
    if len(ranks) > 1:
        raise ValueError(f"{what}: cannot concatenate tensors of different ranks: "
                         f"{', '.join(short(s) for s in specs)}.")
    rank = ranks.pop()
    ax = axis if axis >= 0 else rank + 1 + axis  # axis counts the batch axis
    if not 1 <= ax <= rank:
        raise ValueError(f"{what}: concat axis {axis} is out of range for "
                         f"{short(specs[0])} tensors.")
    i = ax - 1
    for j in range(rank):
        if j != i and len({s.shape[j] for s in specs if s.shape[j] is not None}) > 1:
            raise ValueError(f"{what}: cannot concatenate "
                             f"{', '.join(short(s) for s in specs)} along axis {axis}.")
    shape = list(specs[0].shape)
    shape[i] = total([s.shape[i] for s in specs])
    return Tensor(tuple(shape))


def merge_specs(specs: list, axis: int, into_list: bool, what: str):
    """A block's inputs -> its input: one as is; with a list among them one joined list;
    tensors concatenated along `axis`; or the list of inputs with merge_inputs_into_list."""
    if into_list:
        return list(specs)
    if any(s is None for s in specs):
        return None
    if len(specs) == 1:
        return specs[0]
    if any(is_list(s) for s in specs):
        return [item for s in specs for item in (s if is_list(s) else [s])]
    return concat_specs(specs, axis, what)


_INDEX = re.compile(r"^\[\s*(-?\d+)\s*\]$")
_RANGE = re.compile(r"^\[\s*(-?\d*)\s*:\s*(-?\d*)\s*\]$")


def parse_slice(text: str):
    """input_slice "[i]" -> int i; "[a:b]" -> slice(a, b). ValueError otherwise (nothing is
    evaluated)."""
    text = text.strip()
    match = _INDEX.match(text)
    if match:
        return int(match.group(1))
    match = _RANGE.match(text)
    if match:
        start, stop = (int(g) if g else None for g in match.groups())
        return slice(start, stop)
    raise ValueError(f"input_slice {text!r} is not supported; use \"[i]\" or \"[a:b]\" "
                     "(integers).")


def slice_spec(spec, text: str):
    """The spec an input_slice picks from a list spec; ValueError if it cannot."""
    index = parse_slice(text)
    if spec is None:
        return None
    if not is_list(spec):
        raise ValueError(f"input_slice {text} needs a list input, got {describe(spec)} (e.g. an "
                         "input_layer with output_2d_tensor_and_feature_list, or a layer with "
                         "several outputs).")
    if isinstance(index, int):
        if not -len(spec) <= index < len(spec):
            raise ValueError(f"input_slice {text} is out of range for {describe(spec)}.")
        return spec[index]
    return spec[index]

