"""CMBF and UNITER (issues #17, #22): the attention and cross-modal block against numpy,
token embeddings, padding and position-cut invariances, output widths, config errors with
file:line, EasyRec's samples passing check, and tiny CMBF / UNITER / DBMTL-with-bottom_uniter
configs trained, exported and served by plain TensorFlow."""
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import edit
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.layers.cmbf import CMBF, CrossModalBlock, ProjectedAttention
from mtrec.layers.token_embeddings import TokenEmbeddings
from mtrec.layers.uniter import Uniter
from test_rank_models import _build, assert_config_error_at

RNG = np.random.default_rng(0)


def _normal(*shape):
    return tf.constant(RNG.normal(size=shape).astype("float32"))


def _np_attention(layer, query, context, mask):
    """ProjectedAttention in numpy from the layer's weights."""
    def project(dense, x):
        y = x @ dense.kernel.numpy() + dense.bias.numpy()
        return y.reshape(y.shape[:2] + (layer.num_heads, layer.size_per_head))
    q, k, v = (project(layer.query, query), project(layer.key, context),
               project(layer.value, context))
    scores = np.einsum("bfnh,btnh->bnft", q, k) / math.sqrt(layer.size_per_head)
    if mask is not None:
        scores = np.where(mask[:, None, None, :], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bnft,btnh->bfnh", probs, v)
    return out.reshape(out.shape[:2] + (-1,))


def _np_layer_norm(norm, x):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.epsilon) * norm.gamma.numpy() + norm.beta.numpy()


def test_projected_attention_matches_numpy():
    layer = ProjectedAttention(num_heads=2, size_per_head=3, name="att")
    query, context = _normal(2, 4, 5), _normal(2, 6, 7)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    got = layer(query, context, other_mask=tf.constant(mask)).numpy()
    assert got.shape == (2, 4, 6)
    want = _np_attention(layer, query.numpy(), context.numpy(), mask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # No mask: every context position counts.
    np.testing.assert_allclose(layer(query, context).numpy(),
                               _np_attention(layer, query.numpy(), context.numpy(), None),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="num_heads >= 1 and size_per_head >= 1"):
        ProjectedAttention(num_heads=0, size_per_head=3)


def test_cross_modal_block_matches_numpy():
    block = CrossModalBlock(num_heads=2, size_per_head=2, intermediate_size=5, name="cross")
    x, other = _normal(3, 2, 6), _normal(3, 4, 5)
    other_mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], bool)
    got = block(x, other, other_mask=tf.constant(other_mask)).numpy()
    c = _np_attention(block.cross, x.numpy(), other.numpy(), other_mask)
    s = _np_attention(block.self_attention, c, c, None)
    a = _np_layer_norm(block.attention_norm, c + s)
    hidden = np.maximum(a @ block.intermediate.kernel.numpy() + block.intermediate.bias.numpy(),
                        0)
    f = hidden @ block.output_dense.kernel.numpy() + block.output_dense.bias.numpy()
    want = _np_layer_norm(block.output_norm, a + f)
    assert got.shape == (3, 2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_token_embeddings_add_type_and_positions_then_normalise():
    layer = TokenEmbeddings(max_positions=5, name="tok")
    x, token_type = _normal(2, 3, 4), _normal(4)
    got = layer(x, token_type).numpy()
    positions = layer.positions.numpy()[:3]
    want = _np_layer_norm(layer.norm, x.numpy() + token_type.numpy() + positions[None])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="got 6 tokens but has 5 position embeddings"):
        TokenEmbeddings(max_positions=5)(_normal(1, 6, 4))


CMBF_ARGS = dict(multi_head_num=2, image_multi_head_num=2, image_head_size=4,
                 image_self_attention_layer_num=1, text_head_size=4, text_multi_head_num=2,
                 text_self_attention_layer_num=1, cross_modal_layer_num=2,
                 image_cross_head_size=3, text_cross_head_size=5, max_position_embeddings=4,
                 use_token_type=True, text_seq_emb_dropout_prob=0.0)


def _multimodal_inputs(lengths=((3, 1, 0), (2, 2, 1)), padding=0.0, max_len=None):
    """image (3, 1, 8), general (3, 2, 6), two text sequences whose padded positions hold
    `padding`."""
    image, general = _normal(3, 1, 8), _normal(3, 2, 6)
    texts = []
    for i, rows in enumerate(lengths):
        n = max_len or max(rows)
        seq = RNG.normal(size=(3, n, 5)).astype("float32")
        mask = np.arange(n)[None] < np.array(rows)[:, None]
        seq = np.where(mask[..., None], seq, padding).astype("float32")
        texts.append((seq, mask))
    return image, general, texts


@pytest.mark.parametrize("image_args, width", [
    (dict(image_feature_patch_num=2), 2 * 3),        # 2 patches of 4 values -> 8 wide tokens
    (dict(image_feature_dim=5), 2 * 3),              # 5 value tokens
    (dict(image_self_attention_layer_num=0), 2 * 3),  # projected to 2 * 3, no encoder
])
def test_cmbf_widths_and_padding_invariance(image_args, width):
    layer = CMBF(**{**CMBF_ARGS, **image_args}, name="cmbf")
    image, general, texts = _multimodal_inputs()
    inputs = {"image": image, "general": general,
              "text": [(tf.constant(s), tf.constant(m)) for s, m in texts]}
    out = layer(inputs).numpy()
    # image mean (2 * 3) + two general tokens and two pooled sequences, 2 * 5 wide each.
    assert out.shape == (3, width + 4 * 2 * 5)
    # Padded text positions are never attended to nor pooled: other values there change
    # nothing; an empty sequence pools to zeros before the concatenation.
    garbage = [(np.where(m[..., None], s, 7.0).astype("float32"), m) for s, m in texts]
    again = layer({**inputs, "text": [(tf.constant(s), tf.constant(m)) for s, m in garbage]})
    np.testing.assert_allclose(again.numpy(), out, rtol=1e-5, atol=1e-5)
    # Row 2's first sequence is empty: its pooled part (after image, two general tokens).
    np.testing.assert_array_equal(out[2, width + 20:width + 30], 0.0)
    assert np.all(out[:2, width + 20:width + 30] != 0.0)


def test_cmbf_single_modalities_and_errors():
    image, general, texts = _multimodal_inputs()
    only_image = CMBF(**{**CMBF_ARGS, "image_feature_patch_num": 2}, name="img")
    assert only_image({"image": image}).shape == (3, 8)  # encoder width 4 * 2, mean
    only_text = CMBF(**CMBF_ARGS, name="txt")
    text = [(tf.constant(s), tf.constant(m)) for s, m in texts]
    assert only_text({"general": general, "text": text}).shape == (3, 4 * 8)
    with pytest.raises(ValueError, match="image_feature_patch_num 3 must divide the image "
                                         "feature's width 8"):
        CMBF(**{**CMBF_ARGS, "image_feature_patch_num": 3})({"image": image})
    with pytest.raises(ValueError, match="needs image_feature_dim >= 1"):
        CMBF(**CMBF_ARGS)({"image": image})
    with pytest.raises(ValueError, match="text encoder's width 6 must be a multiple of "
                                         "multi_head_num 4"):
        CMBF(**{**CMBF_ARGS, "multi_head_num": 4, "text_head_size": 3})({"general": general})
    with pytest.raises(ValueError, match="unknown inputs \\['video'\\]"):
        CMBF(**CMBF_ARGS)({"video": image})


def test_uniter_cls_output_padding_and_position_cut():
    layer = Uniter(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=6, hidden_act="swish", hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0, max_position_embeddings=3, name="uniter")
    image, general, texts = _multimodal_inputs(lengths=((3, 1, 0), (2, 3, 1)), max_len=5)
    text = [(tf.constant(s), tf.constant(m)) for s, m in texts]
    out = layer({"image": image, "general": general, "text": text}).numpy()
    assert out.shape == (3, 8)
    # One token type per image / general / each text sequence.
    assert tuple(layer.token_types.shape) == (4, 8) and layer.text_type == 2
    # Positions past max_position_embeddings (3) are cut: values there change nothing,
    # nor do padded positions.
    cut = [(np.concatenate([np.where(m[:, :3, None], s[:, :3], 5.0),
                            np.full_like(s[:, 3:], 9.0)], axis=1).astype("float32"), m)
           for s, m in texts]
    again = layer({"image": image, "general": general,
                   "text": [(tf.constant(s), tf.constant(m)) for s, m in cut]})
    np.testing.assert_allclose(again.numpy(), out, rtol=1e-5, atol=1e-5)
    # A single source has no token types.
    alone = Uniter(8, 1, 2, 6, max_position_embeddings=3, name="alone")
    assert alone({"general": general}).shape == (3, 8) and alone.token_types is None
    with pytest.raises(ValueError, match="hidden_size 6 must be a multiple of "
                                         "num_attention_heads 4"):
        Uniter(6, 1, 4, 6)


# ---------------------------------------------------------------------------
# Models from configs

INPUTS = """\
train_config {
  optimizer_config { adam_optimizer { learning_rate {
    constant_learning_rate { learning_rate: 0.01 } } } }
  num_steps: 4
  save_checkpoints_steps: 4
  log_step_count_steps: 2
}
data_config {
  batch_size: 8
  label_fields: "clk"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "rating" input_type: FLOAT }
  input_fields { input_name: "user" input_type: STRING }
  input_fields { input_name: "item" input_type: INT32 }
  input_fields { input_name: "title" input_type: STRING }
  input_fields { input_name: "genres" input_type: STRING }
  input_fields { input_name: "image" input_type: STRING }
  input_fields { input_name: "score" input_type: FLOAT }
}
feature_config {
  features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }
  features { input_names: "item" num_buckets: 50 embedding_dim: 4 }
  features { input_names: "title" feature_type: SequenceFeature separator: " "
             max_seq_len: 4 hash_bucket_size: 50 embedding_dim: 4 }
  features { input_names: "genres" feature_type: SequenceFeature separator: "|"
             max_seq_len: 3 hash_bucket_size: 20 embedding_dim: 4 }
  features { input_names: "image" feature_type: RawFeature separator: "|" raw_input_dim: 6 }
  features { input_names: "score" feature_type: RawFeature }
}
"""
GROUPS = """\
  feature_groups { group_name: "image" feature_names: "image" }
  feature_groups { group_name: "general" feature_names: ["user", "item"] }
  feature_groups { group_name: "text" feature_names: ["title", "genres"] }
  feature_groups { group_name: "other" feature_names: "score" }
"""
CMBF_TOWER = """\
      multi_head_num: 2 image_multi_head_num: 2 image_head_size: 2
      image_feature_patch_num: 2 image_self_attention_layer_num: 1
      text_head_size: 2 text_multi_head_num: 2 text_self_attention_layer_num: 1
      cross_modal_layer_num: 1 image_cross_head_size: 2 text_cross_head_size: 2
      max_position_embeddings: 4 use_token_type: true
      other_feature_dnn { hidden_units: [3] }
"""
CMBF_CONFIG = INPUTS + f"""\
model_config {{
  model_class: "CMBF"
{GROUPS}  cmbf {{
    config {{
{CMBF_TOWER}    }}
    final_dnn {{ hidden_units: [6] }}
  }}
}}
"""
UNITER_TOWER = """\
      hidden_size: 4 num_attention_heads: 2 num_hidden_layers: 1 intermediate_size: 6
      hidden_act: "swish" max_position_embeddings: 4
      other_feature_dnn { hidden_units: [3] }
"""
UNITER_CONFIG = INPUTS + f"""\
model_config {{
  model_class: "Uniter"
{GROUPS}  uniter {{
    config {{
{UNITER_TOWER}    }}
    final_dnn {{ hidden_units: [6] }}
  }}
}}
"""
DBMTL_CONFIG = edit('  label_fields: "clk"\n', '  label_fields: "clk"\n  label_fields: "rating"\n',
                    INPUTS) + f"""\
model_config {{
  model_class: "DBMTL"
{GROUPS}  dbmtl {{
    bottom_cmbf {{
{CMBF_TOWER}    }}
    task_towers {{ tower_name: "classify" label_name: "clk" dnn {{ hidden_units: [4] }}
                  relation_dnn {{ hidden_units: [3] }} }}
    task_towers {{ tower_name: "rating" label_name: "rating" loss_type: L2_LOSS
                  dnn {{ hidden_units: [4] }} relation_tower_names: ["classify"]
                  relation_dnn {{ hidden_units: [3] }} }}
  }}
}}
"""


def _columns(n, seed):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(12)]
    return {
        "clk": rng.integers(0, 2, n), "rating": rng.integers(1, 6, n).astype(float),
        "user": [f"u{i}" for i in rng.integers(0, 20, n)], "item": rng.integers(0, 50, n),
        # 0 to 6 words (cut to max_seq_len 4), and empty cells.
        "title": [" ".join(rng.choice(words, rng.integers(0, 7))) for _ in range(n)],
        "genres": ["|".join(rng.choice(["a", "b", "c"], rng.integers(0, 3)))
                   for _ in range(n)],
        "image": ["|".join(f"{v:.3f}" for v in rng.normal(size=6)) for _ in range(n)],
        "score": np.round(rng.random(n), 3),
    }


def _write_csv(path, columns):
    names = list(columns)
    n = len(columns[names[0]])
    with open(path, "w") as f:
        for i in range(n):
            f.write(",".join(str(columns[k][i]) for k in names) + "\n")


def _tensors(columns):
    """Columns as the tensors of their input_fields types."""
    types = {"clk": tf.int32, "item": tf.int32, "rating": tf.float32, "score": tf.float32}
    return {k: tf.constant(v, types.get(k, tf.string)) for k, v in columns.items()}


def test_dbmtl_bottom_cmbf_forward_and_names():
    model, feature_set = _build(DBMTL_CONFIG)
    columns = _columns(5, seed=3)
    out = model(feature_set.preprocess(_tensors(columns)))
    assert out["probs_classify"].shape == (5,) and out["y_rating"].shape == (5,)
    paths = [v.path for v in model.weights]
    assert any(p.startswith("DBMTL/bottom_cmbf/cmbf/text_cross_0/") for p in paths), paths
    assert any(p.startswith("DBMTL/bottom_cmbf/other_dnn/") for p in paths)


@pytest.mark.parametrize("text, old, new, snippet, message", [
    (CMBF_CONFIG, "image_feature_patch_num: 2", "image_feature_patch_num: 4",
     "image_feature_patch_num", "cmbf.config.image_feature_patch_num 4 must divide the image "
     "feature's width 6."),
    (CMBF_CONFIG, 'feature_names: ["title", "genres"]', 'feature_names: ["title", "item"]',
     'feature_names: ["title", "item"]', "the 'text' group holds SequenceFeatures"),
    (CMBF_CONFIG, "max_position_embeddings: 4", "max_position_embeddings: 3",
     "max_position_embeddings", "cmbf.config.max_position_embeddings (3) must be at least "
     "the max_seq_len of text feature 'title' (4)."),
    (CMBF_CONFIG, "text_head_size: 2 text_multi_head_num: 2",
     "text_head_size: 3 text_multi_head_num: 1", "multi_head_num: 2",
     "the text encoder's width text_head_size * text_multi_head_num = 3 must be a multiple "
     "of multi_head_num 2."),
    (CMBF_CONFIG, '"item"] }', '"item"] wide_deep: WIDE }', 'group_name: "general"',
     "cmbf.config: feature group 'general' must be wide_deep: DEEP."),
    (UNITER_CONFIG, "num_attention_heads: 2", "num_attention_heads: 3", "num_attention_heads",
     "uniter.config.hidden_size 4 must be a multiple of num_attention_heads 3."),
    (UNITER_CONFIG, 'hidden_act: "swish"', 'hidden_act: "swishy"', "hidden_act",
     "unknown activation 'swishy'"),
    (DBMTL_CONFIG, "    bottom_cmbf {", "    bottom_dnn { hidden_units: [4] }\n"
     "    bottom_cmbf {", "bottom_dnn", "dbmtl: bottom_cmbf replaces the bottom, so bottom_dnn "
     "would be unused"),
    (DBMTL_CONFIG, '"user", "item"] }', '"user", "score"] }', 'group_name: "general"',
     "the features of group 'general' become tokens of one tensor, so they need one width; "
     "they differ: 'user' (4), 'score' (1)."),
], ids=["patch", "text_kind", "positions", "text_heads", "wide", "uniter_heads",
        "uniter_act", "dbmtl_bottom_dnn", "general_widths"])
def test_config_errors_name_file_and_line(text, old, new, snippet, message):
    assert_config_error_at(edit(old, new, text), snippet, message)


def test_unused_groups_and_text_without_max_seq_len_warn():
    text = edit('max_seq_len: 4 hash_bucket_size: 50', 'hash_bucket_size: 50',
                edit(GROUPS, GROUPS + '  feature_groups { group_name: "extra" '
                     'feature_names: "item" }\n', UNITER_CONFIG))
    warnings = config_lib.prepare(config_lib.parse_text(text, "x.config"),
                                  config_lib.Source("x.config", text))
    assert any("feature group 'extra' is unused" in w for w in warnings), warnings
    assert any("text feature 'title' has no max_seq_len; its sequences keep their first "
               "max_position_embeddings (4) tokens" in w for w in warnings), warnings


EASYREC_SAMPLES = "/work/shared/easyrec/samples/model_config"
SAMPLES = ["cmbf_on_movielens", "cmbf_on_movielens_has_other_feature",
           "cmbf_on_movielens_only_image_feature", "cmbf_on_movielens_only_text_feature",
           "cmbf_with_multi_loss", "uniter_on_movielens",
           "uniter_on_movielens_only_image_feature", "uniter_on_movielens_only_text_feature",
           "dbmtl_cmbf_on_movielens", "dbmtl_uniter_on_movielens"]


@pytest.mark.skipif(not os.path.isdir(EASYREC_SAMPLES),
                    reason=f"EasyRec's samples are not at {EASYREC_SAMPLES}")
def test_easyrec_samples_pass_check():
    failed = {}
    for name in SAMPLES:
        try:
            config_lib.load(os.path.join(EASYREC_SAMPLES, name + ".config"))
        except ConfigError as e:
            failed[name] = str(e)
    assert not failed, failed


# ---------------------------------------------------------------------------
# Train, export, serve with plain TensorFlow

# Started before the trainings (its TensorFlow import overlaps them); reads one line of
# comma-separated export paths and one of JSON columns from stdin.
BARE = """
import json, sys
import numpy as np
import tensorflow as tf
exports, cols = sys.stdin.readline().strip(), json.loads(sys.stdin.readline())
out = {}
for export in exports.split(","):
    serve = tf.saved_model.load(export).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    got = serve(**{k: tf.constant(cols[k], specs[k].dtype) for k in specs})
    out[export] = {k: v.numpy().ravel().tolist() for k, v in got.items()}
assert "mtrec" not in sys.modules
print(json.dumps(out))
"""


def _train_and_score(tmp_path, train, test, rows):
    """Train tiny CMBF, UNITER and DBMTL-on-UNITER configs -> ({name: export dir},
    {name: the trained Keras model's outputs on rows})."""
    import mtrec
    from mtrec.training.checkpoints import restore_checkpoint
    from mtrec.training.job import Job
    exports, live = {}, {}
    # Lighter graphs (tracing dominates): CMBF without the image encoder, DBMTL on UNITER
    # (test_dbmtl_bottom_cmbf_forward_and_names builds DBMTL on CMBF).
    cmbf = edit("image_self_attention_layer_num: 1", "image_self_attention_layer_num: 0",
                CMBF_CONFIG)
    dbmtl = edit(CMBF_TOWER, UNITER_TOWER, edit("bottom_cmbf", "bottom_uniter", DBMTL_CONFIG))
    for name, text in (("cmbf", cmbf), ("uniter", UNITER_CONFIG), ("dbmtl", dbmtl)):
        path = tmp_path / f"{name}.config"
        path.write_text(text)
        model_dir = str(tmp_path / name)
        mtrec.train(str(path), model_dir=model_dir,
                    sets=[f"train_input_path={train}", f"eval_input_path={test}"])
        (export,) = glob.glob(os.path.join(model_dir, "export", "*", "*"))
        exports[name] = export
        # The trained Keras model on the same rows.
        job = Job.create(config_lib.load(str(path)).pipeline, for_training=False)
        job.build()
        restore_checkpoint(job.checkpoint, tf.train.latest_checkpoint(model_dir),
                           partial=True)
        features, _ = job.split(_tensors(rows))
        live[name] = {k: v.numpy().ravel() for k, v in job.model(features).items()}
    return exports, live


@pytest.mark.slow
def test_train_export_and_serve_without_mtrec(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    _write_csv(train, _columns(48, seed=1))
    _write_csv(test, _columns(16, seed=2))
    rows = _columns(6, seed=4)
    rows["title"][0] = ""        # an empty sequence
    rows["title"][1] = "w1 w2 w3 w4 w5 w6 w7"  # longer than max_seq_len
    bare = subprocess.Popen([sys.executable, "-c", BARE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ""})
    try:
        exports, live = _train_and_score(tmp_path, train, test, rows)
        cells = {k: [str(v) for v in vals] if k in ("user", "title", "genres", "image")
                 else np.asarray(vals).tolist() for k, vals in rows.items()}
        out, err = bare.communicate(",".join(exports.values()) + "\n" + json.dumps(cells)
                                    + "\n", timeout=300)
    finally:
        if bare.poll() is None:
            bare.kill()
            bare.wait(30)
    assert bare.returncode == 0, err[-3000:]
    served = json.loads(out.strip().splitlines()[-1])
    for name, export in exports.items():
        outputs = served[export]
        expected = {"cmbf": {"logits_clk", "probs_clk"}, "uniter": {"logits_clk", "probs_clk"},
                    "dbmtl": {"logits_classify", "probs_classify", "logits_rating",
                              "y_rating"}}[name]
        assert expected <= set(outputs), (name, outputs.keys())
        for key in expected:
            np.testing.assert_allclose(outputs[key], live[name][key], rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} {key}")
        probs = np.asarray(outputs["probs_classify" if name == "dbmtl" else "probs_clk"])
        assert probs.shape == (6,) and np.all((probs > 0) & (probs < 1))
