"""Checkpoints of a job: write one per save interval, resume from the latest at its
exact step, or start from another model's weights (fine_tune_checkpoint)."""
import logging
import os
import shutil

import tensorflow as tf

from mtrec.errors import TrainingError
from mtrec.training.job import Job

log = logging.getLogger("mtrec")


def make_manager(job: Job, directory: str, keep: int) -> tf.train.CheckpointManager:
    """Numbers checkpoints by global_step and keeps the newest `keep` of them."""
    return tf.train.CheckpointManager(job.checkpoint, directory, step_counter=job.global_step,
                                      max_to_keep=keep)


def save(job: Job, manager, step: int, last_saved: int) -> None:
    """Save a checkpoint; a failed write (disk full, directory removed) is one clear error.
    TensorFlow writes the files under temporary names and updates the `checkpoint` index
    last, so the previous checkpoint stays the latest and intact; the shards of the failed
    one are removed (those of a killed save, by the next trainer: storage.model_dir_lock).
    Embedding rows are brought current first (dense_moments), so every checkpoint is saved
    flushed."""
    job.sparse_optimizer.flush(job.model.feature_groups.table_variables)
    try:
        manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
        # TensorFlow leaves the shards it was writing in ckpt-<step>_temp/.
        shutil.rmtree(os.path.join(manager.directory, f"ckpt-{step}_temp"), ignore_errors=True)
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise TrainingError(f"could not write the checkpoint of step {step} to "
                            f"{manager.directory!r}: {reason[:300]}. Is the disk full? The "
                            f"checkpoint of step {last_saved} is intact; free space and run "
                            "the same command again to resume.") from None


def restore_checkpoint(checkpoint, path: str, partial: bool = False) -> None:
    """Restore, turning a checkpoint of a different model into one clear error."""
    try:
        status = checkpoint.restore(path)
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        detail = str(e).splitlines()[0][:300]
        raise TrainingError(f"checkpoint {path} does not fit this config's model (was the model "
                            f"or a feature changed?): {detail}. Use a new model_dir, or the "
                            "config the checkpoint was trained with.") from None


def restore(job: Job, latest: str | None, fine_tune_checkpoint: str) -> None:
    """Resume from latest (a checkpoint of this model_dir), else initialise the model's
    weights from fine_tune_checkpoint (a file or a directory), if set."""
    if latest:
        restore_checkpoint(job.checkpoint, latest)
        job.sparse_optimizer.restored()
        log.info("resumed from %s (step %d)", latest, int(job.global_step.numpy()))
    elif fine_tune_checkpoint:
        path = fine_tune_checkpoint
        if os.path.isdir(path):
            path = tf.train.latest_checkpoint(path)
        if not path:
            raise TrainingError(f"fine_tune_checkpoint {fine_tune_checkpoint!r} holds no "
                                "checkpoint.")
        tf.train.Checkpoint(model=job.checkpoint.model).restore(path).expect_partial()
        log.info("initialised weights from %s", path)
