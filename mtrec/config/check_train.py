"""Validation of train_config: optimizers, distribution strategy, step counts."""
import math

from mtrec.config.source import Problems
from mtrec.protos import train_pb2

_STRATEGY = train_pb2.DistributionStrategy

# train_distribute values mtrec runs (EasyRec's CollectiveAllReduceStrategy is
# MultiWorkerMirroredStrategy under its older name).
SUPPORTED_STRATEGIES = (_STRATEGY.NoStrategy, _STRATEGY.MirroredStrategy,
                        _STRATEGY.CollectiveAllReduceStrategy,
                        _STRATEGY.MultiWorkerMirroredStrategy)


def unsupported_strategy(name: str) -> str:
    """The error of a train_distribute mtrec does not run, listing those it does."""
    why = {"PSStrategy": " (Keras 3 has no parameter-server training and a custom loop was "
                         "seen to lose step-counter updates)",
           "ExascaleStrategy": " (a PAI-only strategy)",
           "HorovodStrategy": " (MultiWorkerMirroredStrategy gives the same collective "
                              "all-reduce without Horovod)"}.get(name, "")
    return (f"train_distribute: {name} is not supported{why}; use one of NoStrategy, "
            "MirroredStrategy (local GPUs), MultiWorkerMirroredStrategy (workers from "
            "TF_CONFIG; EasyRec's CollectiveAllReduceStrategy is the same).")


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


def check_train(pipeline, p: Problems) -> None:
    """Optimizers, train_distribute, and steps that let training end and checkpoint."""
    train = pipeline.train_config
    for optimizer in train.optimizer_config:
        if optimizer.WhichOneof("optimizer") is None:
            p.error("optimizer_config has no optimizer (adam_optimizer, adagrad_optimizer, "
                    "adamw_optimizer or momentum_optimizer).", "optimizer_config")
        if optimizer.use_moving_average:
            p.error("use_moving_average: true is not supported by mtrec yet; set it to false.",
                    "use_moving_average")
        kind = optimizer.WhichOneof("optimizer")
        if kind:
            check_learning_rate(kind, getattr(optimizer, kind).learning_rate, p)
        lazy = optimizer.lazy_adam_optimizer
        if lazy.HasField("dense_moments") and lazy.dense_moments:
            p.error("lazy_adam_optimizer cannot have dense_moments: true (lazy is the "
                    "opposite); adam_optimizer keeps dense moments by default.", "dense_moments")
    if len(train.optimizer_config) > 2:
        p.error("train_config takes at most two optimizer_config entries (dense, embedding).",
                "optimizer_config")
    if train.HasField("sync_replicas"):
        p.warn("sync_replicas only matters for EasyRec's parameter-server jobs; ignored.",
               "sync_replicas")
    if train.train_distribute not in SUPPORTED_STRATEGIES:
        name = _STRATEGY.Name(train.train_distribute)
        p.error(unsupported_strategy(name), "train_distribute")
    if train.save_checkpoints_steps == 0:
        p.error("save_checkpoints_steps must be at least 1.", "save_checkpoints_steps")
    if train.log_step_count_steps == 0:
        p.error("log_step_count_steps must be at least 1.", "log_step_count_steps")
    if train.num_steps == 0 and pipeline.data_config.num_epochs == 0:
        p.error("set train_config.num_steps or data_config.num_epochs, or training never ends.",
                "train_config")

