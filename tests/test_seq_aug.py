"""CL4SRec (EasyRec's cl4srec_on_taobao sample): SeqAugment's crop / mask / reorder on
padded sequences (checked row by row against their definitions), the contrastive losses
against numpy, the AuxiliaryLoss layer, and block packages (each call a fresh copy of the
package's blocks sharing one set of layers) in a tiny model."""
import csv
import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

import conftest
from mtrec import api
from mtrec import config as config_lib
from mtrec.backbone import catalogue
from mtrec.backbone.specs import Tensor
from mtrec.errors import ConfigError
from mtrec.features.feature import FeatureSet
from mtrec.layers.contrastive import AuxiliaryLoss, info_nce_loss, l2_loss, nce_loss
from mtrec.layers.seq_aug import SeqAugment
from mtrec.models.registry import build_model
from mtrec.protos import backbone_pb2
from test_sequence_layers import COLUMNS, SEQ_INPUTS

LENGTHS = [0, 1, 3, 5, 8, 8, 2, 7] * 8  # 64 rows, padded to 8


def sequences(d=3, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array(LENGTHS)
    mask = np.arange(8)[None] < lengths[:, None]                           # (64, 8)
    # Distinct values per position, so the positions' moves can be traced.
    hist = (rng.permutation(64 * 8 * d).reshape(64, 8, d) + 1.0) * mask[:, :, None]
    return hist.astype("float32"), mask, lengths


def augment(layer, hist, mask):
    out = layer([tf.constant(hist), tf.constant(mask)], training=True)
    return out[0].numpy(), out[1].numpy()


def is_crop(row_in, n, row_out, mask_out, rate):
    c = int(np.floor(np.float32(n) * np.float32(rate)))
    if mask_out.tolist() != [j < c for j in range(8)] or np.any(row_out[c:] != 0):
        return None
    starts = [s for s in range(max(n - c, 1)) if np.array_equal(row_out[:c], row_in[s:s + c])]
    return starts[0] if starts else None


def test_crop_keeps_a_random_contiguous_part_moved_to_the_front():
    hist, mask, lengths = sequences()
    layer = SeqAugment(mask_rate=0.0, crop_rate=0.5, reorder_rate=0.0, seed=1)
    out, out_mask = augment(layer, hist, mask)
    starts = {}
    for b, n in enumerate(lengths):
        start = is_crop(hist[b], n, out[b], out_mask[b], 0.5)
        assert start is not None, (b, n, out[b])
        starts.setdefault(n, set()).add(start)
    assert starts[8] == {0, 1, 2, 3}  # every start in [0, n - c) occurs (8 rows of n = 8)
    assert layer.mask_embedding is None and not layer.weights  # no mask: no mask embedding


def test_mask_replaces_floor_n_rate_real_positions_by_the_mask_embedding():
    hist, mask, lengths = sequences()
    layer = SeqAugment(mask_rate=0.6, crop_rate=1.0, reorder_rate=0.0, seed=2)
    out, out_mask = augment(layer, hist, mask)
    emb = layer.mask_embedding.numpy()
    np.testing.assert_array_equal(out_mask, mask)
    chosen_positions = set()
    for b, n in enumerate(lengths):
        masked = np.all(out[b] == emb, axis=-1)
        assert masked.sum() == int(np.floor(np.float32(n) * np.float32(0.6))), b
        assert not masked[n:].any()
        np.testing.assert_array_equal(out[b][~masked], hist[b][~masked])
        if n == 8:
            chosen_positions |= set(np.flatnonzero(masked))
    assert chosen_positions == set(range(8))


def test_reorder_shuffles_one_contiguous_segment():
    hist, mask, lengths = sequences()
    layer = SeqAugment(mask_rate=0.0, crop_rate=1.0, reorder_rate=0.6, seed=3)
    out, out_mask = augment(layer, hist, mask)
    np.testing.assert_array_equal(out_mask, mask)
    moved_rows = 0
    for b, n in enumerate(lengths):
        r = int(np.floor(np.float32(n) * np.float32(0.6)))
        changed = np.flatnonzero(np.any(out[b] != hist[b], axis=-1))
        if len(changed):
            moved_rows += 1
            assert changed.max() - changed.min() < r and changed.max() < n, (b, changed)
        # the same items, in another order only inside the segment
        assert sorted(map(tuple, out[b])) == sorted(map(tuple, hist[b]))
    assert moved_rows > 20


def test_each_row_gets_one_transformation_and_inference_is_the_identity():
    hist, mask, lengths = sequences()
    layer = SeqAugment(mask_rate=0.5, crop_rate=0.5, reorder_rate=0.5, seed=4)
    target = tf.ones((64, 3))
    out = layer([tf.constant(hist), tf.constant(mask), target], training=True)
    assert out[2] is target
    out, out_mask = out[0].numpy(), out[1].numpy()
    emb = layer.mask_embedding.numpy()
    kinds = set()
    for b, n in enumerate(lengths):
        if n < 4:
            continue  # too short to tell the transformations apart
        masked = np.all(out[b] == emb, axis=-1)
        if masked.any():
            kinds.add("mask")
            assert masked.sum() == n // 2
        elif not out_mask[b].tolist() == mask[b].tolist():
            kinds.add("crop")
            assert is_crop(hist[b], n, out[b], out_mask[b], 0.5) is not None
        else:
            kinds.add("reorder")
            assert sorted(map(tuple, out[b])) == sorted(map(tuple, hist[b]))
    assert kinds == {"crop", "mask", "reorder"}
    same = layer([tf.constant(hist), tf.constant(mask)], training=False)
    np.testing.assert_array_equal(same[0].numpy(), hist)
    np.testing.assert_array_equal(same[1].numpy(), mask)


def test_bad_rates_are_errors():
    with pytest.raises(ValueError, match="SeqAugment crop_rate must be in"):
        SeqAugment(crop_rate=1.5)
    params = text_format.Parse('class_name: "SeqAugment" seq_aug { mask_rate: -0.1 }',
                               backbone_pb2.KerasLayer())
    with pytest.raises(ValueError, match="mask_rate must be in"):
        catalogue.CATALOGUE["SeqAugment"].infer(catalogue.layer_params(params),
                                                [Tensor((None, 4)), Tensor((None,))])


# ---------------------------------------------------------------------------
# Contrastive losses against numpy (EasyRec's formulation: positives, then the
# negatives picked by a mask matrix)


def np_cross_entropy(logits, labels):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


def np_nce(z_i, z_j, t):
    b = len(z_i)
    z = np.concatenate([z_i, z_j]).astype(np.float64)
    sim = z @ z.T / t
    positives = np.concatenate([np.diag(sim[b:, :b]), np.diag(sim[:b, b:])])[:, None]
    keep = np.tile(~np.eye(b, dtype=bool), (2, 2))
    negatives = sim[keep].reshape(2 * b, -1)
    return np_cross_entropy(np.concatenate([positives, negatives], 1), np.zeros(2 * b, int))


def test_losses_equal_numpy():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 5, 4)).astype("float32")
    np.testing.assert_allclose(float(nce_loss(x1, x2, 0.15)), np_nce(x1, x2, 0.15), rtol=1e-5)
    logits = x1.astype(np.float64) @ x2.T / 0.2
    np.testing.assert_allclose(float(info_nce_loss(x1, x2, 0.2)),
                               np_cross_entropy(logits, np.arange(5)), rtol=1e-5)
    np.testing.assert_allclose(float(l2_loss(x1, x2)), ((x1 - x2) ** 2).sum(1).mean(),
                               rtol=1e-6)


def test_auxiliary_loss_adds_the_weighted_loss_only_while_training():
    rng = np.random.default_rng(1)
    x1, x2 = (tf.constant(v) for v in rng.normal(size=(2, 6, 4)).astype("float32"))
    layer = AuxiliaryLoss("nce_loss", 0.1, 0.15)
    out = layer([x1, x2], training=True)
    expected = 0.1 * np_nce(x1.numpy(), x2.numpy(), 0.15)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-5)
    np.testing.assert_allclose(out.numpy(), np.full((6, 1), expected), rtol=1e-5)
    layer = AuxiliaryLoss("l2_loss")
    assert np.all(layer([x1, x2], training=False).numpy() == 0) and not layer.losses
    with pytest.raises(ValueError, match="loss_type must be one of"):
        AuxiliaryLoss("cosine")


# ---------------------------------------------------------------------------
# Block packages in a tiny CL4SRec model

def cl4srec_config(call_input="seq_augment", extra=""):
    return SEQ_INPUTS + f"""\
model_config {{
  model_class: "RankModel"
  feature_groups {{ group_name: "normal" feature_names: "price" }}
  feature_groups {{ group_name: "user_seq" feature_names: "hist" }}
  backbone {{
    blocks {{ name: "user_seq" inputs {{ feature_group_name: "user_seq" }}
             input_layer {{ output_seq_and_normal_feature: true }} }}
    packages {{
      name: "seq_augment"
      blocks {{ name: "augment" inputs {{ block_name: "user_seq" }}
               keras_layer {{ class_name: "SeqAugment"
                             seq_aug {{ mask_rate: 0.5 crop_rate: 0.5 reorder_rate: 0.5 }} }} }}
    }}
    packages {{
      name: "seq_encoder"
      blocks {{ name: "BST" inputs {{ use_package_input: true }}
               keras_layer {{ class_name: "BST" bst {{ hidden_size: 8 num_hidden_layers: 1
                 num_attention_heads: 2 intermediate_size: 8 max_position_embeddings: 6 }} }} }}
    }}
    blocks {{ name: "contrastive"
             inputs {{ package_name: "seq_encoder" package_input: "seq_augment" }}
             inputs {{ package_name: "seq_encoder" package_input: "{call_input}" }}
             merge_inputs_into_list: true
             keras_layer {{ class_name: "AuxiliaryLoss" st_params {{
               fields {{ key: "loss_type" value {{ string_value: "nce_loss" }} }}
               fields {{ key: "loss_weight" value {{ number_value: 0.5 }} }} }} }} }}
    blocks {{ name: "main" inputs {{ package_name: "seq_encoder" package_input: "user_seq" }}
             inputs {{ feature_group_name: "normal" }} }}
    concat_blocks: "main"
    top_mlp {{ hidden_units: [4] }}
    {extra}
  }}
  model_params {{ l2_regularization: 0.0 }}
}}
"""


def test_package_calls_are_copies_sharing_layers_and_the_loss_trains():
    keras.utils.set_random_seed(0)
    pipeline = config_lib.from_pipeline(config_lib.parse_text(cl4srec_config())).pipeline
    feature_set = FeatureSet(pipeline)
    model = build_model(pipeline, feature_set)
    features = feature_set.preprocess(COLUMNS)
    backbone = model.backbone
    names = [b.name for b in backbone.plan.blocks]
    assert set(names) == {"user_seq", "contrastive", "main", "seq_encoder.1.BST",
                          "seq_augment.1.augment", "seq_encoder.2.BST",
                          "seq_augment.2.augment", "seq_encoder.3.BST"}
    # One BST and one SeqAugment, whatever the number of calls.
    assert sorted(backbone.block_layers) == ["contrastive", "seq_augment.augment",
                                             "seq_encoder.BST"]
    first = model(features)
    assert not model.losses  # no contrastive loss outside training
    np.testing.assert_array_equal(model(features)["logits_clk"].numpy(),
                                  first["logits_clk"].numpy())
    augment = backbone.block_layers["seq_augment.augment"]
    with tf.GradientTape() as tape:
        model(features, training=True)
        aux = tf.add_n(model.losses)
    assert float(aux) > 0
    # The mask embedding is only reached through the contrastive loss.
    grad = tape.gradient(aux, augment.mask_embedding)
    assert grad is not None and float(tf.reduce_sum(tf.abs(grad))) > 0


@pytest.mark.parametrize("call_input, extra, message, needle", [
    ("nowhere", "", "package_input 'nowhere' names neither a block nor a package",
     'package_input: "nowhere"'),
    ("seq_augment", 'blocks { name: "bad" inputs { package_name: "encoder" } }',
     "package 'encoder' does not exist; packages: seq_augment, seq_encoder",
     'package_name: "encoder"'),
    ("seq_augment", 'blocks { name: "bad2" inputs { package_name: "seq_encoder" } }',
     "package 'seq_encoder': block 'BST' reads use_package_input but the call gives no "
     "package_input", 'name: "bad2"'),
])
def test_package_mistakes_name_the_line(tmp_path, call_input, extra, message, needle):
    text = cl4srec_config(call_input, extra)
    path = tmp_path / "pipeline.config"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config_lib.load(str(path))
    line = [i for i, t in enumerate(text.splitlines(), 1) if needle in t][0]
    assert message in str(info.value)
    assert f"{path}:{line}:" in str(info.value), str(info.value)


# EasyRec's samples (read-only, beside the project), where the other sample tests read them.
SAMPLE = "/work/shared/easyrec/samples/model_config/cl4srec_on_taobao.config"
BARE = textwrap.dedent("""
    import csv, json, sys
    import tensorflow as tf
    saved_model, data, fields = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    rows = list(csv.reader(open(data)))
    model = tf.saved_model.load(saved_model)
    fn = model.signatures["serving_default"]
    # multi_placeholder: false: one string input, the cells of the columns the model reads
    # (all but the labels clk and buy) joined by ","
    assert list(fn.structured_input_signature[1]) == ["features"]
    used = set(model.signatures["columns"].structured_input_signature[1])
    keep = [i for i, name in enumerate(fields) if name in used]
    inputs = {"features": tf.constant([",".join(r[i] for i in keep) for r in rows])}
    first = {k: v.numpy().reshape(-1).tolist() for k, v in fn(**inputs).items()}
    again = {k: v.numpy().reshape(-1).tolist() for k, v in fn(**inputs).items()}
    assert first == again  # no augmentation at serving
    assert "mtrec" not in sys.modules
    print(json.dumps(first))
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SAMPLE), reason="EasyRec samples not present")
def test_easyrec_cl4srec_sample_trains_exports_and_serves(tmp_path, small_taobao):
    train_path, test_path = small_taobao
    text = open(SAMPLE).read().replace("experiments/cl4srec_on_taobao_ckpt",
                                       str(tmp_path / "model"))
    config = tmp_path / "cl4srec_on_taobao.config"
    config.write_text(text)
    config_lib.load(str(config))
    api.train(str(config), sets=conftest.fast_overrides(train_path, test_path, steps=6))
    api.export(str(config), export_dir=str(tmp_path / "export"))
    saved_model = str(next((tmp_path / "export").glob("[0-9]*")))
    with open(test_path) as f:
        rows = list(csv.reader(f))[:32]
    data = tmp_path / "rows.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    predicted = tmp_path / "predicted.csv"
    api.predict(saved_model, str(data), str(predicted))
    fields = re.findall(r"input_name:\s*'([^']+)'", text)
    bare = subprocess.run([sys.executable, "-c", BARE, saved_model, str(data),
                           json.dumps(fields)],
                          capture_output=True, text=True, cwd=str(tmp_path),
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert bare.returncode == 0, bare.stderr[-3000:]
    served = json.loads(bare.stdout.strip().splitlines()[-1])
    with open(predicted) as f:
        predicted_rows = list(csv.DictReader(f))
    assert len(predicted_rows) == 32 and served
    for key, values in served.items():
        if key in predicted_rows[0]:
            np.testing.assert_allclose([float(r[key]) for r in predicted_rows], values,
                                       rtol=1e-5)
