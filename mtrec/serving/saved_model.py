"""Export a SavedModel whose serving_default signature takes raw input columns.

All feature processing (hashing, vocabularies, bucketization, tag splitting) is in
the graph, so `tf.saved_model.load` in a process that never imports mtrec (or TF
Serving) computes the same outputs as training did. Each export is written in a
temporary directory of its own and renamed to its version when complete, so concurrent
exports to one export_dir each publish their own complete version.
"""
import errno
import logging
import os
import shutil
import tempfile
import time

import tensorflow as tf

from mtrec import config as config_lib
from mtrec.config.check_eval import multi_value_inputs
from mtrec.data.schema import field_dtype, to_typed
from mtrec.errors import MtrecError
from mtrec.training import storage

log = logging.getLogger("mtrec")


class ServingModule(tf.Module):
    """Raw typed columns -> model outputs.

    `columns` takes one input per column, named by input. `serve` is the serving_default
    signature export_config asks for: the same (multi_placeholder, named by input or
    `input_<i>`), or one string per row whose cells are joined by data_config.separator."""

    def __init__(self, model, feature_set, pipeline, batch_size=-1, global_step=None):
        super().__init__()
        self.model = model
        # The step of the weights, so an export says which checkpoint it holds.
        if global_step is not None:
            self.global_step = global_step
        # Dynamic tables (ev_params) serve from a read-only snapshot of their maps, the
        # tables compacted to the rows in use (this changes the job's model: export only).
        if model.feature_groups.dynamic:
            self.dynamic_tables = model.feature_groups.dynamic.freeze(model.feature_groups.tables)
        # Keras 3 keeps sub-layers in lists TF tracking does not follow; hold every
        # variable here so the SavedModel captures all of them.
        self.model_variables = model.checkpoint_variables()
        # Lookup layers hold the vocabulary tables; track them so they are saved.
        self.lookups = [f.id_space.lookup for f in feature_set.features.values()
                        if getattr(f, "id_space", None) is not None
                        and f.id_space.lookup is not None]
        self._feature_set = feature_set
        self._batch = None if batch_size is None or batch_size < 0 else batch_size
        export = pipeline.export_config
        self._fields = serving_fields(pipeline, feature_set)
        self._needed = {f.input_name for f in self._fields}
        self._signature_fields = (self._fields if export.filter_inputs
                                  else unfiltered_fields(pipeline))
        # autograph=False: nothing here branches on a tensor, and converting the model
        # only slowed the export.
        self.columns = tf.function(self._serve_columns, autograph=False, input_signature=[
            {f.input_name: self._spec(f, f.input_name) for f in self._fields}])
        self._separator = pipeline.data_config.separator
        if not export.multi_placeholder:
            self.serve = tf.function(self._serve_joined, autograph=False, input_signature=[
                tf.TensorSpec([self._batch], tf.string, name="features")])
            return
        # export_config.multi_value_fields: {input: (kind, separator)} of list inputs.
        self._lists = multi_value_inputs(pipeline)
        by_input = (not export.HasField("placeholder_named_by_input")
                    or export.placeholder_named_by_input)
        index = {f.input_name: i for i, f in enumerate(pipeline.data_config.input_fields)}
        self._names = {(f.input_name if by_input else f"input_{index[f.input_name]}"):
                       f.input_name for f in self._signature_fields}
        by_name = {f.input_name: f for f in self._signature_fields}
        self.serve = tf.function(self._serve_named, autograph=False, input_signature=[
            {key: self._list_spec(by_name[name], key) if name in self._lists
             else self._spec(by_name[name], key) for key, name in self._names.items()}])

    def _spec(self, field, name):
        return tf.TensorSpec([self._batch], field_dtype(field), name=name)

    def _list_spec(self, field, name):
        """(batch, None) values of a multi_value_fields input."""
        return tf.TensorSpec([self._batch, None], tf.as_dtype(self._lists[field.input_name][0]),
                             name=name)

    def _joined(self, name, values):
        """(batch, None) list values -> (batch,) cells of them joined by the separator of the
        features that read them (padding: "" and negative ids become empty values, which
        the features drop; float32 keeps every bit with 9 significant digits)."""
        kind, separator = self._lists[name]
        if kind == "int64":
            values = tf.where(values < 0, "", tf.strings.as_string(values))
        elif kind == "float32":
            values = tf.strings.as_string(values, precision=8, scientific=True)
        return tf.strings.reduce_join(values, axis=1, separator=separator)

    def _serve_columns(self, inputs):
        features = self._feature_set.preprocess(inputs)
        return self.model(features, training=False)

    def _serve_named(self, inputs):
        return self._serve_columns({
            name: self._joined(name, inputs[key]) if name in self._lists else inputs[key]
            for key, name in self._names.items() if name in self._needed})

    def _serve_joined(self, rows):
        """(batch,) strings of the signature fields' cells joined by the separator."""
        count = len(self._signature_fields)
        # (batch, count); a short row's missing cells are empty (the column's default).
        cells = tf.strings.split(rows, self._separator).to_tensor("", shape=[None, count])
        # Each cell read as the CSV reader reads it (NULL and empty take default_val).
        columns = {f.input_name: to_typed(cells[:, i], f)[0]
                   for i, f in enumerate(self._signature_fields) if f.input_name in self._needed}
        return self._serve_columns(columns)


def serving_fields(pipeline, feature_set) -> list:
    """The input fields the model reads, in data_config order."""
    wanted = set(feature_set.input_names)
    return [f for f in pipeline.data_config.input_fields if f.input_name in wanted]


def unfiltered_fields(pipeline) -> list:
    """Every input field but the labels and the sample weight (filter_inputs: false)."""
    data = pipeline.data_config
    skip = set(data.label_fields) | {data.sample_weight}
    return [f for f in data.input_fields if f.input_name not in skip]


def export_saved_model(job, export_dir: str) -> str:
    """Write export_dir/<version>/ atomically; prune to exports_to_keep. Returns the path.

    The version is the unix time, or one more than the newest version already there; the
    SavedModel is written in a temporary directory of this process and renamed to its
    version, the next free one if another export claimed it meanwhile. A failed write is
    one MtrecError, and leaves export_dir as it was."""
    pipeline = job.pipeline
    module = ServingModule(job.model, job.feature_set, pipeline,
                           pipeline.export_config.batch_size, job.global_step)
    try:
        os.makedirs(export_dir, exist_ok=True)
        storage.remove_stale_temps(export_dir)
        before = _versions(export_dir)
        tmp = tempfile.mkdtemp(prefix=storage.temp_prefix(), dir=export_dir)
    except OSError as e:
        raise _export_error(export_dir, e) from None
    try:
        # mkdtemp makes it private; a published version is not.
        os.chmod(tmp, 0o777 & ~storage.current_umask())
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve,
                                                     "columns": module.columns})
        os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
        for asset in pipeline.export_config.asset_files:
            shutil.copyfile(asset, os.path.join(tmp, "assets", os.path.basename(asset)))
        fd = storage.open_nofollow(os.path.join(tmp, "assets", "pipeline.config"),
                                   os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(config_lib.to_text(pipeline))
        missing = _missing(tmp)
        if missing:
            raise MtrecError(f"the SavedModel written to {export_dir!r} is incomplete "
                             f"({missing}); nothing was published.")
        final = _publish(tmp, export_dir, max(int(time.time()), max(before, default=0) + 1))
    except (OSError, tf.errors.OpError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _export_error(export_dir, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(export_dir, before, pipeline.export_config.exports_to_keep)
    log.info("exported SavedModel to %s", final)
    return final


def _export_error(export_dir: str, e: Exception) -> MtrecError:
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
        if e.filename:
            reason += f" ({e.filename})"
    else:
        reason = (e.message.splitlines() or [type(e).__name__])[0]
    return MtrecError(f"could not export a SavedModel to {export_dir!r}: {reason[:300]}. "
                      "Nothing was published there, and the versions it already held are "
                      "untouched.")


def _missing(path: str) -> str:
    """What a complete SavedModel directory lacks: '' if nothing."""
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        return "no saved_model.pb"
    variables = os.path.join(path, "variables")
    if not os.path.isfile(os.path.join(variables, "variables.index")):
        return "no variables/variables.index"
    try:
        shards = [f for f in os.listdir(variables) if f.startswith("variables.data-")]
    except OSError:
        shards = []
    total = {f.rsplit("-of-", 1)[-1] for f in shards}
    if not shards or len(total) != 1 or int(total.pop()) != len(shards):
        return "variables/variables.data-* shards missing"
    return ""


def _versions(export_dir: str) -> set:
    """The version numbers in export_dir (complete or not)."""
    return {int(d) for d in os.listdir(export_dir) if d.isdigit()}


def _is_complete(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path) and not _missing(path)


def newest_export(export_dir: str) -> str | None:
    """The newest complete SavedModel version in export_dir, if any."""
    if not os.path.isdir(export_dir):
        return None
    for version in sorted(_versions(export_dir), reverse=True):
        path = os.path.join(export_dir, str(version))
        if _is_complete(path):
            return path
    return None


def exported_step(path: str) -> int | None:
    """The global_step of the weights in an export (None for exports that do not say)."""
    try:
        reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
        return int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError, KeyError):
        return None


def _publish(tmp: str, export_dir: str, version: int) -> str:
    """Rename tmp to export_dir/<version>, or to the next free version: a rename onto a
    version another process published meanwhile fails, and nothing is replaced."""
    for _ in range(1000):
        final = os.path.join(export_dir, str(version))
        try:
            os.rename(tmp, final)
            return final
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise
        version += 1
    raise MtrecError(f"could not claim a version number in {export_dir!r}; nothing was "
                     "published.")


def _prune(export_dir: str, before: set, keep: int) -> None:
    """Keep the newest `keep` complete versions, counting the one just published. Only
    versions that were there before this export began are removed (so concurrent exports
    never remove each other's), only complete SavedModels count and are removed, and a
    version is first renamed away so that no server ever sees it half-deleted."""
    if keep <= 0:
        return
    complete = []
    for version in sorted(before, reverse=True):
        path = os.path.join(export_dir, str(version))
        if _is_complete(path):
            complete.append(path)
        elif os.path.exists(path):
            log.warning("%s is not a complete SavedModel; it is left in place and not counted "
                        "in exports_to_keep.", path)
    for path in complete[keep - 1:]:
        doomed = os.path.join(export_dir, storage.temp_prefix() + "old" + os.path.basename(path))
        try:
            os.rename(path, doomed)
        except OSError:
            continue  # another export removed it meanwhile
        shutil.rmtree(doomed, ignore_errors=True)
