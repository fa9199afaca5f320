"""Backbone blocks of issue #22: the FiBiNet / Bilinear / CIN / AutoDis / Periodic /
TextCNN / Highway / Gate layers against numpy, the parsed (never evaluated) input_fn /
extra_input_fn / lambda functions, repeat and recurrent blocks, and a SequenceFeature's
text_cnn combiner."""
import itertools
import math
import types

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from mtrec.backbone.functions import SpecOps, parse_function
from mtrec.backbone.layer import Backbone
from mtrec.backbone.plan import plan as backbone_plan
from mtrec.backbone.specs import Tensor
from mtrec.errors import ConfigError
from mtrec.features.width import group_feature_width
from mtrec.layers.cin import CIN
from mtrec.layers.fibinet import Bilinear, FiBiNet
from mtrec.layers.highway import Highway
from mtrec.layers.numeric_embedding import AutoDisEmbedding, PeriodicEmbedding
from mtrec.layers.text_cnn import TextCNN
from mtrec.layers.weighted_gate import WeightedGate
from mtrec.protos import backbone_pb2
from test_sequence_features import config_error, groups_of, line_of, seq

RNG = np.random.default_rng(7)


def normal(*shape):
    return RNG.normal(size=shape).astype("float32")


# ---------------------------------------------------------------------------
# Layers against numpy


@pytest.mark.parametrize("kind,plus", [("all", True), ("each", False), ("interaction", True),
                                       ("interaction", False)])
def test_bilinear_equals_numpy(kind, plus):
    widths = [3, 3, 3] if kind != "interaction" else [2, 3, 4]
    fields = [normal(5, w) for w in widths]
    layer = Bilinear(4, kind, plus, name="bi")
    out = layer(fields).numpy()
    kernels = [k.numpy() for k in layer.kernels]
    biases = [b.numpy() for b in layer.biases]
    terms = []
    for k, (i, j) in enumerate(itertools.combinations(range(3), 2)):
        m = {"all": 0, "each": i, "interaction": k}[kind]
        q = fields[i] @ kernels[m] + biases[m]
        terms.append((q * fields[j]).sum(-1, keepdims=True) if plus else q * fields[j])
    dense = layer.output_layer
    expected = np.concatenate(terms, -1) @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert len(kernels) == {"all": 1, "each": 2, "interaction": 3}[kind]
    if kind != "interaction":
        with pytest.raises(ValueError, match="one width"):
            Bilinear(4, kind)([normal(2, 3), normal(2, 4)])


def test_fibinet_concatenates_senet_and_bilinear_then_mlp():
    fields = [normal(4, 4) for _ in range(3)]
    layer = FiBiNet({"reduction_ratio": 2}, {"num_output_units": 5, "bilinear_type": "each"},
                    {"hidden_units": [3], "use_bn": False, "use_final_bn": False,
                     "final_activation": "linear"}, name="fibinet")
    out = layer(fields).numpy()
    joined = np.concatenate([layer.senet(fields).numpy(), layer.bilinear(fields).numpy()], -1)
    assert joined.shape == (4, 12 + 5)
    np.testing.assert_allclose(out, joined @ layer.mlp.dense_layers[0].kernel.numpy(),
                               rtol=1e-4, atol=1e-5)


def test_cin_equals_numpy():
    x0 = normal(3, 4, 5)
    layer = CIN([3, 2], name="cin")
    out = layer(x0).numpy()
    x, pooled = x0, []
    for kernel, bias in zip(layer.kernels, layer.biases):
        w = kernel.numpy()                      # (h_k, h_{k-1}, h0)
        z = np.zeros((3, w.shape[0], 5), "float32")
        for m in range(w.shape[0]):
            for i in range(w.shape[1]):
                for j in range(w.shape[2]):
                    z[:, m] += w[m, i, j] * x[:, i] * x0[:, j]
        x = np.maximum(z + bias.numpy()[None, :, None], 0)
        pooled.append(x.sum(-1))
    np.testing.assert_allclose(out, np.concatenate(pooled, -1), rtol=1e-4, atol=1e-4)
    assert out.shape == (3, 5)
    with pytest.raises(ValueError, match="fields, d"):
        CIN([2])(normal(3, 4))


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_autodis_equals_numpy_and_output_forms():
    x = normal(4, 3)
    layer = AutoDisEmbedding(2, 5, temperature=0.5, keep_prob=0.8, output="list", name="ad")
    flat, items = layer(x)
    w, mat, meta = (layer.project_w.numpy(), layer.project_mat.numpy(),
                    layer.meta_embedding.numpy())
    h = w[None] * x[:, :, None]
    h = np.where(h > 0, h, 0.2 * h)                                   # leaky ReLU 0.2
    scores = np.einsum("nik,bnk->bni", mat, h) + 0.8 * h
    emb = np.einsum("bnk,nkd->bnd", _softmax(scores / 0.5), meta)
    np.testing.assert_allclose(flat.numpy(), emb.reshape(4, 6), rtol=1e-5, atol=1e-6)
    assert len(items) == 3
    np.testing.assert_allclose(items[2].numpy(), emb[:, 2], rtol=1e-5, atol=1e-6)
    three_d = AutoDisEmbedding(2, 5, 0.5, output="3d")(x)
    assert [tuple(t.shape) for t in three_d] == [(4, 6), (4, 3, 2)]
    with pytest.raises(ValueError, match="temperature > 0"):
        AutoDisEmbedding(2, 5, temperature=0)


@pytest.mark.parametrize("linear", [True, False])
def test_periodic_equals_numpy(linear):
    x = normal(4, 3)
    layer = PeriodicEmbedding(4, sigma=0.3, add_linear_layer=linear, linear_activation="relu")
    out = layer(x).numpy()
    v = 2 * math.pi * layer.coefficients.numpy()[None] * x[:, :, None]
    emb = np.concatenate([np.sin(v), np.cos(v)], -1)                  # (4, 3, 4)
    if linear:
        emb = np.maximum(np.einsum("bni,nio->bno", emb, layer.linear_kernel.numpy())
                         + layer.linear_bias.numpy(), 0)
    np.testing.assert_allclose(out, emb.reshape(4, 12), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="even embedding_dim"):
        PeriodicEmbedding(3, sigma=0.1)


def test_text_cnn_masks_pads_and_cuts_then_max_pools():
    seq_emb = normal(2, 5, 3)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    for length in (7, 4):  # padded with zeros to 7; cut to the first 4 positions
        layer = TextCNN([2, 3], [2, 1], pad_sequence_length=length, name="cnn")
        out = layer([tf.constant(seq_emb), tf.constant(mask)]).numpy()
        padded = np.zeros((2, length, 3), "float32")
        kept = (seq_emb * mask[:, :, None])[:, :length]
        padded[:, :kept.shape[1]] = kept
        pooled = []
        for conv in layer.convs:
            w, b = conv.kernel.numpy(), conv.bias.numpy()           # (width, d, filters)
            width = w.shape[0]
            windows = np.stack([np.einsum("bwd,wdf->bf", padded[:, t:t + width], w) + b
                                for t in range(length - width + 1)], 1)
            pooled.append(np.maximum(windows, 0).max(1))
        np.testing.assert_allclose(out, np.concatenate(pooled, -1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="at least the widest filter"):
        TextCNN([2, 3], [1, 1], pad_sequence_length=2)


def test_highway_equals_numpy():
    x = normal(4, 3)
    layer = Highway(emb_size=5, num_layers=2, init_gate_bias=-1.0, name="hw")
    out = layer(x).numpy()
    v = x @ layer.project.kernel.numpy() + layer.project.bias.numpy()
    for gate, transform in zip(layer.gates, layer.transforms):
        assert np.allclose(gate.bias.numpy(), -1.0)
        t = 1 / (1 + np.exp(-(v @ gate.kernel.numpy() + gate.bias.numpy())))
        h = np.maximum(v @ transform.kernel.numpy() + transform.bias.numpy(), 0)
        v = t * h + (1 - t) * v
    np.testing.assert_allclose(out, v, rtol=1e-4, atol=1e-5)


def test_weighted_gate_sums_experts_by_weights():
    experts = [normal(3, 4) for _ in range(3)]
    weights = normal(3, 3)
    out = WeightedGate(weight_index=1)([experts[0], weights, experts[1], experts[2]]).numpy()
    expected = sum(weights[:, j, None] * experts[j] for j in range(3))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Functions: parsed from a whitelist, never evaluated


def test_functions_follow_the_whitelist_on_specs():
    ops = SpecOps()
    pair = [Tensor((4,)), [Tensor((2,))] * 3]
    assert parse_function("lambda x: x[1]").apply(pair, ops) == [Tensor((2,))] * 3
    assert parse_function("lambda v: [v, v]").apply(Tensor((4,)), ops) == [Tensor((4,))] * 2
    assert parse_function("lambda x: x[1][-2:]").apply(pair, ops) == [Tensor((2,))] * 2
    assert parse_function("lambda x: tf.add_n(x[1])").apply(pair, ops) == Tensor((2,))
    assert parse_function("lambda x: tf.stack(x, axis=1)").apply(
        [Tensor((2,))] * 3, ops) == Tensor((3, 2))
    assert parse_function("lambda x: tf.concat(x, -1)").apply(
        [Tensor((2,)), Tensor((5,))], ops) == Tensor((7,))
    assert parse_function("lambda x: tf.reduce_sum(x, axis=1, keepdims=True)").apply(
        Tensor((6,)), ops) == Tensor((1,))
    assert parse_function("lambda x: tf.math.reduce_mean(x, axis=1)").apply(
        Tensor((3, 2)), ops) == Tensor((2,))
    assert parse_function("lambda x, i: x[i]", with_index=True).apply(
        [Tensor((1,)), Tensor((2,))], ops, 1) == Tensor((2,))
    for bad, why in [("lambda x: __import__('os')", "'__import__' is not allowed"),
                     ("lambda x: x.numpy()", "'x.numpy' is not allowed"),
                     ("lambda x: x + 1", "'x + 1' is not allowed"),
                     ("lambda x: x[0.5]", "not an integer"),
                     ("lambda x: tf.reduce_sum(x)", "needs an axis"),
                     ("lambda x: tf.stack(x, axis=k)", "not an integer"),
                     ("x[0]", "not a lambda"), ("lambda x, y: x", "exactly (x)"),
                     ("lambda x: (", "does not parse")]:
        with pytest.raises(ValueError, match=__import__("re").escape(why)):
            parse_function(bad)
    with pytest.raises(ValueError, match="picks from a list"):
        parse_function("lambda x: x[0]").apply(Tensor((4,)), ops)
    with pytest.raises(ValueError, match="batch axis"):
        parse_function("lambda x: tf.stack(x, axis=0)").apply([Tensor((2,))] * 2, ops)


# ---------------------------------------------------------------------------
# Backbones with functions, repeat and recurrent blocks


class _Groups:
    """The part of FeatureGroups a Backbone reads: groups of known widths, no sequences."""

    def __init__(self, widths: dict):
        self.widths = widths
        self.groups = {g: ([f"{g}_{i}" for i in range(len(w))], False)
                       for g, w in widths.items()}
        self.feature_set = types.SimpleNamespace(features={})

    def group_widths(self):
        return self.widths


def backbone(text: str, widths: dict):
    config = text_format.Parse(text, backbone_pb2.BackboneTower())
    return Backbone(config, _Groups(widths), name="backbone")


def test_recurrent_cross_equals_the_chained_layers():
    net = backbone("""
      blocks { name: "cross" inputs { feature_group_name: "a" input_fn: "lambda x: [x, x]" }
               recurrent { num_steps: 3 fixed_input_index: 0
                           keras_layer { class_name: "Cross" } } }""", {"a": [2, 3]})
    parts = [tf.constant(normal(4, 2)), tf.constant(normal(4, 3))]
    out = net({"a": parts}).numpy()
    assert sorted(net.block_layers) == ["cross_0", "cross_1", "cross_2"]
    x0 = tf.concat(parts, -1)
    x = x0
    for s in range(3):
        x = net.block_layers[f"cross_{s}"]([x0, x])
    np.testing.assert_allclose(out, x.numpy(), rtol=1e-5)
    assert net.plan.output == Tensor((5,))


def test_repeat_slices_each_copy_and_concatenates():
    text = """
      blocks { name: "copies" inputs { feature_group_name: "a" }
               inputs { feature_group_name: "b" } merge_inputs_into_list: true
               repeat { num_repeat: 2 input_slice: "[i]" %s
                        keras_layer { class_name: "Dense" st_params {
                          fields { key: "units" value { number_value: 3 } } } } } }"""
    a, b = tf.constant(normal(4, 2)), tf.constant(normal(4, 5))
    net = backbone(text % "output_concat_axis: 1", {"a": [2], "b": [5]})
    out = net({"a": [a], "b": [b]}).numpy()
    first, second = net.block_layers["copies_0"], net.block_layers["copies_1"]
    expected = np.concatenate([first(a).numpy(), second(b).numpy()], -1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert net.plan.output == Tensor((6,))
    listed = backbone(text % "", {"a": [2], "b": [5]})
    assert listed.plan.blocks[0].steps[0].specs == [Tensor((2,)), Tensor((5,))]
    assert [t.shape for t in listed({"a": [a], "b": [b]})] == [(4, 3), (4, 3)]


def test_input_fn_extra_input_fn_and_lambda_blocks_compute():
    net = backbone("""
      blocks { name: "both" inputs { feature_group_name: "a" } input_layer {
               output_2d_tensor_and_feature_list: true } }
      blocks { name: "sum" inputs { block_name: "both" input_fn: "lambda x: tf.add_n(x[1])" }
               lambda { expression: "lambda x: tf.reduce_sum(x, axis=1, keepdims=True)" } }
      blocks { name: "stacked" inputs { block_name: "both" input_slice: "[1]" }
               extra_input_fn: "lambda x: tf.stack(x, axis=1)"
               layers { lambda { expression: "lambda x: tf.reduce_max(x, axis=1)" } } }
      concat_blocks: ["sum", "stacked"]""", {"a": [3, 3]})
    p, q = normal(4, 3), normal(4, 3)
    out = net({"a": [tf.constant(p), tf.constant(q)]}).numpy()
    np.testing.assert_allclose(out, np.concatenate(
        [(p + q).sum(1, keepdims=True), np.maximum(p, q)], -1), rtol=1e-5)
    assert net.plan.output == Tensor((4,))


def test_function_and_step_errors_are_reported_by_plan():
    config = text_format.Parse("""
      blocks { name: "x" inputs { feature_group_name: "a" input_fn: "lambda x: x.t" } }
      blocks { name: "y" inputs { feature_group_name: "a" }
               repeat { num_repeat: 0 keras_layer { class_name: "MLP" } } }
      blocks { name: "z_l0_1" inputs { feature_group_name: "a" } }
      blocks { name: "z" inputs { feature_group_name: "a" } layers { recurrent {
               num_steps: 2 keras_layer { class_name: "Highway" } } } }""",
                               backbone_pb2.BackboneTower())
    messages = [m for m, *_ in backbone_plan(config, {"a": [3]}).errors]
    assert any("input_fn 'x.t' is not allowed" in m for m in messages), messages
    assert any("repeat needs num_repeat >= 1" in m for m in messages), messages
    # Copy (step) c of layers[i] is named <block>_l<i>_<c>: names key the weights.
    assert any("block 'z': one of its layers is named 'z_l0_1', which is already the name "
               "of a block" in m for m in messages), messages
    with pytest.raises(ConfigError, match="input_fn"):
        backbone(str(config), {"a": [3]})


# ---------------------------------------------------------------------------
# A SequenceFeature pooled by TextCNN


def test_text_cnn_sequence_combiner_pools_a_group_feature():
    combiner = ("sequence_combiner { text_cnn { filter_sizes: [1, 2] num_filters: [3, 2] "
                "pad_sequence_length: 4 } }")
    config, fs, layer = groups_of(seq(f"num_buckets: 10 embedding_dim: 3 {combiner}"),
                                  '  feature_groups { group_name: "all" feature_names: "a" }')
    assert group_feature_width(config.feature_config.features[0], False) == 5
    assert layer.group_widths() == {"all": [5]}
    out = layer(fs.preprocess({"hist": tf.constant(["3|1|2", "", "5|5|5|5|5|9"])}))["all"]
    pooler = layer.poolers["all/a"]
    assert isinstance(pooler, TextCNN) and out[0].shape == (3, 5)
    table = layer.tables["a"].numpy()
    ids = [[3, 1, 2], [], [5, 5, 5, 5]]                  # cut to pad_sequence_length 4
    padded = np.zeros((3, 4, 3), "float32")
    for r, row in enumerate(ids):
        padded[r, :len(row)] = table[row]
    expected = np.concatenate([
        np.maximum(np.stack([np.einsum("bwd,wdf->bf", padded[:, t:t + c.kernel.shape[0]],
                                       c.kernel.numpy()) + c.bias.numpy()
                             for t in range(4 - c.kernel.shape[0] + 1)], 1), 0).max(1)
        for c in pooler.convs], -1)
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_text_cnn_combiner_errors_name_file_and_line(tmp_path):
    features = seq("num_buckets: 10 embedding_dim: 3\n sequence_combiner { text_cnn {\n"
                   " filter_sizes: [2, 5] num_filters: [1, 1] pad_sequence_length: 4 } }")
    text, message = config_error(tmp_path, features,
                                 '  feature_groups { group_name: "all" feature_names: "a" }')
    assert f"{tmp_path / 'pipeline.config'}:{line_of(text, 'text_cnn {')}: SequenceFeature " \
           "'a': sequence_combiner text_cnn pad_sequence_length 4 must be at least the " \
           "widest filter, 5" in message, message


@pytest.mark.slow
def test_cdn_and_dcn_sample_structures_train_with_stable_names():
    from test_backbone import TINY_INPUTS, build, train_steps
    text = TINY_INPUTS + """\
model_config {
  model_class: "RankModel"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  backbone {
    blocks { name: "mem" inputs { feature_group_name: "all" }
             keras_layer { class_name: "MLP" mlp { hidden_units: [4] } } }
    blocks { name: "gen" inputs { feature_group_name: "all" input_fn: "lambda x: [x, x]" }
             repeat { num_repeat: 2 keras_layer { class_name: "MaskBlock"
                      mask_block { output_size: 4 aggregation_size: 6 } } } }
    blocks { name: "weights" inputs { feature_group_name: "all" }
             keras_layer { class_name: "MLP" mlp { hidden_units: 3 use_final_bn: false
                                                    final_activation: "softmax" } } }
    blocks { name: "gate" inputs { block_name: "weights" input_fn: "lambda x: [x]" }
             inputs { block_name: "mem" input_fn: "lambda x: [x]" }
             inputs { block_name: "gen" } keras_layer { class_name: "Gate" } }
    blocks { name: "cross" inputs { feature_group_name: "all" input_fn: "lambda x: [x, x]" }
             recurrent { num_steps: 2 fixed_input_index: 0
                         keras_layer { class_name: "Cross" } } }
    concat_blocks: ["gate", "cross"]
    top_mlp { hidden_units: [4] }
  }
  model_params { l2_regularization: 1e-6 }
}
"""
    model, features, outputs = build(text)
    assert set(outputs) == {"logits_clk", "probs_clk"}
    paths = set(model.checkpoint_variables())
    for name in ("gen_0", "gen_1", "cross_0", "cross_1"):
        assert any(p.startswith(f"RankModel/backbone/{name}/") for p in paths), (name, paths)
    groups = model.feature_groups(features)
    assert model.backbone_output(dict(groups)).shape == (4, 4)
    totals, _ = train_steps(model, features)
    assert totals[-1] < totals[0]
