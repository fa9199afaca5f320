"""Towers that read other towers (DBMTL's, and the backbone MultiTaskModel's):

  h_t = dnn_t(x_t)
  r_t = relation_dnn_t(concat[h_t, r_p for each parent p in relation_tower_names])
        (no relation_dnn: the concat itself; no parents: h_t)
  r_t = AITModule_t([h_t, r_p ...])            for use_ait_module towers with parents
  logits_t = Dense(r_t)

Towers are computed parents first; the relation output r_t is what children see and what
the logit reads. A tower with relation towers and a label constraint weight alpha > 0
(constraint_weight: its ORDER_CALIBRATE_LOSS terms' weights) adds
alpha * mean(relu(p_t - p_parent)) per parent to the loss, reported as "<tower>_constraint".
"""
import keras
import tensorflow as tf

from mtrec.errors import ConfigError
from mtrec.layers.aitm import AITModule
from mtrec.layers.dnn import DNN
from mtrec.models.losses import ORDER_CALIBRATE_LOSS


def relation_order(towers) -> list[int]:
    """Indices of `towers` with every tower after its relation towers (config order
    otherwise). ConfigError on an unknown name or a cycle (config validation reports these
    with line numbers first)."""
    index = {t.tower_name: i for i, t in enumerate(towers)}
    for t in towers:
        for parent in t.relation_tower_names:
            if parent not in index:
                raise ConfigError(f"tower {t.tower_name!r}: relation tower {parent!r} is not a "
                                  "task tower.")
    order, done = [], set()
    while len(order) < len(towers):
        ready = [i for i, t in enumerate(towers) if i not in done
                 and all(index[p] in done for p in t.relation_tower_names)]
        if not ready:
            left = [towers[i].tower_name for i in range(len(towers)) if i not in done]
            raise ConfigError(f"relation_tower_names of towers {left} form a cycle.")
        order.append(ready[0])
        done.add(ready[0])
    return order


class RelationTowers:
    """Tower wiring of a MultiTaskModel whose towers have relation_tower_names,
    relation_dnn and use_ait_module: self.task_towers are the towers' DNNs (h_t), then
    relation layers (r_t) in dependency order, then one logit layer per tower.

    A subclass calls init_relation_towers() in __init__ and implements tower_inputs.
    """

    def init_relation_towers(self):
        l2 = self.l2_regularization
        self.order = relation_order(self.tower_configs)
        regularizer = keras.regularizers.L2(l2) if l2 else None
        # Per tower: how r_t is made from h_t and the parents' r_p.
        self.relation_layers = {}
        for t in self.tower_configs:
            name = t.tower_name
            if t.use_ait_module and t.relation_tower_names:
                self.relation_layers[name] = AITModule(
                    len(t.relation_tower_names), project_dim=t.ait_project_dim,
                    l2_regularization=l2, name=f"ait_{name}")
            elif t.HasField("relation_dnn"):
                self.relation_layers[name] = DNN.from_config_proto(t.relation_dnn, l2,
                                                                   name=f"relation_{name}")
        self.output_layers = [keras.layers.Dense(t.num_class, kernel_regularizer=regularizer,
                                                 name=f"output_{t.tower_name}")
                              for t in self.tower_configs]

    def make_tower(self, tower):
        """The tower's own DNN (h_t); the logit layer reads the relation output instead."""
        return DNN.from_config_proto(tower.dnn, self.l2_regularization,
                                     name=f"tower_{tower.tower_name}")

    def relation_outputs(self, groups, training=False) -> list:
        """r_t of every tower, in tower order."""
        towers = self.tower_configs
        hidden = [layer(x, training=training) for layer, x in
                  zip(self.task_towers, self.tower_inputs(groups, training))]
        relation = {}
        for i in self.order:
            t = towers[i]
            parents = [relation[p] for p in t.relation_tower_names]
            layer = self.relation_layers.get(t.tower_name)
            if isinstance(layer, AITModule):
                r = layer([hidden[i]] + parents, training=training)
            else:
                r = tf.concat([hidden[i]] + parents, axis=-1) if parents else hidden[i]
                if layer is not None:
                    r = layer(r, training=training)
            relation[t.tower_name] = r
        return [relation[t.tower_name] for t in towers]

    def tower_logits(self, groups, training=False) -> list:
        return [layer(r) for layer, r in zip(self.output_layers,
                                             self.relation_outputs(groups, training))]

    def constraint_weight(self, tower) -> float:
        """alpha of the label constraint of a tower with relation towers: the weights of its
        ORDER_CALIBRATE_LOSS terms."""
        return sum(l.weight for l in tower.losses if l.loss_type == ORDER_CALIBRATE_LOSS)

    def constraint_losses(self, outputs) -> dict:
        """{"<tower>_constraint": alpha * sum_p mean(relu(p_t - p_p))} of towers with relation
        towers and alpha = constraint_weight(tower) > 0."""
        losses = {}
        for t in self.tower_configs:
            alpha = self.constraint_weight(t) if t.relation_tower_names else 0.0
            if alpha <= 0:
                continue
            probs = outputs[f"probs_{t.tower_name}"]
            terms = [tf.reduce_mean(tf.nn.relu(probs - outputs[f"probs_{parent}"]))
                     for parent in t.relation_tower_names]
            losses[f"{t.tower_name}_constraint"] = alpha * tf.add_n(terms)
        return losses

    def compute_losses(self, outputs, labels):
        losses = super().compute_losses(outputs, labels)
        losses.update(self.constraint_losses(outputs))
        return losses
