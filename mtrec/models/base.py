"""What every multi-task model shares: feature groups in, task towers out, tower losses
(their maths, and the heads, are in mtrec/models/losses.py).

A model subclass only reads its config and wires layers: it implements
`tower_inputs(groups, training) -> [one (batch, d) tensor per tower]`.
"""
import keras
import tensorflow as tf

from mtrec import config as config_lib
from mtrec.features.embedding import FeatureGroups
from mtrec.layers.fm import FM
from mtrec.layers.dnn import dnn_args
from mtrec.layers.tower import TaskTower
from mtrec.models.checks import output_towers
from mtrec.models.losses import (head_outputs, kd_losses, loss_keys, loss_terms, metric_label,
                                  prediction, tower_term_losses, uncertainty_weighted)
from mtrec.protos import feature_pb2, model_pb2

# Multi-scenario models: the domain feature is looked up as a hidden group (sharing its
# table with any group that also lists it), and its ids ride along under DOMAIN_IDS.
DOMAIN_GROUP = "__domain__"
DOMAIN_IDS = "__domain_ids__"

# The backbone's output, computed once per call and kept in the groups dict.
BACKBONE_OUTPUT = "__backbone__"
# The preprocessed features, kept in the groups dict for backbone blocks that read
# sequences (input_layer with output_seq_and_normal_feature).
FEATURES = "__features__"

class MultiTaskModel(keras.Model):
    """call(features) -> {logits_<t>, probs_<t> | y_<t>} for every task tower t."""

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(**kwargs)
        model_config = pipeline.model_config
        self.params = config_lib.model_message(model_config)
        # The towers of the model's outputs (RocketLaunching: its one tower, per net).
        self.tower_configs = output_towers(model_config.WhichOneof("model"),
                                           config_lib.task_towers(model_config))
        # Distillation terms (model_config.kd), added to the tower losses.
        self.kd_configs = list(model_config.kd)
        self.sample_weight_field = pipeline.data_config.sample_weight
        self.l2_regularization = getattr(self.params, "l2_regularization", 0.0)
        # The DeepFM terms of the multi-task models: use_linear_logits needs one WIDE
        # weight per id and tower (a per-task linear model).
        self.use_linear_logits = getattr(self.params, "use_linear_logits", False)
        self.fm = FM(name="fm") if getattr(self.params, "use_fm_logits", False) else None
        group_configs = list(model_config.feature_groups) + self.extra_groups(model_config)
        if self.domain_feature:
            group_configs.append(feature_pb2.FeatureGroupConfig(
                group_name=DOMAIN_GROUP, feature_names=[self.domain_feature]))
        self.feature_groups = FeatureGroups(
            feature_set, group_configs, model_config.embedding_regularization,
            wide_output_dim=self.wide_width(),
            variational_dropout=(model_config.variational_dropout
                                 if model_config.HasField("variational_dropout") else None),
            name="feature_groups")
        self.task_towers = [self.make_tower(t) for t in self.tower_configs]
        self.backbone = None
        if model_config.HasField("backbone"):
            from mtrec.backbone.layer import Backbone
            self.backbone = Backbone(model_config.backbone, self.feature_groups,
                                     self.l2_regularization, name="backbone")
        self.uncertainty = None
        # {loss key: (tower, term)} of the loss terms with learn_loss_weight.
        self.learned_terms = {}
        if model_config.loss_weight_strategy == model_pb2.Uncertainty:
            # s = log(sigma^2) learned (Kendall et al. 2018): per term with learn_loss_weight
            # (EasyRec's rule) when a term sets it, else per tower.
            self.learned_terms = {key: (t, term) for t in self.tower_configs
                                  for key, term in zip(loss_keys(t), loss_terms(t))
                                  if term.learn_loss_weight}
            keys = list(self.learned_terms) or [t.tower_name for t in self.tower_configs]
            self.uncertainty = {key: self.add_weight(
                shape=(), initializer="zeros", name=f"log_variance_{key.replace('/', '_')}")
                for key in keys}
        # Sub-layers build on their first call; the inputs (nested dicts of ragged
        # tensors) have no static shape Keras could trace a build from.
        self.built = True

    def extra_groups(self, model_config) -> list:
        """FeatureGroupConfigs looked up besides model_config.feature_groups (a subclass's
        hidden groups, e.g. MultiTowerDIN's seq_att_groups); none by default."""
        return []

    def wide_width(self) -> int:
        """Weights per id of the WIDE groups: one per tower with use_linear_logits, else 1."""
        return len(self.tower_configs) if self.use_linear_logits else 1

    def make_tower(self, tower) -> TaskTower:
        return TaskTower(**dnn_args(tower.dnn), num_class=tower.num_class,
                         l2_regularization=self.l2_regularization,
                         name=f"tower_{tower.tower_name}")

    def checkpoint_variables(self) -> dict:
        """{stable path: variable} of every weight and embedding table.

        Checkpoints key variables by path because tf.train.Checkpoint does not follow
        the lists of sub-layers Keras 3 layers keep. Every sub-layer has an explicit
        name, so paths do not depend on how many layers the process created before.
        """
        variables = {f"tables/{name}": table
                     for name, table in self.feature_groups.tables.items()}
        for variable in self.weights:
            if variable.path in variables:
                raise RuntimeError(f"two model variables share the path {variable.path!r}; "
                                   "give the sub-layers distinct names.")
            variables[variable.path] = variable
        return variables

    # -- wiring --------------------------------------------------------------
    def group_names(self, wide: bool = False) -> list[str]:
        return [n for n, (_, is_wide) in self.feature_groups.groups.items()
                if is_wide == wide and n != DOMAIN_GROUP]

    def group_tensor(self, groups: dict, names=None) -> tf.Tensor:
        """Concatenate the DEEP groups `names` (default: all DEEP groups) -> (batch, d).
        With a backbone, the default is the backbone's output instead."""
        if names is None and self.backbone is not None:
            return self.backbone_output(groups)
        tensors = [t for n in (names or self.group_names()) for t in groups[n]]
        return tf.concat(tensors, axis=-1)

    def backbone_output(self, groups: dict):
        """The backbone's output (a tensor, or a list with output_blocks / a multi-output
        last block), computed on the first request of a call and reused after."""
        if BACKBONE_OUTPUT not in groups:
            groups[BACKBONE_OUTPUT] = self.backbone(
                {n: groups[n] for n in self.feature_groups.groups if n in groups},
                features=groups.get(FEATURES))
        return groups[BACKBONE_OUTPUT]

    def main_tensor(self, groups: dict) -> tf.Tensor:
        """(batch, d): the DEEP groups a multi-scenario model transforms, i.e. all but the
        side groups its gates or generators read (prior/condition/scenario group); with a
        backbone, its output."""
        if self.backbone is not None:
            return self.backbone_output(groups)
        side = {getattr(self.params, f, "") for f in config_lib.SIDE_GROUP_FIELDS}
        return self.group_tensor(groups, [n for n in self.group_names() if n not in side])

    def tower_inputs(self, groups: dict, training: bool) -> list:
        raise NotImplementedError

    def tower_logits(self, groups: dict, training: bool) -> list:
        """[(batch, num_class) logits per tower]; by default each tower on its input."""
        return [layer(x, training=training)
                for layer, x in zip(self.task_towers, self.tower_inputs(groups, training))]

    def domain_index(self, groups: dict):
        """(batch,) int64 domain of each row for per-domain parameters; a missing or
        out-of-range domain uses domain 0 (the out-of-vocabulary id for vocab_list)."""
        return groups[DOMAIN_IDS]

    def domain_embedding(self, groups: dict):
        """(batch, domain embedding_dim); zeros for a missing domain."""
        return groups[DOMAIN_GROUP][0]

    def extra_logits(self, groups: dict) -> list | None:
        """Per-tower (batch, 1) terms added to the tower logits, or None: with
        use_linear_logits a per-task linear logit over the WIDE groups, with use_fm_logits
        one FM logit over the DEEP groups' embeddings."""
        terms = []
        if self.use_linear_logits:
            # (batch, num_towers): summed per-feature weights of the WIDE groups.
            linear = tf.add_n([t for n in self.group_names(wide=True) for t in groups[n]])
            terms.append([linear[:, i:i + 1] for i in range(len(self.tower_configs))])
        if self.fm is not None:
            embeddings = [t for n in self.group_names() for t, f in
                          zip(groups[n], self.feature_groups.groups[n][0])
                          if self.feature_groups.feature_set[f].kind != "values"]
            fm = self.fm(embeddings)  # (batch, 1)
            terms.append([fm] * len(self.tower_configs))
        if not terms:
            return None
        # float32 (a mixed-precision FM computes in bf16/fp16; the linear terms are float32).
        return [tf.add_n([tf.cast(t, tf.float32) for t in per_tower])
                for per_tower in zip(*terms)]

    def call(self, features, training=False):
        # Raw keys of dynamic tables -> rows (looked up; the train step inserts first).
        features = self.feature_groups.dynamic.rows(features)
        groups = self.feature_groups(features)
        groups[FEATURES] = features
        if self.domain_feature:
            groups[DOMAIN_IDS] = tf.maximum(features[self.domain_feature]["ids"], 0)
        extra = self.extra_logits(groups)
        outputs = {}
        for i, (tower, logits) in enumerate(zip(self.tower_configs,
                                                self.tower_logits(groups, training))):
            # float32 heads, losses and metrics under a mixed-precision policy.
            logits = tf.cast(logits, tf.float32)
            if extra is not None:
                logits = logits + extra[i]
            outputs.update(head_outputs(tower, logits))
        outputs.update(self.extra_outputs(groups))
        return outputs

    def extra_outputs(self, groups: dict) -> dict:
        """Outputs besides the towers' (per-row values its losses read, which the model's
        tower_inputs left in `groups`, this call's scratch dict); none by default."""
        return {}

    # -- losses and evaluation ------------------------------------------------
    def weighted_losses(self, outputs: dict, labels: dict) -> dict:
        """compute_losses, then the loss_weight_strategy (Uncertainty: uncertainty_weighted
        with the learned log variance of each learn_loss_weight term, or else of each tower,
        whose terms then share it)."""
        losses = self.compute_losses(outputs, labels)
        if self.uncertainty is None:
            return losses
        if self.learned_terms:
            for key, (tower, term) in self.learned_terms.items():
                losses[key] = uncertainty_weighted(losses[key], self.uncertainty[key], tower,
                                                   term.loss_type)
            return losses
        for tower in self.tower_configs:
            name = tower.tower_name
            log_variance = self.uncertainty[name]
            # A tower's terms share its s: exp(-s) * each term, and s/2 once.
            keys = [name] if name in losses else loss_keys(tower)
            for i, key in enumerate(keys):
                weighted = uncertainty_weighted(losses[key], log_variance, tower)
                losses[key] = weighted if i == 0 else weighted - 0.5 * log_variance
        return losses

    def compute_losses(self, outputs: dict, labels: dict) -> dict:
        """{loss key (losses.loss_keys): scalar}: each term of each tower times its weight and
        the tower's `weight`; a learn_loss_weight term unweighted (weighted_losses learns it);
        then the kd terms times their loss_weight."""
        losses = {}
        for t in self.tower_configs:
            terms = tower_term_losses(t, outputs, labels, self._weights(t, labels))
            for key, (term, value) in terms.items():
                losses[key] = value if key in self.learned_terms else (
                    t.weight * term.weight * value)
        losses.update(kd_losses(self.kd_configs, self.tower_configs, outputs, labels))
        return losses

    def _weights(self, tower, labels):
        weights = None
        if self.sample_weight_field and tower.use_sample_weight:
            weights = tf.cast(labels[self.sample_weight_field], tf.float32)
        if tower.task_space_indicator_label:
            inside = tf.cast(labels[tower.task_space_indicator_label], tf.float32) > 0
            space = tf.where(inside, tower.in_task_space_weight, tower.out_task_space_weight)
            weights = space if weights is None else weights * space
        return weights

    @property
    def domain_feature(self) -> str:
        """Multi-scenario models name the IdFeature whose id is the domain."""
        return getattr(self.params, "domain_feature", "")

    @property
    def num_domains(self) -> int:
        if not self.domain_feature:
            return 0
        return self.feature_groups.feature_set[self.domain_feature].num_ids

    @property
    def domain_names(self) -> list[str]:
        """Names of domain ids 0..num_domains-1 in metric keys: the id itself, or for a
        vocabulary the value ("oov" for id 0, where unknown values go)."""
        feature = self.feature_groups.feature_set[self.domain_feature] if self.domain_feature \
            else None
        if feature is None:
            return []
        vocabulary = feature.id_space.vocabulary()
        if vocabulary is None:
            return [str(i) for i in range(self.num_domains)]
        return ["oov"] + vocabulary

    def domain_ids(self, features):
        """(batch,) int64 domain ids, or None for a model without domains."""
        return features[self.domain_feature]["ids"] if self.domain_feature else None

    def eval_targets(self, outputs: dict, labels: dict) -> dict:
        """{tower_name: (prediction, label, mask or None, tower_config)} for metrics."""
        return {t.tower_name: (prediction(t, outputs), metric_label(t, labels[t.label_name]),
                               None, t)
                for t in self.tower_configs}

