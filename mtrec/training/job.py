"""The job: everything built from one config (features, model, optimizers, checkpoint),
shared by training, evaluation, export and `mtrec check`."""
import dataclasses

import tensorflow as tf

from mtrec import config as config_lib
from mtrec.config.check_kd import kd_session_columns
from mtrec.data.schema import field_dtype, split_labels
from mtrec.features.feature import FeatureSet
from mtrec.models.losses import CLASSIFICATION, session_columns, tower_loss_type
from mtrec.models.registry import build_model
from mtrec.training.optimizers import (WHOLE_TABLE_ROWS_PER_EXAMPLE, SparseOptimizer,
                                       build_dense_optimizer, optimizer_configs)
from mtrec.training.precision import DynamicLossScale


def side_columns(pipeline) -> list[str]:
    """Columns that are not model inputs but losses and metrics need."""
    names = list(config_lib.label_names(pipeline))
    if pipeline.data_config.sample_weight:
        names.append(pipeline.data_config.sample_weight)
    metric_sets = [pipeline.eval_config.metrics_set] + [
        t.metrics_set for t in config_lib.task_towers(pipeline.model_config)]
    for metrics in metric_sets:
        for metric in metrics:
            if metric.WhichOneof("metric") == "gauc":
                names.append(metric.gauc.uid_field)
            elif metric.WhichOneof("metric") == "session_auc":
                names.append(metric.session_auc.session_id_field)
    names += session_columns(config_lib.task_towers(pipeline.model_config))
    names += kd_session_columns(pipeline.model_config)
    return list(dict.fromkeys(names))


@dataclasses.dataclass
class Job:
    """Everything built from one config: features, model, optimizers, checkpoint."""
    pipeline: object
    feature_set: FeatureSet
    model: object
    checkpoint: tf.train.Checkpoint | None
    global_step: tf.Variable
    dense_optimizer: object = None
    sparse_optimizer: object = None
    loss_names: list = dataclasses.field(default_factory=list)
    # mixed_precision fp16: the dynamic loss scale, checkpointed so a resumed run keeps it.
    loss_scale: object = None
    # (files, num_examples) -> _EvalPass: built once, so later evaluations skip the tracing.
    eval_passes: dict = dataclasses.field(default_factory=dict)
    # directory -> summary writer: one events file per directory, not one per evaluation.
    writers: dict = dataclasses.field(default_factory=dict)

    def summary_writer(self, directory: str):
        if directory not in self.writers:
            self.writers[directory] = tf.summary.create_file_writer(directory)
        return self.writers[directory]

    @classmethod
    def create(cls, pipeline, for_training: bool):
        feature_set = FeatureSet(pipeline)
        model = build_model(pipeline, feature_set)
        # Under a strategy every replica adds 1 per step; the first replica's add counts.
        global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                                  aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        dense = sparse = None
        if for_training:
            dense_config, sparse_config = optimizer_configs(pipeline.train_config)
            dense = build_dense_optimizer(dense_config)
            sparse = SparseOptimizer(sparse_config, whole_table_rows=(
                WHOLE_TABLE_ROWS_PER_EXAMPLE * pipeline.data_config.batch_size))
        return cls(pipeline, feature_set, model, None, global_step, dense, sparse)

    def label_classes(self) -> dict:
        """{label column: number of classes} of every classification tower (2 if binary)."""
        return {t.label_name: max(t.num_class, 2)
                for t in self.model.tower_configs if tower_loss_type(t) == CLASSIFICATION}

    def split(self, columns: dict):
        """A batch of typed columns -> (preprocessed features, side columns)."""
        side = split_labels({name: columns[name] for name in side_columns(self.pipeline)},
                            self.pipeline.data_config)
        return self.feature_set.preprocess(columns), side

    def build(self) -> None:
        """Create every variable (model, optimizer slots) by running one dummy row."""
        columns = {f.input_name: tf.zeros([1], field_dtype(f))
                   for f in self.pipeline.data_config.input_fields}
        features, side = self.split(columns)
        outputs = self.model(features, training=False)
        # Names of the loss terms, in the order the training step stacks them.
        self.loss_names = list(self.model.weighted_losses(outputs, side))
        parts = {"model": _VariableMap(self.model.checkpoint_variables()),
                 "global_step": self.global_step}
        if self.dense_optimizer is not None:
            self.dense_optimizer.build(self.model.trainable_variables)
            self.sparse_optimizer.build(self.model.feature_groups.table_variables)
            parts.update(dense_optimizer=self.dense_optimizer,
                         sparse_optimizer=self.sparse_optimizer)
            if self.pipeline.train_config.mixed_precision == "fp16":
                self.loss_scale = DynamicLossScale()
                parts["loss_scale"] = self.loss_scale
        if self.model.feature_groups.dynamic:
            # The maps, counts and last-seen steps of the dynamic tables (ev_params).
            parts["dynamic_tables"] = self.model.feature_groups.dynamic
        self.checkpoint = tf.train.Checkpoint(**parts)


class _VariableMap(tf.Module):
    """Checkpoint node holding {path: variable}."""

    def __init__(self, variables: dict):
        super().__init__(name="variables")
        self.variables_by_path = variables

