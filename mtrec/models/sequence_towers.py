"""The hidden feature groups MultiTowerDIN and MultiTowerBST look up, from EasyRec's
model-level `seq_att_groups` (TF-free: config validation reads them too).

Each din_towers / bst_towers entry names a seq_att_groups entry by its group_name and gets a
feature group of that name, looked up by the model's FeatureGroups layer with the others:
  DIN: the entry as the group's one sequence_features (target attention), its attention MLP
       the tower's dnn -> outputs [attended history, key] (mtrec.features.embedding);
  BST: the entry's hist_seq then key features as feature_names, so their tables exist and
       their embeddings are regularised; the model reads the padded histories and the key
       itself (mtrec.backbone.layer.SequenceSource) for its Transformer layer.
"""
from mtrec.protos import feature_pb2


def attention_names(att, field: str) -> list[str]:
    """The features of one SeqAttGroupConfig's seq_att_map entries under `field`
    ("key", "hist_seq" or "aux_hist_seq"), in order."""
    return [n for m in att.seq_att_map for n in getattr(m, field)]


def din_attention(att, din_tower):
    """The SeqAttGroupConfig a DIN tower attends with: the entry, its seq_dnn the tower's
    dnn (when the tower has one)."""
    merged = feature_pb2.SeqAttGroupConfig()
    merged.CopyFrom(att)
    if din_tower.HasField("dnn"):
        merged.seq_dnn.CopyFrom(din_tower.dnn)
    return merged


# The model_class that builds each kind of sequence tower; under another class (e.g.
# MultiTower) they are ignored, as in EasyRec.
TOWER_CLASSES = {"din_towers": "MultiTowerDIN", "bst_towers": "MultiTowerBST"}


def built_towers(model_config, field: str) -> list:
    """The din_towers / bst_towers (`field`) of a multi_tower block that its model_class
    builds: all of them under their class, none under another."""
    if model_config.model_class != TOWER_CLASSES[field]:
        return []
    return list(getattr(model_config.multi_tower, field))


def tower_groups(model_config) -> list:
    """[FeatureGroupConfig] of the din_towers and bst_towers of a `multi_tower` block whose
    input names a seq_att_groups entry (config validation reports the others)."""
    if model_config.WhichOneof("model") != "multi_tower":
        return []
    entries = {att.group_name: att for att in model_config.seq_att_groups}
    groups, seen = [], set()
    for din in built_towers(model_config, "din_towers"):
        att = entries.get(din.input)
        if att is not None and din.input not in seen:
            seen.add(din.input)
            groups.append(feature_pb2.FeatureGroupConfig(
                group_name=din.input, sequence_features=[din_attention(att, din)]))
    for bst in built_towers(model_config, "bst_towers"):
        att = entries.get(bst.input)
        if att is not None and bst.input not in seen:
            seen.add(bst.input)
            names = attention_names(att, "hist_seq") + attention_names(att, "key")
            groups.append(feature_pb2.FeatureGroupConfig(
                group_name=bst.input, feature_names=list(dict.fromkeys(names))))
    return groups
