"""MultiTower (EasyRec's MultiTower, MultiTowerDIN and MultiTowerBST): a single-output rank
model.

  towers:      per feature group, its features batch-normalised, then its dnn
  din_towers:  DIN target attention over a seq_att_groups entry -> [attended history, key]
               (the feature groups' TargetAttention, mtrec.models.sequence_towers)
  bst_towers:  mtrec.layers.bst.BST over a seq_att_groups entry: its history cut or padded to
               seq_len - 1 items and the key as the last token, one encoder layer with
               multi_head_size heads (width = the history's, ReLU feed-forward of that
               width, no dropout, no position embeddings), every token's output flattened
  all concatenated -> final_dnn -> the tower (model_config's loss_type / num_class) -> logits
"""
import tensorflow as tf

from mtrec.backbone.layer import SequenceSource
from mtrec.features.width import feature_width
from mtrec.layers.bst import BST
from mtrec.layers.dnn import DNN, DebiasedBatchNormalization
from mtrec.models.base import FEATURES, MultiTaskModel
from mtrec.models.sequence_towers import attention_names, built_towers, tower_groups


class MultiTower(MultiTaskModel):

    def __init__(self, pipeline, feature_set, **kwargs):
        super().__init__(pipeline, feature_set, **kwargs)
        p, l2 = self.params, self.l2_regularization
        self.input_norms = [DebiasedBatchNormalization(name=f"{t.input}_fea_bn")
                            for t in p.towers]
        self.tower_dnns = [DNN.from_config_proto(t.dnn, l2, name=f"{t.input}_dnn")
                           for t in p.towers]
        model_config = pipeline.model_config
        entries = {att.group_name: att for att in model_config.seq_att_groups}
        # Under model_class MultiTower these are empty (ignored, as in EasyRec).
        self.din_towers = built_towers(model_config, "din_towers")
        self.bst_towers = built_towers(model_config, "bst_towers")
        self.sequences = SequenceSource(self.feature_groups)
        self.bsts = []
        for t in self.bst_towers:
            width = sum(feature_width(feature_set[n].config, False)
                        for n in attention_names(entries[t.input], "hist_seq"))
            self.bsts.append(BST(
                hidden_size=width, num_hidden_layers=1, num_attention_heads=t.multi_head_size,
                intermediate_size=width, hidden_act="relu", hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, max_position_embeddings=t.seq_len - 1,
                use_position_embeddings=False, output_all_token_embeddings=True,
                target_item_position="tail", l2_regularization=l2, name=f"{t.input}_bst"))
        self.final_dnn = DNN.from_config_proto(p.final_dnn, l2, name="final_dnn")

    def extra_groups(self, model_config):
        return tower_groups(model_config)

    def tower_inputs(self, groups, training):
        p = self.params
        parts = [dnn(norm(self.group_tensor(groups, [t.input]), training=training),
                     training=training)                                   # (batch, d_t)
                 for t, norm, dnn in zip(p.towers, self.input_norms, self.tower_dnns)]
        # [attended history (batch, d_hist), key (batch, d_key)] per DIN tower.
        parts += [self.group_tensor(groups, [t.input]) for t in self.din_towers]
        for t, bst in zip(self.bst_towers, self.bsts):
            hist, mask, key = self.sequences(groups[FEATURES], t.input)
            parts.append(bst(hist, mask, key, training=training))   # (batch, seq_len * d)
        x = tf.concat(parts, axis=-1)
        return [self.final_dnn(x, training=training)]
