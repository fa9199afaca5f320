"""Validation of train_config: optimizers, distribution strategy, step counts."""
import datetime
import math
import re

from mtrec.config.source import Problems
from mtrec.protos import train_pb2

_STRATEGY = train_pb2.DistributionStrategy

# train_distribute values mtrec runs (EasyRec's CollectiveAllReduceStrategy is
# MultiWorkerMirroredStrategy under its older name).
SUPPORTED_STRATEGIES = (_STRATEGY.NoStrategy, _STRATEGY.MirroredStrategy,
                        _STRATEGY.CollectiveAllReduceStrategy,
                        _STRATEGY.MultiWorkerMirroredStrategy, _STRATEGY.PSStrategy)


def unsupported_strategy(name: str) -> str:
    """The error of a train_distribute mtrec does not run, listing those it does."""
    why = {"ExascaleStrategy": " (a PAI-only strategy)",
           "HorovodStrategy": " (MultiWorkerMirroredStrategy gives the same collective "
                              "all-reduce without Horovod)"}.get(name, "")
    return (f"train_distribute: {name} is not supported{why}; use one of NoStrategy, "
            "MirroredStrategy (local GPUs), MultiWorkerMirroredStrategy (workers from "
            "TF_CONFIG; EasyRec's CollectiveAllReduceStrategy is the same), PSStrategy "
            "(parameter servers from TF_CONFIG).")


def check_learning_rate(kind: str, rate, p: Problems) -> None:
    """The settings of one optimizer's learning-rate schedule (EasyRec's checks and the
    fields EasyRec requires)."""
    schedule = rate.WhichOneof("learning_rate")
    c = getattr(rate, schedule) if schedule else None
    if schedule == "exponential_decay_learning_rate":
        if c.min_learning_rate > c.initial_learning_rate:
            p.error(f"{kind}: min_learning_rate {c.min_learning_rate:.7g} is above "
                    f"initial_learning_rate {c.initial_learning_rate:.7g}, so the rate "
                    "would never decay from it; use a min_learning_rate below the initial "
                    "rate.", "min_learning_rate", float(c.min_learning_rate))
        if c.decay_steps == 0:
            p.error(f"{kind}: decay_steps must be at least 1.", "decay_steps")
    elif schedule == "cosine_decay_learning_rate":
        if c.warmup_learning_rate > c.learning_rate_base:
            p.error(f"{kind}: warmup_learning_rate {c.warmup_learning_rate:.7g} is above "
                    f"learning_rate_base {c.learning_rate_base:.7g}; the warm-up rises to the "
                    "base rate.", "warmup_learning_rate", float(c.warmup_learning_rate))
        if c.total_steps < c.warmup_steps + c.hold_base_rate_steps:
            p.error(f"{kind}: total_steps {c.total_steps} is below warmup_steps + "
                    f"hold_base_rate_steps ({c.warmup_steps + c.hold_base_rate_steps}).",
                    "total_steps", c.total_steps)
    elif schedule == "manual_step_learning_rate":
        steps = [e.step for e in c.schedule]
        if not steps:
            p.error(f"{kind}: manual_step_learning_rate needs at least one schedule "
                    "{ step: N learning_rate: R }.", "manual_step_learning_rate")
        elif steps[0] == 0 or any(b <= a for a, b in zip(steps, steps[1:])):
            p.error(f"{kind}: manual_step_learning_rate schedule steps must be above 0 and "
                    f"strictly increasing, got {steps}.", "schedule")
    elif schedule == "poly_decay_learning_rate":
        missing = [f for f in ("learning_rate_base", "total_steps", "power") if not c.HasField(f)]
        if missing:
            p.error(f"{kind}: poly_decay_learning_rate needs {', '.join(missing)}.",
                    "poly_decay_learning_rate")
        elif c.total_steps <= 0:
            p.error(f"{kind}: poly_decay_learning_rate total_steps must be at least 1.",
                    "total_steps", c.total_steps)
        elif not (math.isfinite(c.power) and c.power >= 0):
            p.error(f"{kind}: poly_decay_learning_rate power must be a finite number >= 0.",
                    "power")
        elif not (math.isfinite(c.end_learning_rate) and c.end_learning_rate >= 0):
            p.error(f"{kind}: poly_decay_learning_rate end_learning_rate must be a finite "
                    "number >= 0.", "end_learning_rate")
    elif schedule == "transformer_learning_rate":
        missing = [f for f in ("learning_rate_base", "hidden_size", "warmup_steps")
                   if not c.HasField(f)]
        if missing:
            p.error(f"{kind}: transformer_learning_rate needs {', '.join(missing)}.",
                    "transformer_learning_rate")
        elif c.hidden_size <= 0 or c.warmup_steps <= 0 or not c.step_scaling_rate > 0:
            p.error(f"{kind}: transformer_learning_rate hidden_size, warmup_steps and "
                    "step_scaling_rate must be positive.", "transformer_learning_rate")


def check_optimizer_params(optimizer, p: Problems) -> None:
    """rms_prop_optimizer and ftrl_optimizer settings Keras' optimizers accept (momentum
    and initial_accumulator_value are check_values' rules)."""
    kind = optimizer.WhichOneof("optimizer")
    if kind == "rms_prop_optimizer":
        c = optimizer.rms_prop_optimizer
        if not 0 <= c.decay < 1:
            p.error(f"rms_prop_optimizer: decay must be in [0, 1), got {c.decay:.7g}.", "decay",
                    float(c.decay))
        if not (c.epsilon > 0 and math.isfinite(c.epsilon)):
            p.error(f"rms_prop_optimizer: epsilon must be above 0, got {c.epsilon:.7g} (a row "
                    "with a zero gradient would divide 0 by 0).", "epsilon", float(c.epsilon))
    elif kind == "ftrl_optimizer":
        c = optimizer.ftrl_optimizer
        if not c.learning_rate_power <= 0:
            p.error("ftrl_optimizer: learning_rate_power must be at most 0, got "
                    f"{c.learning_rate_power:.7g}.", "learning_rate_power",
                    float(c.learning_rate_power))
        # (initial_accumulator_value: check_values)
        for name in ("l1_reg", "l2_reg", "l2_shrinkage_reg"):
            value = getattr(c, name)
            if not (value >= 0 and math.isfinite(value)):
                p.error(f"ftrl_optimizer: {name} must be at least 0, got {value:.7g}.", name,
                        float(value))


def check_embedding_multiplier(train, p: Problems) -> None:
    """embedding_learning_rate_multiplier: on the one optimizer_config (EasyRec reads it
    from the first); with a second entry, that entry's learning rate is the embeddings'."""
    field = "embedding_learning_rate_multiplier"
    nth = 0
    for optimizer in train.optimizer_config:
        if not optimizer.HasField(field):
            continue
        nth += 1
        value = optimizer.embedding_learning_rate_multiplier
        if len(train.optimizer_config) > 1:
            p.error(f"{field} with two optimizer_config entries: the second entry already "
                    "sets the embedding tables' learning rate; remove the multiplier and set "
                    "that entry's learning_rate instead.", field, nth=nth)
        elif not (value > 0 and math.isfinite(value)):
            p.error(f"{field} must be above 0, got {value:.7g}.", field, float(value))


def check_mixed_precision(train, p: Problems) -> None:
    """mixed_precision: "", "bf16" or "fp16"; fp16's loss scaling runs on one device."""
    value = train.mixed_precision
    if value not in ("", "bf16", "fp16"):
        p.error(f"mixed_precision must be \"bf16\", \"fp16\" or empty (float32), got "
                f"{value!r}.", "mixed_precision")
    elif value == "fp16" and train.train_distribute != _STRATEGY.Value("NoStrategy"):
        p.error("mixed_precision: \"fp16\" (with loss scaling) runs without a "
                "train_distribute strategy only; use \"bf16\", which needs no loss scaling, "
                f"with {_STRATEGY.Name(train.train_distribute)}.", "mixed_precision")


def dead_line_seconds(text: str) -> float | None:
    """train_config.dead_line as Unix seconds: "YYYYmmdd HH:MM:SS" in local time, or 10
    digits of Unix seconds (EasyRec's two formats); None if it is neither."""
    if re.fullmatch(r"\d{10}", text):
        return float(text)
    try:
        return datetime.datetime.strptime(text, "%Y%m%d %H:%M:%S").timestamp()
    except ValueError:
        return None


def check_stops(train, p: Problems) -> None:
    """freeze_gradient patterns and dead_line."""
    for pattern in train.freeze_gradient:
        try:
            re.compile(pattern)
        except re.error as e:
            p.error(f"freeze_gradient {pattern!r} is not a regular expression ({e}).",
                    "freeze_gradient")
    if train.HasField("dead_line") and dead_line_seconds(train.dead_line) is None:
        p.error(f"dead_line {train.dead_line!r} is not a time: write \"YYYYmmdd HH:MM:SS\" "
                "(local time, e.g. \"20220508 23:59:59\") or 10 digits of Unix seconds.",
                "dead_line")


def check_train(pipeline, p: Problems) -> None:
    """Optimizers, train_distribute, and steps that let training end and checkpoint."""
    train = pipeline.train_config
    for optimizer in train.optimizer_config:
        if optimizer.WhichOneof("optimizer") is None:
            p.error("optimizer_config has no optimizer (adam_optimizer, lazy_adam_optimizer, "
                    "adagrad_optimizer, adamw_optimizer, momentum_optimizer, "
                    "momentumw_optimizer, rms_prop_optimizer or ftrl_optimizer).",
                    "optimizer_config")
        if optimizer.use_moving_average:
            p.error("use_moving_average: true is not supported by mtrec yet; set it to false.",
                    "use_moving_average")
        kind = optimizer.WhichOneof("optimizer")
        if kind:
            check_learning_rate(kind, getattr(optimizer, kind).learning_rate, p)
        check_optimizer_params(optimizer, p)
        lazy = optimizer.lazy_adam_optimizer
        if lazy.HasField("dense_moments") and lazy.dense_moments:
            p.error("lazy_adam_optimizer cannot have dense_moments: true (lazy is the "
                    "opposite); adam_optimizer keeps dense moments by default.", "dense_moments")
    if len(train.optimizer_config) > 2:
        p.error("train_config takes at most two optimizer_config entries (dense, embedding).",
                "optimizer_config")
    check_embedding_multiplier(train, p)
    if train.HasField("incr_save_config"):
        p.error("incr_save_config (EasyRec's incremental saving of updated weights for online "
                "serving) is not supported; remove it: mtrec writes checkpoints "
                "(save_checkpoints_steps / save_checkpoints_secs) and SavedModels "
                "(export_config.exporter_type latest exports after every evaluation).",
                "incr_save_config")
    parameter_servers = train.train_distribute == _STRATEGY.Value("PSStrategy")
    if train.HasField("sync_replicas") and train.sync_replicas and parameter_servers:
        p.warn("PSStrategy trains asynchronously (TensorFlow's ParameterServerStrategy has "
               "no synchronous mode); sync_replicas: true is ignored.", "sync_replicas")
    elif train.HasField("sync_replicas") and not parameter_servers:
        p.warn("sync_replicas only matters for EasyRec's parameter-server jobs; ignored.",
               "sync_replicas")
    if parameter_servers and train.num_steps == 0:
        p.error("PSStrategy needs train_config.num_steps: workers take steps as they come "
                "free, each reading all of train_input_path in its own shuffled order, so "
                "there is no epoch to end on.", "train_distribute")
    if train.train_distribute not in SUPPORTED_STRATEGIES:
        name = _STRATEGY.Name(train.train_distribute)
        p.error(unsupported_strategy(name), "train_distribute")
    check_mixed_precision(train, p)
    check_stops(train, p)
    for field in ("inter_op_parallelism_threads", "intra_op_parallelism_threads"):
        if getattr(train, field) < 0:
            p.error(f"{field} must be 0 (the default choice) or a number of threads, got "
                    f"{getattr(train, field)}.", field)
    if train.save_checkpoints_steps == 0:
        p.error("save_checkpoints_steps must be at least 1.", "save_checkpoints_steps")
    if train.log_step_count_steps == 0:
        p.error("log_step_count_steps must be at least 1.", "log_step_count_steps")
    if train.num_steps == 0 and pipeline.data_config.num_epochs == 0:
        p.error("set train_config.num_steps or data_config.num_epochs, or training never ends.",
                "train_config")

