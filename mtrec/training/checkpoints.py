"""Checkpoints of a job: write one per save interval, resume from the latest at its
exact step, or start from another model's weights (fine_tune_checkpoint); keep the best
evaluated checkpoint in model_dir/best/ (keep_best)."""
import logging
import os
import re
import shutil
import tempfile

import tensorflow as tf

from mtrec.errors import TrainingError, reason_line
from mtrec.training import storage
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
        # (A restore spread over several tasks runs in a tf.function: its error's first line
        # is "Graph execution error:".)
        detail = (reason_line(e) if isinstance(e, tf.errors.OpError)
                  else str(e).splitlines()[0])[:300]
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
        parts = {"model": job.checkpoint.model}
        dynamic = job.model.feature_groups.dynamic
        if dynamic:  # a dynamic table's rows mean nothing without its map
            parts["dynamic_tables"] = dynamic
        missing = _restore_weights(tf.train.Checkpoint(**parts), path, fine_tune_checkpoint)
        if dynamic:
            dynamic.fit_slots(job.model.feature_groups.tables, job.sparse_optimizer)
        total = len(job.model.variables)
        if missing is not None and missing >= total:
            raise TrainingError(f"fine_tune_checkpoint {fine_tune_checkpoint!r} holds none of "
                                "this model's weights: it was written by another model or "
                                "tool (mtrec reads checkpoints of mtrec models only).")
        if missing:
            log.warning("initialised %d of %d weights from %s; %d keep their initial values "
                        "(not in that checkpoint)", total - missing, total, path, missing)
        else:
            log.info("initialised weights from %s", path)


def _restore_weights(checkpoint, path: str, name: str) -> int | None:
    """Restore what `path` holds of `checkpoint`'s objects; returns how many of them it did
    not hold (None if TensorFlow's message gives no count). A weight whose shape differs
    (a feature's bucket count or a layer's width changed) is one clear error."""
    try:
        status = checkpoint.restore(path)
    except (ValueError, tf.errors.OpError) as e:
        detail = str(e).splitlines()[0][:300]
        raise TrainingError(f"fine_tune_checkpoint {name!r} does not fit this config's model: "
                            f"{detail}") from None
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        # "Found N Python objects that were not bound to checkpointed values ..."
        found = re.search(r"Found (\d+) Python objects", str(e))
        return int(found.group(1)) if found else None
    return 0


# The best checkpoint is kept in model_dir/best/ (see keep_best).
BEST_DIR = "best"


def checkpoint_step(path: str) -> int:
    """The global step of a checkpoint path prefix (".../ckpt-<step>")."""
    return int(path.rsplit("-", 1)[1])


def best_dir(model_dir: str) -> str:
    return os.path.join(model_dir, BEST_DIR)


def best_checkpoint(model_dir: str) -> str | None:
    """The kept best checkpoint (model_dir/best/ckpt-<step>), None if there is none."""
    directory = best_dir(model_dir)
    if not model_dir or not os.path.isdir(directory):
        return None
    state = tf.train.get_checkpoint_state(directory)
    path = state.model_checkpoint_path if state else ""
    return path if path and os.path.exists(path + ".index") else None


def _checkpoint_files(directory: str, step: int) -> list[str]:
    prefix = f"ckpt-{step}."
    return sorted(name for name in os.listdir(directory) if name.startswith(prefix))


def keep_best(model_dir: str, step: int) -> str:
    """Make model_dir/ckpt-<step> (a checkpoint the trainer wrote) the kept best checkpoint,
    model_dir/best/ckpt-<step>, which keep_checkpoint_max never deletes; returns its path.

    Its files are hard links (a copy where links are not possible) made in a temporary
    directory and moved into best/; best/'s `checkpoint` index, rewritten atomically by
    TensorFlow, then names them, and only after that are the previous best's files removed.
    A kill at any moment leaves the index naming a complete checkpoint; the leftovers
    (temporary directory, unnamed files) are removed by the next trainer (sync_best)."""
    directory = best_dir(model_dir)
    storage.refuse_link(directory)
    files = _checkpoint_files(model_dir, step)
    if f"ckpt-{step}.index" not in files:
        raise TrainingError(f"cannot keep the checkpoint of step {step} as the best: "
                            f"{model_dir} has no ckpt-{step}.")
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=storage.temp_prefix(), dir=directory)
        try:
            for name in files:
                source, target = os.path.join(model_dir, name), os.path.join(tmp, name)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
            for name in files:
                os.replace(os.path.join(tmp, name), os.path.join(directory, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _write_index(directory, f"ckpt-{step}")
    except (OSError, tf.errors.OpError) as e:
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise TrainingError(f"could not keep the checkpoint of step {step} as the best in "
                            f"{directory!r}: {reason[:300]}. Is the disk full? The previous "
                            "best checkpoint there is intact.") from None
    _prune_best(directory)
    return os.path.join(directory, f"ckpt-{step}")


def _write_index(directory: str, name: str) -> None:
    """Point directory's `checkpoint` index (TensorFlow's CheckpointState, which
    tf.train.latest_checkpoint reads) at checkpoint `name`, atomically."""
    from google.protobuf import text_format
    from tensorflow.python.training import checkpoint_state_pb2
    state = checkpoint_state_pb2.CheckpointState(model_checkpoint_path=name,
                                                 all_model_checkpoint_paths=[name])
    storage.atomic_write(os.path.join(directory, "checkpoint"), text_format.MessageToString(state))


def _prune_best(directory: str) -> None:
    """Remove the checkpoint files in best/ that its index does not name."""
    kept = best_checkpoint(os.path.dirname(directory))
    keep = os.path.basename(kept) + "." if kept else None
    for name in os.listdir(directory):
        if name.startswith("ckpt-") and not (keep and name.startswith(keep)):
            try:
                os.remove(os.path.join(directory, name))
            except OSError as e:
                log.warning("could not remove %s: %s", os.path.join(directory, name), e.strerror)


def sync_best(model_dir: str, watch) -> None:
    """Before training (by the holder of the model_dir lock): remove what a killed trainer
    left in best/, and make best/ hold the best evaluation of eval_result.txt that watch
    (a training.best.BestMetric) replayed. If that checkpoint is gone, watch's best becomes
    the one best/ holds (or none)."""
    directory = best_dir(model_dir)
    storage.refuse_link(directory)
    if os.path.isdir(directory):
        storage.remove_stale_temps(directory, checkpoint_temps=True)
        _prune_best(directory)
    kept = best_checkpoint(model_dir)
    kept_step = checkpoint_step(kept) if kept else None
    if watch.best_step is None or kept_step == watch.best_step:
        return
    if os.path.exists(os.path.join(model_dir, f"ckpt-{watch.best_step}.index")):
        keep_best(model_dir, watch.best_step)
        log.info("kept the checkpoint of step %d as the best (%s=%.6g)", watch.best_step,
                 watch.name, watch.best)
        return
    log.warning("the best evaluation in eval_result.txt (%s=%.6g at step %d) has no "
                "checkpoint any more; the best checkpoint is %s.", watch.name, watch.best,
                watch.best_step, f"that of step {kept_step}" if kept else "chosen from now on")
    watch.rebase(kept_step)
