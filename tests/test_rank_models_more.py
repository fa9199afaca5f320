"""EasyRec's AutoInt, FM and RocketLaunching, model-level kd (distillation) and label_name:
logits and losses against numpy, the light net's stop-gradient, learning on a planted
signal, config errors with file:line, and the EasyRec samples passing check."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import edit, exact_auc
from mtrec import config as config_lib
from mtrec.errors import ConfigError
from test_rank_models import (EASYREC_SAMPLES, INPUTS, NO_BN, _build, _columns, _lookups,
                              _randomise_tables, _relu, _variables, assert_config_error_at)

AUTOINT = INPUTS + """\
model_config {
  model_class: "AutoInt"
  feature_groups { group_name: "all" feature_names: ["user", "item", "cate"] }
  autoint { multi_head_num: 2 multi_head_size: 3 interacting_layer_num: 2
            l2_regularization: 0.0 }
}
"""
FM = INPUTS + """\
model_config {
  model_class: "FM"
  feature_groups { group_name: "wide" feature_names: ["user", "item", "cate"] wide_deep: WIDE }
  feature_groups { group_name: "deep" feature_names: ["user", "item", "cate", "score"] }
  fm { l2_regularization: 0.0 }
}
"""
ROCKET = INPUTS + f"""\
model_config {{
  model_class: "RocketLaunching"
  feature_groups {{ group_name: "all" feature_names: ["user", "item", "cate", "score"] }}
  rocket_launching {{
    share_dnn {{ hidden_units: [8] {NO_BN} }}
    booster_dnn {{ hidden_units: [8, 6] {NO_BN} }}
    light_dnn {{ hidden_units: [6] {NO_BN} }}
    feature_based_distillation: true
    l2_regularization: 0.0
  }}
}}
"""
KD = """\
  kd { soft_label_name: "score" pred_name: "logits" loss_type: CROSS_ENTROPY_LOSS
       loss_weight: 0.5 temperature: 2.0 }
"""


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_autoint_logit_is_self_attention_over_the_fields():
    model, fs = _build(AUTOINT)
    features = fs.preprocess(_columns(8))
    model(features)
    _randomise_tables(model)
    got = model(features)["logits_clk"].numpy()
    v = _variables(model)
    x = np.stack(_lookups(model, features, ["user", "item", "cate"]), axis=1)  # (b, 3, 4)
    for i in range(2):
        w = {n: v[f"AutoInt/interacting_{i}/{n}/kernel"]
             for n in ("query", "key", "value", "residual")}
        q, k, val = ((x @ w[n]).reshape(8, 3, 2, 3).transpose(0, 2, 1, 3)
                     for n in ("query", "key", "value"))
        attention = _softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(3))      # (b, 2, 3, 3)
        heads = (attention @ val).transpose(0, 2, 1, 3).reshape(8, 3, 6)
        x = _relu(heads + x @ w["residual"])                                # (b, 3, 6)
    expected = (x.reshape(8, 18) @ v["AutoInt/tower_clk/logits/kernel"]
                + v["AutoInt/tower_clk/logits/bias"])[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_fm_logit_is_wide_plus_pairwise_interactions_plus_bias():
    model, fs = _build(FM)
    features = fs.preprocess(_columns(8))
    model(features)
    _randomise_tables(model)
    model.get_layer("fm_output").bias.assign([0.3])
    got = model(features)["logits_clk"].numpy()
    wide = sum(_lookups(model, features, ["user", "item", "cate"], "/wide"))[:, 0]
    e = _lookups(model, features, ["user", "item", "cate"])   # the raw "score" is left out
    pairs = sum((e[i] * e[j]).sum(axis=1) for i in range(3) for j in range(i + 1, 3))
    np.testing.assert_allclose(got, wide + pairs + 0.3, rtol=1e-5, atol=1e-5)
    # num_class 2: two wide weights per id and a Dense per class on the FM terms.
    two, fs2 = _build(edit("  fm {", "  num_class: 2\n  fm {", FM))
    out = two(fs2.preprocess(_columns(4)))
    assert out["logits_clk"].shape == (4, 2)
    assert _variables(two)["tables/item/wide"].shape == (20, 2)


def test_rocket_launching_outputs_losses_and_light_net_stop_gradient():
    model, fs = _build(ROCKET)
    columns = _columns(16)
    features = fs.preprocess(columns)
    labels = {"clk": columns["clk"]}
    with tf.GradientTape(persistent=True) as tape:
        outputs = model(features, training=True)
        losses = model.compute_losses(outputs, labels)
    assert sorted(outputs) == ["logits_booster", "logits_light", "probs_booster",
                               "probs_light", "similarity_0"]
    assert list(losses) == ["booster", "light", "hint_loss", "similarity_0"]
    light, booster = outputs["logits_light"].numpy(), outputs["logits_booster"].numpy()
    np.testing.assert_allclose(losses["hint_loss"].numpy(), np.mean((light - booster) ** 2),
                               rtol=1e-5)
    # Light layer 0 (width 6) is matched with booster layer 1 (width 6): -0.1 * mean cosine.
    v = _variables(model)
    x = np.concatenate(_lookups(model, features, ["user", "item", "cate"])
                       + [features["score"]["values"].numpy()], axis=1)
    dense = lambda h, name: _relu(  # noqa: E731
        h @ v[f"RocketLaunching/{name}/kernel"] + v[f"RocketLaunching/{name}/bias"])
    shared = dense(x, "share_dnn/dense_0")
    b1 = dense(dense(shared, "booster_light/booster_dnn_0/dense_0"),
               "booster_light/booster_dnn_1/dense_0")
    l0 = dense(shared, "booster_light/light_dnn_0/dense_0")
    cosine = (b1 * l0).sum(1) / np.linalg.norm(b1, axis=1) / np.linalg.norm(l0, axis=1)
    np.testing.assert_allclose(losses["similarity_0"].numpy(), -0.1 * cosine.mean(),
                               rtol=1e-4, atol=1e-6)
    # The light net's terms never reach the shared layers or the embeddings.
    student = losses["light"] + losses["hint_loss"] + losses["similarity_0"]
    shared_kernel = model.share.dense_layers[0].kernel
    assert tape.gradient(student, shared_kernel) is None
    assert tape.gradient(student, model.feature_groups.tables["item"]) is None
    assert tape.gradient(losses["booster"], shared_kernel) is not None
    # Nor does the hint train the booster.
    booster_kernel = model.nets.booster[-1].dense_layers[0].kernel
    assert tape.gradient(losses["hint_loss"], booster_kernel) is None


@pytest.mark.slow
def test_rocket_launching_learns_the_planted_signal():
    """The booster learns the signal; the light net, which trains neither the embeddings nor
    the shared layers, follows from the representation the booster trains."""
    keras.utils.set_random_seed(0)
    model, fs = _build(ROCKET)
    columns = _columns(128)
    features = fs.preprocess(columns)
    labels = {"clk": columns["clk"]}
    optimizer = keras.optimizers.Adam(0.02)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            losses = model.compute_losses(model(features, training=True), labels)
            total = tf.add_n(list(losses.values()))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return losses

    first = {k: float(v) for k, v in step().items()}
    for _ in range(60):
        last = {k: float(v) for k, v in step().items()}
    assert last["booster"] < 0.85 * first["booster"], (first, last)
    assert last["light"] < 0.9 * first["light"], (first, last)
    # The light net ranks the rows (AUC 0.44 at the start with this seed).
    assert exact_auc(columns["clk"].numpy(), model(features)["probs_light"].numpy()) > 0.7


def test_kd_adds_a_distillation_term_of_the_soft_label():
    text = edit("  fm {", KD + "  fm {", FM)
    model, fs = _build(text)
    columns = _columns(16)
    outputs = model(fs.preprocess(columns))
    losses = model.compute_losses(outputs, {"clk": columns["clk"], "score": columns["score"]})
    assert list(losses) == ["clk", "kd_loss_logits_score"]
    # CROSS_ENTROPY_LOSS at temperature 2: log loss of sigmoid(s / 2) against sigmoid(t / 2).
    p = _sigmoid(outputs["logits_clk"].numpy() / 2)
    q = _sigmoid(columns["score"].numpy() / 2)
    expected = 0.5 * np.mean(-q * np.log(p + 1e-7) - (1 - q) * np.log(1 - p + 1e-7))
    np.testing.assert_allclose(losses["kd_loss_logits_score"].numpy(), expected, rtol=1e-5)
    # The soft label is a side column the reader delivers.
    pipeline = config_lib.parse_text(text, "x.config")
    config_lib.prepare(pipeline, config_lib.Source("x.config", text))
    assert config_lib.label_names(pipeline) == ["clk", "score"]
    # A pairwise kd term groups rows by its session column, which the reader then delivers.
    from mtrec.training.job import side_columns
    pairwise = edit("  fm {", '  kd { soft_label_name: "score" pred_name: "logits_clk" '
                    'loss_type: PAIRWISE_HINGE_LOSS pairwise_hinge_loss { session_name: "cate" '
                    '} }\n  fm {', FM)
    model, fs = _build(pairwise)
    pipeline = config_lib.parse_text(pairwise, "x.config")
    config_lib.prepare(pipeline, config_lib.Source("x.config", pairwise))
    assert side_columns(pipeline) == ["clk", "score", "cate"]
    losses = model.compute_losses(model(fs.preprocess(columns)), columns)
    assert set(losses) == {"clk", "kd_loss_logits_clk_score"}


def test_label_name_picks_the_rank_models_label():
    text = edit("  fm {", '  label_name: "buy"\n  fm {', FM)
    model, fs = _build(text)
    assert [(t.tower_name, t.label_name) for t in model.tower_configs] == [("buy", "buy")]
    assert "logits_buy" in model(fs.preprocess(_columns(4)))


@pytest.mark.parametrize("text, old, new, snippet, message", [
    (FM, "  fm {", KD.replace('"logits"', '"logits_ctr"') + "  fm {", "pred_name",
     "kd pred_name 'logits_ctr' is not a model output; outputs: logits_clk, probs_clk, y_clk"),
    (FM, "  fm {", KD.replace('"score"', '"nope"') + "  fm {", "soft_label_name",
     "kd soft_label_name 'nope' is not an input field."),
    (FM, "  fm {", KD.replace('"logits"', '"probs"') + "  fm {", "pred_name",
     "kd pred_name 'probs' is a probability; set pred_is_logits: false."),
    (FM, "  fm {", KD.replace("CROSS_ENTROPY_LOSS", "JRC_LOSS") + "  fm {", "JRC_LOSS",
     "kd loss_type JRC_LOSS is not supported for distillation"),
    (FM, "  fm {", KD.replace("temperature: 2.0", "temperature: 0") + "  fm {", "temperature",
     "kd temperature must be > 0"),
    (AUTOINT, '"cate"] }', '"cate", "score"] }', "group_name",
     "autoint: the fields of feature group 'all' attend to each other, so they need one "
     "width (embedding_dim); they differ"),
    (ROCKET, "feature_based_distillation: true", "feature_based_distillation: true\n"
     "    feature_distillation_function: INNER_PRODUCT", "feature_distillation_function",
     "rocket_launching feature_distillation_function INNER_PRODUCT is not supported"),
    (FM, "fm { l2_regularization: 0.0 }", "fm { l2_regularization: 0.0 }\n"
     "  num_class: 2\n  losses { loss_type: ZILN_LOSS }", "ZILN_LOSS",
     "ZILN_LOSS reads three logits (P(y > 0), mu, sigma); set num_class: 3 (it is 2)."),
], ids=["kd_pred_name", "kd_soft_label", "kd_probs", "kd_type", "kd_temperature",
        "autoint_widths", "rocket_inner_product", "ziln_num_class"])
def test_config_errors_name_file_and_line(text, old, new, snippet, message):
    assert_config_error_at(edit(old, new, text), snippet, message)


def test_label_name_of_a_multi_task_model_is_an_error():
    bad = edit('  model_class: "AutoInt"\n',
               '  model_class: "SimpleMultiTask"\n  label_name: "clk"\n',
               edit("  autoint { multi_head_num: 2 multi_head_size: 3 interacting_layer_num: 2\n"
                    "            l2_regularization: 0.0 }",
                    '  simple_multi_task { task_towers { tower_name: "ctr" label_name: "clk" } }',
                    AUTOINT))
    with pytest.raises(ConfigError, match=r"x.config:\d+: model_config.label_name picks the "
                                          r"label of a rank model's one output"):
        _build(bad)


def test_easyrec_samples_pass_check():
    failed = {}
    for name in ("autoint_on_taobao", "autoint_on_sequence_feature_taobao", "fm_on_taobao",
                 "fm_variational_dropout_on_taobao", "rocket_launching",
                 "rocket_launching_feature_based", "rocket_launching_on_sequence_feature_taobao",
                 "mlp_on_taobao_with_ziln_loss"):
        try:
            config_lib.load(os.path.join(EASYREC_SAMPLES, name + ".config"))
        except ConfigError as e:
            failed[name] = str(e)
    assert not failed, failed
