"""Export a SavedModel whose serving_default signature takes raw input columns.

All feature processing (hashing, vocabularies, bucketization, tag splitting) is in
the graph, so `tf.saved_model.load` in a process that never imports mtrec (or TF
Serving) computes the same outputs as training did. The version directory is
written under a temporary name and renamed when complete.
"""
import logging
import os
import shutil
import time

import tensorflow as tf

from mtrec import config as config_lib
from mtrec.data.schema import field_dtype

log = logging.getLogger("mtrec")


class ServingModule(tf.Module):
    """Raw typed columns -> model outputs."""

    def __init__(self, model, feature_set, input_fields, batch_size=-1):
        super().__init__()
        self.model = model
        # Keras 3 keeps sub-layers in lists TF tracking does not follow; hold every
        # variable here so the SavedModel captures all of them.
        self.model_variables = model.checkpoint_variables()
        # Lookup layers hold the vocabulary tables; track them so they are saved.
        self.lookups = [f.id_space.lookup for f in feature_set.features.values()
                        if getattr(f, "id_space", None) is not None
                        and f.id_space.lookup is not None]
        self._feature_set = feature_set
        batch = None if batch_size is None or batch_size < 0 else batch_size
        signature = {f.input_name: tf.TensorSpec([batch], field_dtype(f), name=f.input_name)
                     for f in input_fields}
        self.serve = tf.function(self._serve, input_signature=[signature])

    def _serve(self, inputs):
        features = self._feature_set.preprocess(inputs)
        return self.model(features, training=False)


def serving_fields(pipeline, feature_set) -> list:
    """The input fields the model reads, in data_config order."""
    wanted = set(feature_set.input_names)
    return [f for f in pipeline.data_config.input_fields if f.input_name in wanted]


def export_saved_model(job, export_dir: str) -> str:
    """Write export_dir/<unix_ts>/ atomically; prune to exports_to_keep. Returns the path."""
    pipeline = job.pipeline
    module = ServingModule(job.model, job.feature_set, serving_fields(pipeline, job.feature_set),
                           pipeline.export_config.batch_size)
    os.makedirs(export_dir, exist_ok=True)
    version = int(time.time())
    while os.path.exists(os.path.join(export_dir, str(version))):
        version += 1
    final = os.path.join(export_dir, str(version))
    tmp = os.path.join(export_dir, f".tmp-{version}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
        os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
        with open(os.path.join(tmp, "assets", "pipeline.config"), "w", encoding="utf-8") as f:
            f.write(config_lib.to_text(pipeline))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(export_dir, pipeline.export_config.exports_to_keep)
    log.info("exported SavedModel to %s", final)
    return final


def _prune(export_dir: str, keep: int) -> None:
    if keep <= 0:
        return
    versions = sorted((int(d) for d in os.listdir(export_dir) if d.isdigit()), reverse=True)
    for old in versions[keep:]:
        shutil.rmtree(os.path.join(export_dir, str(old)), ignore_errors=True)
