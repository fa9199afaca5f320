"""EasyRec's classic rank models (MultiTower, MultiTowerDIN, MultiTowerBST, DeepFM,
WideAndDeep, DCN, DLRM) and MMoE's deprecated `experts`: logits against numpy, learning on a
planted signal, a weight round trip, config errors with file:line, and EasyRec's sample
configs passing check."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import edit
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.features.feature import FeatureSet
from mtrec.models.registry import build_model

INPUTS = """\
train_config {
  optimizer_config { adam_optimizer { learning_rate {
    constant_learning_rate { learning_rate: 0.01 } } } }
  num_steps: 10
}
data_config {
  batch_size: 4
  label_fields: "clk"
  label_fields: "buy"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "buy" input_type: INT32 }
  input_fields { input_name: "user" input_type: STRING }
  input_fields { input_name: "item" input_type: INT32 }
  input_fields { input_name: "cate" input_type: INT32 }
  input_fields { input_name: "score" input_type: FLOAT }
  input_fields { input_name: "hist" input_type: STRING }
}
feature_config {
  features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }
  features { input_names: "item" num_buckets: 20 embedding_dim: 4 }
  features { input_names: "cate" num_buckets: 5 embedding_dim: 4 }
  features { input_names: "score" feature_type: RawFeature }
  features { input_names: "hist" feature_type: SequenceFeature num_buckets: 20
             embedding_dim: 4 separator: "|" }
}
"""
NO_BN = "use_bn: false"

MULTI_TOWER = INPUTS + f"""\
model_config {{
  model_class: "MultiTower"
  feature_groups {{ group_name: "user" feature_names: ["user", "score"] }}
  feature_groups {{ group_name: "item" feature_names: ["item", "cate"] }}
  multi_tower {{
    towers {{ input: "user" dnn {{ hidden_units: [8] {NO_BN} }} }}
    towers {{ input: "item" dnn {{ hidden_units: [8] {NO_BN} }} }}
    final_dnn {{ hidden_units: [8] {NO_BN} }}
    l2_regularization: 0.0
  }}
}}
"""
SEQ_ATT = """\
  seq_att_groups { group_name: "seq" seq_att_map { key: "item" hist_seq: "hist" } }
"""
DIN = edit('  model_class: "MultiTower"\n', '  model_class: "MultiTowerDIN"\n' + SEQ_ATT,
           edit("    final_dnn", f'    din_towers {{ input: "seq" dnn {{ hidden_units: [8, 1] '
                f'{NO_BN} }} }}\n    final_dnn', MULTI_TOWER))
BST = edit('  model_class: "MultiTower"\n', '  model_class: "MultiTowerBST"\n' + SEQ_ATT,
           edit("    final_dnn", '    bst_towers { input: "seq" seq_len: 4 multi_head_size: 2 }\n'
                "    final_dnn", MULTI_TOWER))
WIDE_DEEP_GROUPS = """\
  feature_groups { group_name: "wide" feature_names: ["user", "item", "cate"] wide_deep: WIDE }
  feature_groups { group_name: "deep" feature_names: ["user", "item", "cate", "score"] }
"""
DEEPFM = INPUTS + f"""\
model_config {{
  model_class: "DeepFM"
{WIDE_DEEP_GROUPS}  deepfm {{ dnn {{ hidden_units: [8] {NO_BN} }} l2_regularization: 0.0 }}
}}
"""
DEEPFM_FINAL = edit("l2_regularization: 0.0", f"final_dnn {{ hidden_units: [8] {NO_BN} }} "
                    "l2_regularization: 0.0", DEEPFM)
WIDE_AND_DEEP = edit('"DeepFM"', '"WideAndDeep"', edit("deepfm {", "wide_and_deep {", DEEPFM))
WIDE_AND_DEEP_FINAL = edit('"DeepFM"', '"WideAndDeep"',
                           edit("deepfm {", "wide_and_deep { wide_output_dim: 3",
                                DEEPFM_FINAL))
DCN = INPUTS + f"""\
model_config {{
  model_class: "DCN"
  feature_groups {{ group_name: "all" feature_names: ["user", "item", "cate", "score"] }}
  dcn {{
    deep_tower {{ input: "all" dnn {{ hidden_units: [8] {NO_BN} }} }}
    cross_tower {{ input: "all" cross_num: 2 }}
    final_dnn {{ hidden_units: [8] {NO_BN} }}
    l2_regularization: 0.0
  }}
}}
"""
DLRM = INPUTS + f"""\
model_config {{
  model_class: "DLRM"
  feature_groups {{ group_name: "dense" feature_names: ["score"] }}
  feature_groups {{ group_name: "sparse" feature_names: ["user", "item", "cate"] }}
  dlrm {{
    bot_dnn {{ hidden_units: [4] {NO_BN} }}
    top_dnn {{ hidden_units: [8] {NO_BN} }}
    l2_regularization: 0.0
  }}
}}
"""
MMOE_EXPERTS = INPUTS + f"""\
model_config {{
  model_class: "MMoE"
  feature_groups {{ group_name: "all" feature_names: ["user", "item", "cate", "score"] }}
  mmoe {{
    experts {{ expert_name: "a" dnn {{ hidden_units: [8] {NO_BN} }} }}
    experts {{ expert_name: "b" dnn {{ hidden_units: [12, 8] {NO_BN} }} }}
    task_towers {{ tower_name: "ctr" label_name: "clk" dnn {{ hidden_units: [4] {NO_BN} }} }}
    task_towers {{ tower_name: "cvr" label_name: "buy" dnn {{ hidden_units: [4] {NO_BN} }} }}
    l2_regularization: 0.0
  }}
}}
"""
# The models whose logits are not checked against numpy below: they must learn.
LEARNING = {"multi_tower": MULTI_TOWER, "din": DIN, "bst": BST, "mmoe_experts": MMOE_EXPERTS}


def _build(text, path="x.config"):
    pipeline = config_lib.parse_text(text, path)
    config_lib.prepare(pipeline, config_lib.Source(path, text))
    feature_set = FeatureSet(pipeline)
    return build_model(pipeline, feature_set), feature_set


def _columns(n=64, seed=0):
    """clk = 1 for items 0..9 (and, for the DIN/BST towers, when the item is in the
    history); buy = clk on even cates."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 20, n)
    hist = ["|".join(str(v) for v in rng.integers(0, 20, rng.integers(0, 5)))
            for _ in range(n)]
    in_hist = np.array([str(i) in h.split("|") for i, h in zip(item, hist)])
    clk = ((item < 10) | in_hist).astype("int32")
    cate = rng.integers(0, 5, n)
    return {"clk": tf.constant(clk), "buy": tf.constant(clk * (cate % 2 == 0)),
            "user": tf.constant([f"u{i}" for i in rng.integers(0, 30, n)]),
            "item": tf.constant(item.astype("int32")), "cate": tf.constant(cate.astype("int32")),
            "score": tf.constant(rng.uniform(0, 1, n).astype("float32")),
            "hist": tf.constant(hist)}


def _variables(model):
    return {path: v.numpy() for path, v in model.checkpoint_variables().items()}


def _relu(x):
    return np.maximum(x, 0.0)


def _randomise_tables(model, seed=1):
    rng = np.random.default_rng(seed)
    for table in model.feature_groups.tables.values():
        table.assign(rng.uniform(-0.5, 0.5, table.shape).astype("float32"))


def _lookups(model, features, names, suffix=""):
    """[numpy (batch, dim)] rows of each feature's table (its /wide table with suffix)."""
    tables = model.feature_groups.tables
    return [tables[name + suffix].numpy()[features[name]["ids"].numpy()] for name in names]


# ---------------------------------------------------------------------------
# Logits against numpy


def test_wide_and_deep_logit_is_wide_sum_plus_deep_logit():
    model, fs = _build(WIDE_AND_DEEP)
    features = fs.preprocess(_columns(16))
    model(features)
    _randomise_tables(model)
    got = model(features)["logits_clk"].numpy()
    v = _variables(model)
    wide = sum(_lookups(model, features, ["user", "item", "cate"], "/wide"))      # (b, 1)
    deep_in = np.concatenate(_lookups(model, features, ["user", "item", "cate"]) +
                             [features["score"]["values"].numpy()], axis=1)
    h = _relu(deep_in @ v["WideAndDeep/deep_feature/dense_0/kernel"]
              + v["WideAndDeep/deep_feature/dense_0/bias"])
    expected = (h @ v["WideAndDeep/tower_clk/logits/kernel"]
                + v["WideAndDeep/tower_clk/logits/bias"] + wide)[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # With final_dnn, [wide (wide_output_dim 3), deep (8)] feed it, and the wide tables have
    # 3 weights per id.
    final, fs = _build(WIDE_AND_DEEP_FINAL)
    final(fs.preprocess(_columns(4)))
    v = _variables(final)
    assert v["WideAndDeep/final_dnn/dense_0/kernel"].shape == (11, 8)
    assert v["tables/item/wide"].shape == (20, 3)


def test_deepfm_logit_is_wide_plus_fm_plus_deep_logit():
    model, fs = _build(DEEPFM)
    features = fs.preprocess(_columns(16))
    model(features)
    _randomise_tables(model)
    got = model(features)["logits_clk"].numpy()
    v = _variables(model)
    wide = sum(_lookups(model, features, ["user", "item", "cate"], "/wide"))[:, 0]
    embeddings = np.stack(_lookups(model, features, ["user", "item", "cate"]), axis=1)
    fm = 0.5 * ((embeddings.sum(1) ** 2) - (embeddings ** 2).sum(1)).sum(1)  # raw score left out
    deep_in = np.concatenate(list(embeddings.transpose(1, 0, 2)) +
                             [features["score"]["values"].numpy()], axis=1)
    h = _relu(deep_in @ v["DeepFM/deep_feature/dense_0/kernel"]
              + v["DeepFM/deep_feature/dense_0/bias"])
    deep = (h @ v["DeepFM/tower_clk/logits/kernel"] + v["DeepFM/tower_clk/logits/bias"])[:, 0]
    np.testing.assert_allclose(got, wide + fm + deep, rtol=1e-5, atol=1e-5)
    # With final_dnn, [wide (1), FM per dimension (4), deep (8)] feed it: 13 inputs.
    final, fs = _build(DEEPFM_FINAL)
    final(fs.preprocess(_columns(4)))
    assert _variables(final)["DeepFM/final_dnn/dense_0/kernel"].shape == (13, 8)


def test_dlrm_dot_interaction_against_numpy():
    model, fs = _build(DLRM)
    features = fs.preprocess(_columns(16))
    model(features)
    _randomise_tables(model)
    got = model(features)["logits_clk"].numpy()
    v = _variables(model)
    dense = _relu(features["score"]["values"].numpy() @ v["DLRM/bot_dnn/dense_0/kernel"]
                  + v["DLRM/bot_dnn/dense_0/bias"])                             # (b, 4)
    sparse = _lookups(model, features, ["user", "item", "cate"])
    vectors = [dense] + sparse
    dots = [np.sum(vectors[i] * vectors[j], axis=1, keepdims=True)
            for i in range(4) for j in range(i)]                               # 6 pairs
    x = np.concatenate(dots + sparse, axis=1)                                  # (b, 18)
    h = _relu(x @ v["DLRM/top_dnn/dense_0/kernel"] + v["DLRM/top_dnn/dense_0/bias"])
    expected = (h @ v["DLRM/tower_clk/logits/kernel"] + v["DLRM/tower_clk/logits/bias"])[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_dcn_cross_tower_against_numpy():
    model, fs = _build(DCN)
    features = fs.preprocess(_columns(16))
    model(features)
    _randomise_tables(model)
    got = model(features)["logits_clk"].numpy()
    v = _variables(model)
    x0 = np.concatenate(_lookups(model, features, ["user", "item", "cate"]) +
                        [features["score"]["values"].numpy()], axis=1)          # (b, 13)
    x = x0
    for i in range(2):
        u = v[f"DCN/cross_layer_{i}/project/kernel"]                            # (13, 1)
        w, b = v[f"DCN/cross_layer_{i}/dense/kernel"], v[f"DCN/cross_layer_{i}/dense/bias"]
        x = x0 * ((x @ u) @ w + b) + x
    deep = _relu(x0 @ v["DCN/dnn/dense_0/kernel"] + v["DCN/dnn/dense_0/bias"])
    h = _relu(np.concatenate([deep, x], axis=1) @ v["DCN/final_dnn/dense_0/kernel"]
              + v["DCN/final_dnn/dense_0/bias"])
    expected = (h @ v["DCN/tower_clk/logits/kernel"] + v["DCN/tower_clk/logits/bias"])[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_sequence_towers_wiring():
    din, fs = _build(DIN)
    din(fs.preprocess(_columns(8)))
    v = _variables(din)
    # The DIN tower's dnn is the attention MLP over [q, k, q-k, q*k] (4 x 4 wide).
    assert v["MultiTowerDIN/feature_groups/seq_att_seq_seq/score_mlp/dense_0/kernel"].shape \
        == (16, 8)
    # final_dnn reads two towers (8 + 8), the attended history (4) and the key (4).
    assert v["MultiTowerDIN/final_dnn/dense_0/kernel"].shape == (24, 8)
    assert "MultiTowerDIN/user_fea_bn/moving_mean" in v
    bst, fs = _build(BST)
    bst(fs.preprocess(_columns(8)))
    v = _variables(bst)
    # seq_len 4 tokens (3 history items and the key) of width 4: 16 more inputs.
    assert v["MultiTowerBST/final_dnn/dense_0/kernel"].shape == (32, 8)
    assert not any("position_embeddings" in p for p in v)
    # Under model_class MultiTower, din_towers are ignored (as in EasyRec).
    plain, fs = _build(edit('"MultiTowerDIN"', '"MultiTower"', DIN))
    plain(fs.preprocess(_columns(8)))
    assert _variables(plain)["MultiTower/final_dnn/dense_0/kernel"].shape == (16, 8)


# ---------------------------------------------------------------------------
# Training


@pytest.mark.parametrize("name", list(LEARNING))
def test_model_learns_the_planted_signal(name):
    keras.utils.set_random_seed(0)
    model, fs = _build(LEARNING[name])
    columns = _columns(128)
    features = fs.preprocess(columns)
    labels = {"clk": columns["clk"], "buy": columns["buy"]}
    outputs = model(features)
    towers = ["ctr", "cvr"] if name == "mmoe_experts" else ["clk"]
    assert sorted(k for k in outputs if k.startswith("probs_")) == \
        sorted(f"probs_{t}" for t in towers)
    assert all(outputs[f"probs_{t}"].shape == (128,) for t in towers)
    optimizer = keras.optimizers.Adam(0.02)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            losses = model.compute_losses(model(features, training=True), labels)
            total = tf.add_n(list(losses.values()))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return total

    first = float(step())
    for _ in range(60):
        last = float(step())
    assert last < 0.75 * first, (first, last)


def test_weights_round_trip_through_a_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    model, fs = _build(BST)
    features = fs.preprocess(_columns(8))
    before = model(features)["probs_clk"].numpy()

    class Variables(tf.Module):
        def __init__(self, variables):
            super().__init__()
            self.by_path = variables

    path = tf.train.Checkpoint(model=Variables(model.checkpoint_variables())).save(
        str(tmp_path / "ckpt"))
    keras.utils.set_random_seed(1)
    clone, _ = _build(BST)
    clone(features)
    assert set(clone.checkpoint_variables()) == set(model.checkpoint_variables())
    assert not np.allclose(clone(features)["probs_clk"].numpy(), before)
    tf.train.Checkpoint(model=Variables(clone.checkpoint_variables())).restore(
        path).assert_consumed()
    np.testing.assert_allclose(clone(features)["probs_clk"].numpy(), before, rtol=1e-6)


# ---------------------------------------------------------------------------
# Config errors


def _line(text, snippet, nth=1):
    return [i for i, line in enumerate(text.splitlines(), 1) if snippet in line][nth - 1]


def assert_config_error_at(bad, snippet, message):
    """Building the config text `bad` fails with `message` at the line of `snippet`."""
    with pytest.raises(ConfigError) as error:
        _build(bad)
    where = f"x.config:{_line(bad, snippet)}: "
    lines = [line.strip() for line in str(error.value).splitlines()]
    assert any(line.startswith(where) and message in line for line in lines), \
        (where, message, str(error.value))


@pytest.mark.parametrize("text, old, new, snippet, message", [
    (DEEPFM, 'group_name: "wide"', 'group_name: "lin"', 'model_class',
     "DeepFM reads the feature group 'wide' (the linear part); add `feature_groups"),
    (DEEPFM, '"score"] }', '"score"] wide_deep: WIDE }', 'group_name: "deep"',
     "DeepFM: feature group 'deep' (the DNN input) must be wide_deep: DEEP."),
    (DEEPFM, "deepfm {", "deepfm { wide_output_dim: 2", "wide_output_dim",
     "deepfm without final_dnn adds the wide part to the logits, so wide_output_dim (2) "
     "must equal num_class (1)"),
    (DEEPFM, 'input_names: "cate" num_buckets: 5 embedding_dim: 4',
     'input_names: "cate" num_buckets: 5 embedding_dim: 6', 'group_name: "deep"',
     "deepfm: the FM pairs the embeddings of feature group 'deep', so they need one "
     "embedding_dim; they differ: 'user' (4), 'cate' (6)."),
    (DLRM, "bot_dnn { hidden_units: [4]", "bot_dnn { hidden_units: [3]", "bot_dnn",
     "the bot_dnn output (3 wide) is dotted with the sparse embeddings (4 wide); make the "
     "last bot_dnn hidden_units 4."),
    (DLRM, "l2_regularization: 0.0", 'arch_interaction_op: "sum"', "arch_interaction_op",
     'dlrm.arch_interaction_op must be "dot" or "cat", got \'sum\'.'),
    (BST, "multi_head_size: 2", "multi_head_size: 3", "multi_head_size",
     "bst_towers 'seq': multi_head_size 3 must divide the history's embedding width 4."),
    (BST, "seq_len: 4", "seq_len: 1", "seq_len",
     "bst_towers 'seq': seq_len must be at least 2"),
    (DIN, 'din_towers { input: "seq"', 'din_towers { input: "sq"', 'din_towers',
     "multi_tower.din_towers: input 'sq' is not the group_name of a seq_att_groups entry; "
     "seq_att_groups: seq."),
    (DIN, 'key: "item"', 'key: "hist"', 'key: "hist"',
     "seq_att_groups 'seq': key 'hist' is a SequenceFeature"),
    (DIN, 'group_name: "seq"', 'group_name: "user"', 'group_name: "user"',
     "seq_att_groups 'user' has the name of a feature group"),
    (MULTI_TOWER, 'towers { input: "item"', 'towers { input: "items"', 'input: "items"',
     "multi_tower towers: input 'items' is not a feature group; groups: user, item."),
    (MULTI_TOWER, "l2_regularization: 0.0", 'l2_regularization: 0.0 task_towers { } '
     'task_towers { tower_name: "b" }', "task_towers",
     "MultiTower has one output but multi_tower has 2 task_towers"),
    (MULTI_TOWER, "  multi_tower {", '  backbone { blocks { name: "x" inputs { '
     'feature_group_name: "user" } } }\n  multi_tower {', "backbone",
     "MultiTower reads its feature groups directly, so a backbone would be unused"),
    (MMOE_EXPERTS, '    experts { expert_name: "a"', '    num_expert: 2\n'
     '    experts { expert_name: "a"', "experts",
     "mmoe: give either `experts { ... }`"),
    (MMOE_EXPERTS, "hidden_units: [12, 8]", "hidden_units: [12, 6]", "experts",
     "mmoe experts must end with one width (the gates mix their outputs), got 8, 6."),
    (MMOE_EXPERTS, "  mmoe {", SEQ_ATT + "  mmoe {", "seq_att_groups",
     "model_config.seq_att_groups are read by the din_towers / bst_towers of model_class "
     "MultiTowerDIN / MultiTowerBST"),
], ids=["deepfm_no_wide", "deepfm_wide_deep", "deepfm_wide_output_dim", "deepfm_fm_widths",
        "dlrm_bot_width", "dlrm_op", "bst_heads", "bst_seq_len", "din_input", "din_key",
        "seq_att_name", "tower_input", "two_towers", "backbone", "mmoe_both", "mmoe_widths",
        "seq_att_elsewhere"])
def test_config_errors_name_file_and_line(text, old, new, snippet, message):
    assert_config_error_at(edit(old, new, text), snippet, message)


def test_rank_model_losses_and_warnings():
    # model_config.losses are the rank model's one output's terms (multi_tower_on_taobao).
    text = edit("  multi_tower {", "  losses { loss_type: CLASSIFICATION weight: 0.5 }\n"
                "  losses { loss_type: PAIR_WISE_LOSS }\n  multi_tower {", MULTI_TOWER)
    pipeline = config_lib.parse_text(text, "x.config")
    config_lib.prepare(pipeline, config_lib.Source("x.config", text))
    (tower,) = config_lib.task_towers(pipeline.model_config)
    assert (tower.tower_name, tower.label_name, len(tower.losses)) == ("clk", "clk", 2)
    text = edit('"MultiTowerDIN"', '"MultiTower"', DIN)
    warnings = config_lib.prepare(config_lib.parse_text(text, "x.config"),
                                  config_lib.Source("x.config", text))
    assert any("MultiTower ignores them" in w for w in warnings), warnings
    assert any("seq_att_groups 'seq' is read by no din_towers" in w for w in warnings)


# ---------------------------------------------------------------------------
# EasyRec's sample configs

EASYREC_SAMPLES = "/work/shared/easyrec/samples/model_config"
PASSING = [
    "multi_tower_on_taobao.config", "multi_tower_best_export_on_taobao.config",
    "multi_tower_ckpt_keep_3_on_taobao.config", "multi_tower_early_stop_on_taobao.config",
    "multi_tower_mirrored_strategy_on_taobao.config",
    "multi_tower_multi_worker_mirrored_strategy_on_taobao.config",
    "multi_tower_on_taobao_gauc.config", "multi_tower_on_taobao_session_auc.config",
    "multi_tower_on_taobao_unblanace.config", "multi_tower_ps_strategy_2gpu_on_taobao.config",
    "multi_tower_ps_strategy_on_taobao.config", "multi_tower_save_secs_on_taobao.config",
    "share_embedding_not_used.config", "export_filter_input.config", "rtp.config",
    "deepfm_combo_on_avazu_ctr.config", "deepfm_combo_on_avazu_adamw_ctr.config",
    "deepfm_combo_on_avazu_embed_adagrad.config", "deepfm_combo_on_avazu_emblr_ctr.config",
    "deepfm_combo_on_avazu_feature_name.config", "deepfm_combo_on_avazu_reg.config",
    "deepfm_combo_on_avazu_sigmoid_l2.config", "deepfm_distribute_eval_combo_on_avazu_ctr.config",
    "deepfm_distribute_eval_multi_cls_on_avazu_ctr.config",
    "deepfm_multi_cls_on_avazu_ctr.config", "deepfm_vocab_list_on_avazu_ctr.config",
    "deepfm_vocab_list_on_taobao.config", "deppfm_seq_attn_on_taobao.config",
    "wide_and_deep_on_avazau_ctr.config", "wide_and_deep_no_final_on_avazau_ctr.config",
    "wide_and_deep_on_sequence_feature_taobao.config", "wide_and_deep_two_opti.config",
    "dcn_on_taobao.config", "dcn_f1_on_taobao.config", "dcn_on_sequence_feature_taobao.config",
    "dlrm_on_taobao.config", "din_on_taobao.config", "din_on_sequence_feature_taobao.config",
    "bst_on_taobao.config", "mmoe_on_taobao_deprecated.config",
    "din_varitional_dropout_on_taobao.config", "din_on_gzip_data.config",
]


@pytest.mark.skipif(not os.path.isdir(EASYREC_SAMPLES),
                    reason=f"EasyRec's samples are not at {EASYREC_SAMPLES}")
def test_easyrec_samples_pass_check(tmp_path):
    failed = {}
    for name in PASSING:
        try:
            config_lib.load(os.path.join(EASYREC_SAMPLES, name))
        except ConfigError as e:
            failed[name] = str(e)
    # Its export asset is a path of EasyRec's repository: only the path is overridden.
    asset = tmp_path / "fg.json"
    asset.write_text("{}")
    config_lib.load(os.path.join(EASYREC_SAMPLES, "din_on_taobao_latest_export.config"),
                    sets=[f"export_config.asset_files={asset}"])
    assert not failed, failed
