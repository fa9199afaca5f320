"""Validation of train_config: optimizers, distribution strategy, step counts."""
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
        rate = getattr(optimizer, kind).learning_rate if kind else None
        decay = rate.exponential_decay_learning_rate if rate is not None else None
        if (rate is not None and rate.HasField("exponential_decay_learning_rate")
                and decay.min_learning_rate > decay.initial_learning_rate):
            p.error(f"{kind}: min_learning_rate {decay.min_learning_rate:.7g} is above "
                    f"initial_learning_rate {decay.initial_learning_rate:.7g}, so the rate "
                    "would never decay from it; use a min_learning_rate below the initial "
                    "rate.", "min_learning_rate", float(decay.min_learning_rate))
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

