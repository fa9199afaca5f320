"""DBMTL and AITM: relation order, relation config errors, AITM attention maths, the label
constraint, and the aitm sample end to end (train -> export -> load -> call)."""

import numpy as np
import pytest
import tensorflow as tf

import conftest
from conftest import TINY_INPUTS
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from mtrec.features.feature import FeatureSet
from mtrec.layers import AITMAttention, AITModule
from mtrec.models.losses import head_outputs
from mtrec.models.relation_towers import relation_order
from mtrec.models.registry import build_model

# A tiny DBMTL; the child tower (cvr) comes first so only dependency order makes it work.
CONFIG = TINY_INPUTS + """\
model_config {
  model_class: "DBMTL"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  dbmtl {
    bottom_dnn { hidden_units: [8] }
    task_towers {
      tower_name: "cvr"
      label_name: "buy"
      dnn { hidden_units: [6] }
      relation_tower_names: ["ctr"]
      relation_dnn { hidden_units: [5] }
    }
    task_towers {
      tower_name: "ctr"
      label_name: "clk"
      dnn { hidden_units: [6] }
      relation_dnn { hidden_units: [3] }
    }
    l2_regularization: 0.0
  }
}
"""

AIT_CVR = """    task_towers {
      tower_name: "cvr"
      label_name: "buy"
      dnn { hidden_units: [6] }
      relation_tower_names: ["ctr"]
      use_ait_module: true
      ait_project_dim: 4
    }"""


def edit(old, new, text=CONFIG):
    return conftest.edit(old, new, text)


def cvr_block(text=CONFIG):
    start = text.index("    task_towers {\n      tower_name: \"cvr\"")
    return text[start:text.index("    }\n", start) + 5]


def ait_config(alpha=0.5):
    text = edit(cvr_block(), AIT_CVR + "\n")
    return edit("l2_regularization: 0.0", f"l2_regularization: 0.0\n    "
                f"ait_label_constraint_weight: {alpha}", text)


def build(text):
    pipeline = config_lib.from_pipeline(config_lib.parse_text(text)).pipeline
    feature_set = FeatureSet(pipeline)
    model = build_model(pipeline, feature_set)
    columns = {"clk": tf.constant([1, 0, 1]), "buy": tf.constant([0, 0, 1]),
               "user": tf.constant(["a", "b", "c"]), "price": tf.constant([3, 7, 11])}
    features = feature_set.preprocess(columns)
    model(features)  # creates the variables
    return model, features, columns


def load_error(tmp_path, text):
    path = tmp_path / "pipeline.config"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config_lib.load(str(path))
    return str(path), str(info.value)


def line_of(text, needle, nth=1):
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][nth - 1]


# ---------------------------------------------------------------------------
# Relation order and wiring


def test_relation_order_puts_parents_first():
    towers = config_lib.task_towers(config_lib.parse_text(CONFIG).model_config)
    assert [towers[i].tower_name for i in relation_order(towers)] == ["ctr", "cvr"]


def test_child_tower_reads_parent_relation_output():
    model, features, _ = build(CONFIG)
    groups = model.feature_groups(features)
    r_cvr, r_ctr = model.relation_outputs(groups)
    assert r_cvr.shape == (3, 5) and r_ctr.shape == (3, 3)
    # r_cvr = relation_dnn_cvr(concat[h_cvr, r_ctr]), with ctr's *relation* output.
    x = model.bottom(model.group_tensor(groups))
    h_cvr = model.task_towers[0](x)
    expected = model.relation_layers["cvr"](tf.concat([h_cvr, r_ctr], axis=-1))
    np.testing.assert_allclose(r_cvr.numpy(), expected.numpy(), rtol=1e-6)
    before = model(features)

    # Zeroing ctr's relation DNN makes r_ctr = 0 and changes cvr, through the relation only.
    for weight in model.relation_layers["ctr"].weights:
        weight.assign(tf.zeros_like(weight))
    r_cvr_zeroed, r_ctr_zeroed = model.relation_outputs(groups)
    np.testing.assert_array_equal(r_ctr_zeroed.numpy(), 0.0)
    expected = model.relation_layers["cvr"](tf.concat([h_cvr, tf.zeros([3, 3])], axis=-1))
    np.testing.assert_allclose(r_cvr_zeroed.numpy(), expected.numpy(), rtol=1e-6)
    after = model(features)
    assert not np.allclose(before["logits_cvr"].numpy(), after["logits_cvr"].numpy())

    # Perturbing the child never reaches the parent.
    for weight in model.relation_layers["cvr"].weights:
        weight.assign(weight + 1.0)
    again = model(features)
    np.testing.assert_array_equal(again["logits_ctr"].numpy(), after["logits_ctr"].numpy())
    assert not np.allclose(again["logits_cvr"].numpy(), after["logits_cvr"].numpy())


def test_dbmtl_with_mmoe_and_named_variables():
    text = edit("bottom_dnn { hidden_units: [8] }",
                "bottom_dnn { hidden_units: [8] }\n    expert_dnn { hidden_units: [4] }\n"
                "    num_expert: 2")
    model, features, _ = build(text)
    paths = set(model.checkpoint_variables())
    for path in ("DBMTL/mmoe/gate_1/kernel", "DBMTL/relation_cvr/dense_0/kernel",
                 "DBMTL/tower_ctr/dense_0/kernel", "DBMTL/output_cvr/kernel"):
        assert path in paths
    assert model(features)["probs_ctr"].shape == (3,)


# ---------------------------------------------------------------------------
# Config errors: unknown relation tower, cycles (both towers named, with a line)


def test_unknown_relation_tower_names_both_towers_and_line(tmp_path):
    text = edit('relation_tower_names: ["ctr"]', 'relation_tower_names: ["click"]')
    path, message = load_error(tmp_path, text)
    assert (f"{path}:{line_of(text, 'click')}: tower 'cvr': relation tower 'click' is not a "
            "task tower") in message


def test_relation_cycle_names_both_towers_and_line(tmp_path):
    text = edit('relation_dnn { hidden_units: [3] }',
                'relation_tower_names: "cvr"\n      relation_dnn { hidden_units: [3] }')
    path, message = load_error(tmp_path, text)
    assert message.startswith(f"{path}: 1 problem:")
    assert "'cvr'" in message and "'ctr'" in message and "cycle" in message
    lines = {line_of(text, 'relation_tower_names: ["ctr"]'),
             line_of(text, 'relation_tower_names: "cvr"')}
    assert any(f"{path}:{n}: tower " in message for n in lines)
    # The model refuses a cycle too when built from an unvalidated config.
    towers = config_lib.task_towers(config_lib.parse_text(text).model_config)
    with pytest.raises(ConfigError, match="cycle"):
        relation_order(towers)


def test_self_relation_and_ait_with_relation_dnn_are_errors(tmp_path):
    text = edit('relation_tower_names: ["ctr"]', 'relation_tower_names: ["cvr"]')
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'relation_tower_names')}: tower 'cvr' lists itself" in message
    text = edit("relation_dnn { hidden_units: [5] }",
                "relation_dnn { hidden_units: [5] }\n      use_ait_module: true")
    path, message = load_error(tmp_path, text)
    assert "use_ait_module and relation_dnn are exclusive" in message


def test_relation_fields_outside_dbmtl_are_errors(tmp_path):
    text = edit('model_class: "DBMTL"', 'model_class: "SimpleMultiTask"')
    text = text.replace("dbmtl {\n    bottom_dnn { hidden_units: [8] }", "simple_multi_task {")
    path, message = load_error(tmp_path, text)
    assert "relation_tower_names only applies to DBMTL" in message
    assert "relation_dnn only applies to DBMTL" in message


# ---------------------------------------------------------------------------
# AITM maths


def _dense(layer, x):
    return x @ layer.kernel.numpy() + layer.bias.numpy()


def _softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("query", ["each", "own"])
def test_aitm_attention_matches_numpy(query):
    layer = AITMAttention(project_dim=3, query=query)
    z = [tf.random.stateless_normal([2, 4], seed=[1, 2]),
         tf.random.stateless_normal([2, 5], seed=[3, 4]),
         tf.random.stateless_normal([2, 4], seed=[5, 6])]
    output, weights = layer(z, return_weights=True)
    assert output.shape == (2, 3) and weights.shape == (2, 3)
    np.testing.assert_allclose(weights.numpy().sum(axis=1), np.ones(2), rtol=1e-6)
    zs = [x.numpy() for x in z]
    q = np.stack([_dense(l, x) for l, x in zip(layer.queries, zs)], axis=1)
    k = np.stack([_dense(l, x) for l, x in zip(layer.keys, zs)], axis=1)
    v = np.stack([_dense(l, x) for l, x in zip(layer.values, zs)], axis=1)
    if query == "own":
        q = q[:, :1]
    w = _softmax((q * k).sum(-1) / np.sqrt(3))
    np.testing.assert_allclose(weights.numpy(), w, rtol=1e-5)
    np.testing.assert_allclose(output.numpy(), (w[:, :, None] * v).sum(1), rtol=1e-5, atol=1e-6)


def test_aitm_attention_hand_computed_value():
    # Identity projections (d = 2): scores <z_i, z_i> / sqrt(2) = [1, 4] / sqrt(2).
    layer = AITMAttention()
    own, other = tf.constant([[1.0, 0.0]]), tf.constant([[0.0, 2.0]])
    layer([own, other])
    for dense in layer.queries + layer.keys + layer.values:
        dense.kernel.assign(np.eye(2, dtype="float32"))
        dense.bias.assign(np.zeros(2, "float32"))
    output, weights = layer([own, other], return_weights=True)
    w = np.exp([1 / np.sqrt(2), 4 / np.sqrt(2)])
    w /= w.sum()
    np.testing.assert_allclose(weights.numpy(), [w], rtol=1e-6)
    np.testing.assert_allclose(output.numpy(), [[w[0], 2 * w[1]]], rtol=1e-6)


def test_ait_module_transfers_parents_then_attends():
    module = AITModule(num_parents=1, project_dim=0, name="ait")
    own = tf.random.stateless_normal([3, 4], seed=[7, 8])
    parent = tf.random.stateless_normal([3, 6], seed=[9, 10])
    out = module([own, parent])
    assert out.shape == (3, 4)  # project_dim 0: the tower's own width
    transferred = module.transfers[0](parent)
    assert transferred.shape == (3, 4)
    np.testing.assert_allclose(out.numpy(), module.attention([own, transferred]).numpy(),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="at least one parent"):
        AITModule(num_parents=0)
    with pytest.raises(ValueError, match="query must be one of"):
        AITMAttention(query="first")
    with pytest.raises(ValueError, match=r"\[own, 1 parent\(s\)\]"):
        AITModule(num_parents=1)([own])


# ---------------------------------------------------------------------------
# The label constraint


def test_label_constraint_term_on_a_tiny_batch():
    model, features, columns = build(ait_config(alpha=0.5))
    assert "ait_cvr" in {layer.name for layer in model.relation_layers.values()}
    towers = {t.tower_name: t for t in model.tower_configs}
    outputs = {}
    outputs.update(head_outputs(towers["ctr"], tf.constant([[0.0], [-1.0], [2.0]])))
    outputs.update(head_outputs(towers["cvr"], tf.constant([[1.0], [-2.0], [2.5]])))
    labels = {"clk": columns["clk"], "buy": columns["buy"]}
    losses = model.compute_losses(outputs, labels)
    assert list(losses) == ["cvr", "ctr", "cvr_constraint"]
    p_ctr, p_cvr = outputs["probs_ctr"].numpy(), outputs["probs_cvr"].numpy()
    expected = 0.5 * np.mean(np.maximum(p_cvr - p_ctr, 0.0))
    assert expected > 0
    assert float(losses["cvr_constraint"]) == pytest.approx(expected, rel=1e-6)
    # alpha 0: no constraint entry.
    model, _, _ = build(ait_config(alpha=0.0))
    assert list(model.compute_losses(outputs, labels)) == ["cvr", "ctr"]


# ---------------------------------------------------------------------------
# The aitm sample end to end
