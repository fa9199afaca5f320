"""How big the model a config describes is, without TensorFlow or building anything: the
embedding tables, the dense parameters (counted by multiplying, e.g. num_expert copies of
an expert DNN), and the peak memory of training, checked against the memory available.

  Part                  one network of the model and how many copies of it are built
  dnn_part              a DNN / MLP message reading `width` features -> Part
  peak_training_bytes   the estimate of training's peak memory (a pure function)
  available_memory      MemAvailable from /proc/meminfo, else physical memory
  DenseSizes            a model's Parts and input width, from check_model
  check_sizes           config validation's step: absurd sizes, then the memory estimate
"""
import dataclasses
import os

from mtrec.config.source import Problems

# Bytes of a float32 parameter.
FLOAT = 4
# Beyond these a model is not a recommendation model but a typo: a model with more dense
# parameters would hold over 8 GiB of dense float32 weights; more layers take minutes to
# build (1,000,000 experts kept `mtrec check` busy for over 5 minutes).
MAX_DENSE_PARAMETERS = 2 ** 31
MAX_LAYERS = 10_000
# Floats per example entering the model (the DEEP groups concatenated): 1,000 features
# of width 64 are 64,000.
MAX_INPUT_WIDTH = 2 ** 20
# What the memory estimate adds and keeps free: TensorFlow's own runtime, and a share of
# the available memory for everything the estimate does not count.
RUNTIME_BYTES = 512 * 2 ** 20
MEMORY_MARGIN = 0.10
# Slot variables each optimizer keeps per parameter (as mtrec.training.optimizers builds).
OPTIMIZER_SLOTS = {"adam_optimizer": 2, "adamw_optimizer": 2, "lazy_adam_optimizer": 2,
                   "adagrad_optimizer": 1, "momentum_optimizer": 1, "rms_prop_optimizer": 2,
                   "ftrl_optimizer": 2}
# The optimizer train_config uses when it names none (adam).
DEFAULT_SLOTS = 2


@dataclasses.dataclass(frozen=True)
class Part:
    """One network of a model: `copies` of a net with `params` parameters in `layers` Dense
    layers and `units` outputs per example (kept for the backward pass).

    count / width: (field, value) of the config entry that sets the number of copies /
    the widest layer, for Problems.error."""
    name: str
    copies: int
    params: int
    layers: int
    units: int
    count: tuple | None = None
    width: tuple | None = None

    @property
    def total(self) -> int:
        return self.copies * self.params


@dataclasses.dataclass
class DenseSizes:
    """The dense side of a model, from config validation (check_model)."""
    parts: list            # [Part]
    input_width: int       # floats per example of the DEEP groups together
    widest: tuple | None   # (feature, its width, (field, value)) of the widest DEEP feature


def dnn_part(name: str, net, width: int, copies: int = 1, count: tuple | None = None) -> Part:
    """A DNN or MLP message (hidden_units, use_bn; or a model block's own hidden_units)
    reading `width` features, built `copies` times: each layer has a kernel, a bias and,
    with batch norm, four per unit."""
    units = list(net.hidden_units)
    norm = getattr(net, "use_bn", False)
    params, previous = 0, width
    for u in units:
        params += previous * u + u + (4 * u if norm else 0)
        previous = u
    widest = ("hidden_units", str(max(units))) if units else None
    return Part(name, copies, params, len(units), sum(units), count, widest)


def dense_layer_part(name: str, width: int, units: int, copies: int = 1,
                     count: tuple | None = None, field: tuple | None = None) -> Part:
    """One Dense layer (kernel and bias) from `width` to `units`."""
    return Part(name, copies, width * units + units, 1, units, count, field)


def peak_training_bytes(table_floats: int, dense_floats: int, table_slots: int,
                        dense_slots: int, batch_size: int, floats_per_example: int) -> int:
    """Estimated peak memory of training, in bytes:

      state        tables and dense weights, each with its optimizer's slots
      checkpoint   a second copy of the state while a checkpoint is serialised
      gradients    one per dense weight (embedding gradients are per batch row)
      activations  floats_per_example per row, kept for the backward pass and their
                   gradients: 2 x batch_size x floats_per_example
      runtime      RUNTIME_BYTES for TensorFlow itself
    """
    state = table_floats * (1 + table_slots) + dense_floats * (1 + dense_slots)
    floats = 2 * state + dense_floats + 2 * batch_size * floats_per_example
    return FLOAT * floats + RUNTIME_BYTES


def available_memory(meminfo: str = "/proc/meminfo") -> tuple[int, str]:
    """(bytes, what they are): MemAvailable (free memory plus caches the kernel can drop),
    or this machine's physical memory where that is unknown; (0, "") if neither is."""
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available (MemAvailable)"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical"
    except (ValueError, OSError, AttributeError):
        return 0, ""


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2 ** 30:.1f} GiB"


def _slots(optimizer) -> int:
    return OPTIMIZER_SLOTS.get(optimizer.WhichOneof("optimizer"), DEFAULT_SLOTS)


def check_sizes(pipeline, tables: dict, dense: "DenseSizes", p: Problems,
                skip_memory_check: bool = False) -> None:
    """Absurd dense sizes (always), then training's estimated peak memory against the
    memory available (unless skip_memory_check).

    tables: {table name: (floats, feature name, (field, value) that sets its rows)}."""
    parts = dense.parts
    total = sum(part.total for part in parts)
    layers = sum(part.copies * part.layers for part in parts)
    if dense.input_width > MAX_INPUT_WIDTH and dense.widest is not None:
        name, width, field = dense.widest
        p.error(f"the DEEP feature groups give {dense.input_width:,} floats per example, more "
                f"than the {MAX_INPUT_WIDTH:,} mtrec builds a model on; the widest feature is "
                f"{name!r} ({width:,}). Lower its {field[0]}.", *field)
    elif layers > MAX_LAYERS:
        part = max(parts, key=lambda q: q.copies * q.layers)
        field = part.count if part.copies > 1 and part.count else part.width
        p.error(f"the model would build {layers:,} dense layers (the most in {part.name}: "
                f"{part.copies:,} x {part.layers}), more than the {MAX_LAYERS:,} mtrec builds. "
                f"Lower its {(field or ('size',))[0]}.", *(field or ()))
    elif total > MAX_DENSE_PARAMETERS:
        part = max(parts, key=lambda q: q.total)
        field = part.width if part.params > MAX_DENSE_PARAMETERS or not part.count else \
            part.count
        p.error(f"the model would have {total:,} dense parameters ({_gib(FLOAT * total)} of "
                f"float32), more than the {MAX_DENSE_PARAMETERS:,} mtrec builds; the largest "
                f"part is {part.name} ({part.copies:,} x {part.params:,}). Lower its "
                f"{(field or ('size',))[0]}.", *(field or ()))
    else:
        if not skip_memory_check:  # (an absurd size makes the estimate meaningless)
            _check_memory(pipeline, tables, dense, total, p)


def _check_memory(pipeline, tables: dict, dense: "DenseSizes", total: int,
                  p: Problems) -> None:
    """Training's estimated peak memory (peak_training_bytes) fits in the memory available,
    less MEMORY_MARGIN; the error names the estimate's parts and the largest one's field."""
    memory, kind = available_memory()
    if not memory:
        return
    parts = dense.parts
    train = pipeline.train_config
    optimizers = list(train.optimizer_config)
    dense_slots = _slots(optimizers[0]) if optimizers else DEFAULT_SLOTS
    table_slots = _slots(optimizers[-1]) if optimizers else DEFAULT_SLOTS
    data = pipeline.data_config
    per_example = dense.input_width + sum(part.copies * part.units for part in parts)
    table_floats = sum(size for size, _, _ in tables.values())
    # Training and evaluation (which may run in the same process) each have a batch size.
    batch = max(data.batch_size, data.eval_batch_size)
    need = peak_training_bytes(table_floats, total, table_slots, dense_slots, batch,
                               per_example)
    allowed = memory * (1 - MEMORY_MARGIN)
    if need <= allowed:
        return
    state = table_floats * (1 + table_slots) + total * (1 + dense_slots)
    shares = {"tables": FLOAT * table_floats * (1 + table_slots),
              "dense": FLOAT * total * (2 + dense_slots),
              "activations": FLOAT * 2 * batch * per_example}
    detail = (f"embedding tables {_gib(FLOAT * table_floats)} and their {table_slots} "
              f"optimizer slot(s) {_gib(FLOAT * table_floats * table_slots)}, dense weights "
              f"with slots and gradients {_gib(shares['dense'])}, a checkpoint's copy of "
              f"both {_gib(FLOAT * state)}, activations at batch size {batch:,} (the larger "
              f"of batch_size and eval_batch_size) {_gib(shares['activations'])}, "
              f"TensorFlow {_gib(RUNTIME_BYTES)}")
    largest = max(shares, key=shares.get)
    if largest == "tables" and tables:
        size, name, field = max(tables.values(), key=lambda t: t[0])
        fix = (f"the largest table is {name!r} ({size:,} floats); lower its {field[0]} or "
               "embedding_dim")
    elif largest == "dense" and parts:
        part = max(parts, key=lambda q: q.total)
        field = (part.count if part.copies > 1 and part.count else part.width) or ()
        fix = (f"the largest dense part is {part.name} ({part.copies:,} x {part.params:,} "
               f"parameters); lower its {(field or ('size',))[0]}")
    else:
        field = ("batch_size",)
        fix = "lower data_config.batch_size and eval_batch_size"
    p.error(f"training would need ~{_gib(need)} at its peak ({detail}), more than this "
            f"machine's {_gib(memory)} of {kind} memory less a {MEMORY_MARGIN:.0%} margin "
            f"({_gib(allowed)}); {fix}. If you know it fits, pass --skip_memory_check.",
            *field)
