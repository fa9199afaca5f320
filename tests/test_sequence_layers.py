"""Sequence layers (#17): SequencePooling, TargetAttention, DIN and BST against numpy on the
same weights, masking (padding never changes a result, empty rows give zeros), argument
errors, Keras save/load round trips, and the DIN / BST backbone blocks from config to
training (plan specs, config errors with their line, a tiny model that learns)."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from conftest import TINY_INPUTS, edit
from mtrec import config as config_lib
from mtrec.backbone import catalogue
from mtrec.backbone.plan import plan as backbone_plan, sequence_group_widths
from mtrec.backbone.specs import Tensor
from mtrec.errors import ConfigError
from mtrec.features.feature import FeatureSet
from mtrec.layers.bst import BST
from mtrec.layers.dnn import DebiasedBatchNormalization
from mtrec.layers.sequence import DIN, SequencePooling, TargetAttention, _rest_of_mlp
from mtrec.models.registry import build_model
from mtrec.protos import backbone_pb2

RNG = np.random.default_rng(7)
MASK = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


def np_softmax(x, mask):
    """Softmax over the real positions; zeros on padding and for an empty row."""
    x = np.where(mask, x, -np.inf)
    top = np.max(x, axis=-1, keepdims=True)
    e = np.where(mask, np.exp(x - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


# ---------------------------------------------------------------------------
# SequencePooling


def np_pool(mode, seq, mask, kernel=None):
    m = mask[..., None].astype("float32")
    if mode == "sum":
        return (seq * m).sum(1)
    if mode == "mean":
        return (seq * m).sum(1) / np.maximum(m.sum(1), 1.0)
    if mode == "max":
        best = np.where(m > 0, seq, -np.inf).max(1)
        return np.where(mask.any(1, keepdims=True), best, 0.0)
    weights = np_softmax((seq @ kernel)[..., 0], mask)
    return (weights[..., None] * seq).sum(1)


@pytest.mark.parametrize("mode", ["sum", "mean", "max", "attention"])
def test_pooling_matches_numpy_and_empty_rows_are_zero(mode):
    seq = rand(4, 5, 3)
    layer = SequencePooling(mode)
    out = layer(seq, MASK).numpy()
    kernel = layer.score.kernel.numpy() if mode == "attention" else None
    np.testing.assert_allclose(out, np_pool(mode, seq, MASK, kernel), rtol=1e-5, atol=1e-6)
    assert np.all(out[1] == 0.0) and np.all(np.isfinite(out))
    # Padding never matters: other values there, or more padded positions.
    noisy = np.where(MASK[..., None], seq, 1e6).astype("float32")
    longer = np.concatenate([noisy, rand(4, 3, 3)], axis=1)
    longer_mask = np.concatenate([MASK, np.zeros((4, 3), bool)], axis=1)
    np.testing.assert_allclose(layer(longer, longer_mask).numpy(), out, rtol=1e-6, atol=1e-6)


def test_attention_pooling_gradients_stay_finite_on_empty_rows():
    layer = SequencePooling("attention")
    seq = tf.constant(rand(4, 5, 3))
    with tf.GradientTape() as tape:
        tape.watch(seq)
        total = tf.reduce_sum(layer(seq, MASK))
    grads = tape.gradient(total, [seq] + layer.trainable_weights)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


# ---------------------------------------------------------------------------
# TargetAttention and DIN


def np_target_attention(layer, query, keys, mask, values=None, normalizer="softmax"):
    """DIN's score MLP [q, k, q - k, q * k] -> relu hidden layers -> linear score."""
    q = np.repeat(query[:, None], keys.shape[1], axis=1)
    x = np.concatenate([q, keys, q - keys, q * keys], axis=-1)
    dense = layer.score_mlp.dense_layers
    for i, d in enumerate(dense):
        x = x @ d.kernel.numpy() + (0.0 if d.bias is None else d.bias.numpy())
        if i < len(dense) - 1:
            x = np.maximum(x, 0.0)
    scores = x[..., 0]
    if normalizer == "softmax":
        weights = np_softmax(scores, mask)
    else:
        weights = mask / (1.0 + np.exp(-scores / np.sqrt(keys.shape[-1])))
    return weights, np.einsum("bl,bld->bd", weights, keys if values is None else values)


@pytest.mark.parametrize("units,normalizer", [((8, 4), "softmax"), ((6, 1), "softmax"),
                                              ((5,), "sigmoid")])
def test_target_attention_matches_numpy(units, normalizer):
    query, keys, values = rand(4, 3), rand(4, 5, 3), rand(4, 5, 2)
    layer = TargetAttention(units, attention_normalizer=normalizer)
    out = layer(query, keys, MASK).numpy()
    # A Dense(1) is appended unless the last width is 1.
    widths = [d.units for d in layer.score_mlp.dense_layers]
    assert widths == (list(units) if units[-1] == 1 else list(units) + [1])
    weights, expected = np_target_attention(layer, query, keys, MASK, None, normalizer)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.attention_weights(query, keys, MASK).numpy(), weights,
                               rtol=1e-5, atol=1e-6)
    _, with_values = np_target_attention(layer, query, keys, MASK, values, normalizer)
    np.testing.assert_allclose(layer(query, keys, MASK, values).numpy(), with_values,
                               rtol=1e-5, atol=1e-6)
    assert np.all(out[1] == 0.0)  # an empty history: zero weights, not uniform ones


def test_target_attention_is_padding_invariant():
    query, keys = rand(4, 3), rand(4, 5, 3)
    layer = TargetAttention((8, 4, 1))
    out = layer(query, keys, MASK).numpy()
    noisy = np.where(MASK[..., None], keys, -50.0).astype("float32")
    longer = np.concatenate([noisy, rand(4, 4, 3) * 100], axis=1)
    longer_mask = np.concatenate([MASK, np.zeros((4, 4), bool)], axis=1)
    np.testing.assert_allclose(layer(query, longer, longer_mask).numpy(), out, rtol=1e-5,
                               atol=1e-6)
    weights = layer.attention_weights(query, longer, longer_mask).numpy()
    np.testing.assert_allclose(weights.sum(1), [1, 0, 1, 1], rtol=1e-6)


@pytest.mark.parametrize("use_bn,use_bias", [(False, True), (True, True), (False, False)])
def test_split_first_layer_equals_the_concatenated_input(use_bn, use_bias):
    """The per-row / per-position split of the first Dense gives what the score MLP gives on
    [q, k, q - k, q * k]: scores, batch-norm moving statistics and every gradient."""
    query, keys = tf.constant(rand(4, 3)), tf.constant(rand(4, 5, 3))
    fast = TargetAttention((8, 4), use_bn=use_bn, use_bias=use_bias)
    naive = TargetAttention((8, 4), use_bn=use_bn, use_bias=use_bias)
    fast.build((4, 3), (4, 5, 3))
    naive.build((4, 3), (4, 5, 3))
    for a, b in zip(naive.weights, fast.weights):  # the same names and shapes
        assert a.path.split("/", 1)[1] == b.path.split("/", 1)[1] and a.shape == b.shape
        a.assign(b)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([query, keys])
        fast_scores = tf.squeeze(_rest_of_mlp(fast.score_mlp, fast._first_layer(query, keys),
                                              True), -1)  # (batch, len)
        q = tf.repeat(query[:, None], 5, axis=1)
        naive_scores = tf.squeeze(naive.score_mlp(
            tf.concat([q, keys, q - keys, q * keys], -1), training=True), -1)
        weight = tf.constant(rand(4, 5))
        fast_loss = tf.reduce_sum(fast_scores * weight)
        naive_loss = tf.reduce_sum(naive_scores * weight)
    np.testing.assert_allclose(fast_scores.numpy(), naive_scores.numpy(), rtol=1e-5,
                               atol=1e-5)
    for a, b in zip(tape.gradient(fast_loss, [query, keys] + fast.trainable_weights),
                    tape.gradient(naive_loss, [query, keys] + naive.trainable_weights)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(fast.non_trainable_weights, naive.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # The kernel is read only through its blocks: its L2 penalty still counts.
    reg = TargetAttention((8, 4), l2_regularization=0.5)
    reg(query, keys)
    kernels = [d.kernel.numpy() for d in reg.score_mlp.dense_layers]
    np.testing.assert_allclose(float(sum(reg.losses)),
                               0.5 * sum(float((k ** 2).sum()) for k in kernels), rtol=1e-5)


def test_batch_norm_training_matches_keras():
    """DebiasedBatchNormalization trains with TF's fused kernel: the outputs, input
    gradients and moving statistics of Keras' own BatchNormalization (same start)."""
    x = tf.constant(rand(7, 5, 4) * 3.0 + 2.0)
    ours = DebiasedBatchNormalization()
    keras_bn = keras.layers.BatchNormalization(moving_mean_initializer="zeros",
                                               moving_variance_initializer="zeros")
    for layer in (ours, keras_bn):
        layer.build(x.shape)
        layer.gamma.assign([1.0, 2.0, 3.0, 0.5])
        layer.beta.assign([0.1, 0.2, -0.3, 0.0])
    weight = tf.constant(rand(7, 5, 4))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours, y_keras = ours(x, training=True), keras_bn(x, training=True)
        losses = [tf.reduce_sum(y * weight) for y in (y_ours, y_keras)]
    np.testing.assert_allclose(y_ours.numpy(), y_keras.numpy(), rtol=1e-5, atol=1e-5)
    grads = [tape.gradient(loss, [x, layer.gamma, layer.beta])
             for loss, layer in zip(losses, (ours, keras_bn))]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    x2 = x.numpy().reshape(-1, 4)
    np.testing.assert_allclose(ours.moving_mean.numpy(), 0.01 * x2.mean(0), rtol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), 0.01 * x2.var(0), rtol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), keras_bn.moving_variance.numpy(),
                               rtol=1e-5)
    assert float(ours.num_updates.numpy()) == 1.0


def test_din_pads_a_narrower_target_and_appends_it():
    hist, target = rand(4, 5, 4), rand(4, 3)
    layer = DIN({"hidden_units": [6, 1]}, need_target_feature=True)
    out = layer([hist, MASK, target]).numpy()
    assert out.shape == (4, 4 + 3)
    padded = np.concatenate([target, np.zeros((4, 1), "float32")], axis=1)
    _, pooled = np_target_attention(layer.attention, padded, hist, MASK)
    np.testing.assert_allclose(out, np.concatenate([pooled, target], axis=1), rtol=1e-5,
                               atol=1e-6)
    only = DIN({"hidden_units": [6, 1]}, need_target_feature=False)
    assert only([hist, MASK, target]).shape == (4, 4)


@pytest.mark.parametrize("make,message", [
    (lambda: SequencePooling("median"), "SequencePooling mode must be one of sum, mean, max, "
                                        "attention; got 'median'"),
    (lambda: TargetAttention((8, 0)), "hidden_units must be positive, got [8, 0]"),
    (lambda: TargetAttention((8, 4), dropout_rate=1.0), "dropout rates must be in [0, 1)"),
    (lambda: TargetAttention((8, 4), dropout_rate=[0.1]), "has 2 hidden layers but 1 dropout"),
    (lambda: TargetAttention(attention_normalizer="tanh"), "attention_normalizer must be one "
                                                           "of softmax, sigmoid; got 'tanh'"),
    (lambda: TargetAttention(activation="nope"), "unknown activation 'nope'"),
    (lambda: TargetAttention()(rand(2, 3), rand(2, 4, 5), None),
     "query width 3 differs from the keys width 5"),
    (lambda: SequencePooling("sum")(rand(2, 3), None), "needs seq of shape (batch, len, dim)"),
    (lambda: DIN()([rand(2, 4, 3), MASK[:2, :4], rand(2, 5)]),
     "the target is 5 wide but the history only 3"),
    (lambda: DIN()(rand(2, 4, 3)), "DIN takes [history (batch, len, d), mask (batch, len), "
                                   "target"),
    (lambda: BST(6, 1, 4, 8), "hidden_size 6 must be a multiple of num_attention_heads 4"),
    (lambda: BST(4, 1, 2, 8, target_item_position="middle"),
     "target_item_position must be one of head, tail, ignore; got 'middle'"),
    (lambda: BST(4, 1, 2, 8, hidden_dropout_prob=1.5), "hidden_dropout_prob must be in [0, 1)"),
    (lambda: BST(4, 0, 2, 8), "num_hidden_layers must be at least 1"),
    (lambda: BST(4, 1, 2, 8)(rand(2, 3, 4), MASK[:2, :3], rand(2, 5)),
     "needs a target of shape (batch, 4)"),
])
def test_bad_arguments_raise_precise_errors(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


# ---------------------------------------------------------------------------
# BST


def np_layer_norm(x, norm):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.epsilon) * norm.gamma.numpy() + norm.beta.numpy()


def np_block(block, h, mask):
    """One post-norm encoder block (ReLU feed-forward) on the same weights."""
    att = block.attention
    heads, key_dim = att.num_heads, att.key_dim
    q, k, v = (np.einsum("bnd,dhk->bnhk", h, d.kernel.numpy()) + d.bias.numpy()
               for d in (att._query_dense, att._key_dense, att._value_dense))
    scores = np.einsum("bnhk,bmhk->bhnm", q / np.sqrt(key_dim), k)
    probs = np_softmax(scores, mask[:, None, None, :])
    mixed = np.einsum("bhnm,bmhk->bnhk", probs, v)
    a = np.einsum("bnhk,hkd->bnd", mixed, att._output_dense.kernel.numpy()) + \
        att._output_dense.bias.numpy()
    assert heads == q.shape[2]
    a = np_layer_norm(h + a, block.attention_norm)
    f = np.maximum(a @ block.intermediate.kernel.numpy() + block.intermediate.bias.numpy(), 0)
    f = f @ block.output_dense.kernel.numpy() + block.output_dense.bias.numpy()
    return np_layer_norm(a + f, block.output_norm)


def np_bst(layer, seq, mask, target):
    n = layer.max_position_embeddings
    seq = np.concatenate([seq, np.zeros((seq.shape[0], n, seq.shape[2]), "float32")], 1)[:, :n]
    mask = np.concatenate([mask, np.zeros((mask.shape[0], n), bool)], 1)[:, :n]

    def project(dense, x):
        return x if dense is None else np.maximum(x @ dense.kernel.numpy() +
                                                  dense.bias.numpy(), 0)

    seq = project(layer.seq_project, seq)
    slot = project(layer.target_project, target)[:, None]
    tokens = np.concatenate([slot, seq], 1)
    mask = np.concatenate([np.ones((mask.shape[0], 1), bool), mask], 1)
    h = np_layer_norm(tokens + layer.position_embeddings.numpy()[None], layer.embedding_norm)
    for block in layer.blocks:
        h = np_block(block, h, mask)
    return h, mask


@pytest.mark.parametrize("width", [8, 6])  # 6: the history and target are projected to 8
def test_bst_matches_numpy(width):
    seq, target = rand(4, 5, width), rand(4, width)
    layer = BST(8, 2, 2, 12, hidden_act="relu", max_position_embeddings=6,
                initializer_range=0.5)
    out = layer(seq, MASK, target).numpy()
    h, mask = np_bst(layer, seq, MASK, target)
    assert out.shape == (4, 7 * 8)
    np.testing.assert_allclose(out, (h * mask[..., None]).reshape(4, -1), rtol=2e-4, atol=2e-5)
    token = BST(8, 2, 2, 12, hidden_act="relu", max_position_embeddings=6,
                initializer_range=0.5, output_all_token_embeddings=False)
    out = token(seq, MASK, target).numpy()
    h, _ = np_bst(token, seq, MASK, target)
    np.testing.assert_allclose(out, h[:, 0], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("options,width", [
    ({}, 7 * 4),
    ({"target_item_position": "tail"}, 7 * 4),
    ({"output_all_token_embeddings": False}, 4),
    ({"output_all_token_embeddings": False, "target_item_position": "tail"}, 4),
    ({"target_item_position": "ignore", "reserve_target_position": False}, 6 * 4),
])
def test_bst_output_ignores_padding(options, width):
    seq, target = rand(4, 5, 4), rand(4, 4)
    layer = BST(4, 1, 2, 8, max_position_embeddings=6, **options)
    out = layer(seq, MASK, target).numpy()
    assert out.shape == (4, width) and np.all(np.isfinite(out))
    noisy = np.where(MASK[..., None], seq, 30.0).astype("float32")
    np.testing.assert_allclose(layer(noisy, MASK, target).numpy(), out, rtol=1e-5, atol=1e-5)
    # A history longer than max_position_embeddings keeps its first positions.
    longer = np.concatenate([seq, rand(4, 3, 4)], axis=1)
    longer_mask = np.concatenate([MASK, np.ones((4, 3), bool)], axis=1)
    cut = np.concatenate([MASK, np.ones((4, 1), bool)], axis=1)
    np.testing.assert_allclose(layer(longer, longer_mask, target).numpy(),
                               layer(longer[:, :6], cut, target).numpy(), rtol=1e-5, atol=1e-5)


def test_bst_without_target_reserves_a_zero_token():
    seq = rand(4, 5, 4)
    layer = BST(4, 1, 2, 8, max_position_embeddings=6, output_all_token_embeddings=False)
    out = layer([seq, MASK]).numpy()  # the backbone's list form, without a target
    assert out.shape == (4, 4) and np.all(np.isfinite(out))


# ---------------------------------------------------------------------------
# Keras serialisation


def _model(kind):
    hist, mask = keras.Input((5, 4)), keras.Input((5,), dtype="bool")
    target = keras.Input((4,))
    if kind == "pool":
        return keras.Model([hist, mask], SequencePooling("attention", name="l")(hist, mask))
    if kind == "attention":
        out = TargetAttention((6, 3), dropout_rate=0.1, name="l")(target, hist, mask)
        return keras.Model([hist, mask, target], out)
    if kind == "din":
        out = DIN({"hidden_units": [6, 1], "use_bn": True}, name="l")([hist, mask, target])
        return keras.Model([hist, mask, target], out)
    out = BST(4, 1, 2, 8, max_position_embeddings=5, name="l")(hist, mask, target)
    return keras.Model([hist, mask, target], out)


@pytest.mark.parametrize("kind", ["pool", "attention", "din", "bst"])
def test_layers_survive_keras_save_and_load(tmp_path, kind):
    model = _model(kind)
    inputs = [rand(4, 5, 4), MASK, rand(4, 4)][:len(model.inputs)]
    before = model(inputs).numpy()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(inputs).numpy(), before, rtol=1e-6, atol=1e-6)
    layer = model.get_layer("l")
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# ---------------------------------------------------------------------------
# Backbone blocks: plan, config errors, a tiny model


SEQ_INPUTS = edit('  features { input_names: "price" num_buckets: 50 embedding_dim: 4 }\n',
                  '  features { input_names: "price" num_buckets: 50 embedding_dim: 4 }\n'
                  '  features { input_names: "hist" feature_type: SequenceFeature '
                  'separator: "|" hash_bucket_size: 100 embedding_dim: 4 max_seq_len: 6 }\n',
                  edit('  input_fields { input_name: "price" input_type: INT32 }\n',
                       '  input_fields { input_name: "price" input_type: INT32 }\n'
                       '  input_fields { input_name: "hist" input_type: STRING }\n',
                       TINY_INPUTS))
DIN_LAYER = 'class_name: "DIN" din { attention_dnn { hidden_units: [8, 1] use_bn: false } }'
BST_LAYER = ('class_name: "BST" bst { hidden_size: 8 num_hidden_layers: 1 '
             'num_attention_heads: 2 intermediate_size: 8 max_position_embeddings: 6 }')


def rank_config(layer: str, seq_group: str = 'feature_names: "user" feature_names: "hist"'
                ) -> str:
    """EasyRec's din/bst_backbone_on_taobao structure, tiny: a sequence group (the target
    `user`, the history `hist`) read by an input_layer with output_seq_and_normal_feature,
    and the sequence layer next to an MLP on the other features."""
    return SEQ_INPUTS + f"""\
model_config {{
  model_class: "RankModel"
  feature_groups {{ group_name: "normal" feature_names: "price" }}
  feature_groups {{ group_name: "sequence" {seq_group} }}
  backbone {{
    blocks {{ name: "deep" inputs {{ feature_group_name: "normal" }}
             keras_layer {{ class_name: "MLP" mlp {{ hidden_units: [4] }} }} }}
    blocks {{ name: "seq_input" inputs {{ feature_group_name: "sequence" }}
             input_layer {{ output_seq_and_normal_feature: true }} }}
    blocks {{ name: "seq" inputs {{ block_name: "seq_input" }}
             keras_layer {{ {layer} }} }}
    top_mlp {{ hidden_units: [4] }}
  }}
  model_params {{ l2_regularization: 0.0 }}
}}
"""


COLUMNS = {"clk": tf.constant([1, 0, 1, 0]), "buy": tf.constant([0, 0, 1, 0]),
           "user": tf.constant(["a", "b", "c", "d"]), "price": tf.constant([3, 7, 11, 2]),
           "hist": tf.constant(["a|b|c", "", "d|a|a|b|c|d|a|b", "b"])}


def test_plan_gives_sequence_specs_and_layer_widths():
    pipeline = config_lib.parse_text(rank_config(DIN_LAYER))
    groups = {g.group_name: g for g in pipeline.model_config.feature_groups}
    features = {f.input_names[0]: f for f in pipeline.feature_config.features}
    widths = sequence_group_widths(groups, features)
    assert widths == {"sequence": (4, 4)}
    plan = backbone_plan(pipeline.model_config.backbone, {"normal": [4], "sequence": [4, 4]},
                         widths)
    assert plan.errors == []
    specs = {b.name: b for b in plan.blocks}
    assert specs["seq"].layer_specs[0] == [Tensor((None, 4)), Tensor((None,)), Tensor((4,))]
    din = catalogue.layer_params(text_format.Parse(DIN_LAYER, backbone_pb2.KerasLayer()))
    assert catalogue.CATALOGUE["DIN"].infer(din, specs["seq"].layer_specs[0]) == Tensor((8,))
    bst = catalogue.layer_params(text_format.Parse(BST_LAYER, backbone_pb2.KerasLayer()))
    assert catalogue.CATALOGUE["BST"].infer(bst, specs["seq"].layer_specs[0]) == \
        Tensor((7 * 8,))


@pytest.mark.parametrize("layer,seq_group,message,needle", [
    (DIN_LAYER, 'feature_names: "user" feature_names: "price"',
     "output_seq_and_normal_feature needs sequences in feature group 'sequence': it has no "
     "SequenceFeature", 'group_name: "sequence"'),
    (DIN_LAYER, 'feature_names: "hist"', "DIN takes [history (batch, len, d), mask (batch, "
     "len), target (batch, d_t)]", 'class_name: "DIN"'),
    ('class_name: "BST" bst { hidden_size: 6 num_hidden_layers: 1 num_attention_heads: 4 '
     'intermediate_size: 8 }', 'feature_names: "user" feature_names: "hist"',
     "BST hidden_size 6 must be a multiple of num_attention_heads 4", 'class_name: "BST"'),
    ('class_name: "BST" bst { hidden_size: 8 }', 'feature_names: "user" feature_names: "hist"',
     "BST needs num_hidden_layers", 'class_name: "BST"'),
    ('class_name: "DIN" din { attention_normalizer: "tanh" }',
     'feature_names: "user" feature_names: "hist"',
     'DIN attention_normalizer must be "softmax" or "sigmoid"', 'class_name: "DIN"'),
])
def test_sequence_block_config_errors_name_the_line(tmp_path, layer, seq_group, message,
                                                     needle):
    text = rank_config(layer, seq_group)
    path = tmp_path / "pipeline.config"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config_lib.load(str(path))
    line = [i for i, t in enumerate(text.splitlines(), 1) if needle in t][0]
    if needle.startswith("group_name"):  # the input_layer block's feature_group_name line
        line = [i for i, t in enumerate(text.splitlines(), 1)
                if 'name: "seq_input"' in t][0]
    assert message in str(info.value)
    assert f"{path}:{line}:" in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("layer", [DIN_LAYER, BST_LAYER])
def test_sequence_blocks_run_in_a_model_and_learn(layer):
    keras.utils.set_random_seed(0)
    pipeline = config_lib.from_pipeline(config_lib.parse_text(rank_config(layer))).pipeline
    feature_set = FeatureSet(pipeline)
    model = build_model(pipeline, feature_set)
    features = feature_set.preprocess(COLUMNS)
    model(features)
    # The block's output is the layer on the feature groups' own lookups.
    fg, block = model.feature_groups, model.backbone.block_layers["seq"]
    hist, mask = fg.dense_sequence("hist", features["hist"])
    np.testing.assert_array_equal(mask.numpy().sum(1), [3, 0, 6, 1])  # max_seq_len 6
    target = fg.embed("user", features["user"])
    inputs = model.backbone.sequences(features, "sequence")
    np.testing.assert_allclose(inputs[0].numpy(), hist.numpy())
    np.testing.assert_allclose(inputs[2].numpy(), target.numpy())
    if isinstance(block, DIN):
        _, pooled = np_target_attention(block.attention, target.numpy(), hist.numpy(),
                                        mask.numpy())
        np.testing.assert_allclose(block([hist, mask, target]).numpy()[:, :4], pooled,
                                   rtol=1e-5, atol=1e-6)
    optimizer = keras.optimizers.Adam(0.05)
    totals = []
    for _ in range(4):
        with tf.GradientTape() as tape:
            total = tf.add_n(list(model.weighted_losses(model(features, training=True),
                                                        COLUMNS).values()))
        variables = model.trainable_variables + fg.table_variables
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        totals.append(float(total))
    assert totals[-1] < totals[0]
    # Every weight of the sequence layer gets a gradient.
    by_id = {id(v): g for v, g in zip(variables, grads)}
    assert block.trainable_weights
    assert all(by_id.get(id(w)) is not None for w in block.trainable_weights)
