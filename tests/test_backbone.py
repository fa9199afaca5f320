"""Component backbone: block graph order, config errors with their lines, every registered
layer's shapes, SENet / DotInteraction / Cross against numpy, an MMoE built from blocks
against the native model, and EasyRec's backbone sample structures (in tiny form)."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

import conftest
from conftest import TINY_INPUTS
from mtrec import config as config_lib
from mtrec.backbone import catalogue, specs
from mtrec.backbone.plan import plan as backbone_plan
from mtrec.errors import ConfigError
from mtrec.features.feature import FeatureSet
from mtrec.layers.cross import Cross
from mtrec.layers.dot_interaction import DotInteraction
from mtrec.layers.input_layer import GroupInput
from mtrec.layers.mlp import MLP
from mtrec.layers.senet import SENet
from mtrec.models.registry import build_model
from mtrec.protos import backbone_pb2

TOWERS = """
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] use_bn: false } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] use_bn: false } }
"""


def multitask(blocks: str, towers: str = TOWERS, extra: str = "") -> str:
    """A MultiTaskModel config on the tiny inputs (group "all": user and price, 4 + 4)."""
    return TINY_INPUTS + f"""\
model_config {{
  model_class: "MultiTaskModel"
  feature_groups {{ group_name: "all" feature_names: "user" feature_names: "price" }}
  backbone {{
{blocks}
  }}
  model_params {{{towers}    l2_regularization: 0.0
  }}
{extra}}}
"""


MMOE_BLOCKS = """\
    blocks {
      name: "feats"
      inputs { feature_group_name: "all" }
      input_layer { only_output_feature_list: true }
    }
    blocks {
      name: "mmoe"
      inputs { block_name: "senet" }
      keras_layer {
        class_name: "MMoE"
        mmoe { num_task: 2 num_expert: 3 expert_mlp { hidden_units: [8, 4] } }
      }
    }
    blocks {
      name: "senet"
      inputs { block_name: "feats" }
      keras_layer { class_name: "SENet" senet { reduction_ratio: 2 } }
    }"""

COLUMNS = {"clk": tf.constant([1, 0, 1, 0]), "buy": tf.constant([0, 0, 1, 0]),
           "user": tf.constant(["a", "b", "c", "d"]), "price": tf.constant([3, 7, 11, 2])}


def line_of(text: str, needle: str, nth: int = 1) -> int:
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][nth - 1]


def load_error(tmp_path, text: str) -> tuple[str, str]:
    path = tmp_path / "pipeline.config"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config_lib.load(str(path))
    return str(path), str(info.value)


def build(text: str):
    keras.utils.set_random_seed(0)  # "the loss falls in 3 steps" must not depend on luck
    pipeline = config_lib.from_pipeline(config_lib.parse_text(text)).pipeline
    feature_set = FeatureSet(pipeline)
    model = build_model(pipeline, feature_set)
    features = feature_set.preprocess(COLUMNS)
    outputs = model(features)  # creates the variables
    return model, features, outputs


def train_steps(model, features, steps=3) -> list:
    """A few Adam steps; the total losses."""
    optimizer = keras.optimizers.Adam(0.05)
    totals = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            outputs = model(features, training=True)
            losses = model.weighted_losses(outputs, COLUMNS)
            total = tf.add_n(list(losses.values()))
        variables = model.trainable_variables + model.feature_groups.table_variables
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        totals.append(float(total))
    return totals, losses


# ---------------------------------------------------------------------------
# The graph


def test_blocks_run_in_topological_order_and_leaves_are_the_output():
    backbone = config_lib.parse_text(multitask(MMOE_BLOCKS)).model_config.backbone
    plan = backbone_plan(backbone, {"all": [4, 4]})
    assert plan.errors == []
    assert [b.name for b in plan.blocks] == ["feats", "senet", "mmoe"]
    assert plan.output_names == ["mmoe"] and not plan.as_list
    assert plan.output == [specs.Tensor((4,))] * 2
    senet = plan.blocks[1]
    assert senet.input_spec == [specs.Tensor((4,))] * 2


def test_input_slices_are_parsed_not_evaluated():
    assert specs.parse_slice("[1]") == 1
    assert specs.parse_slice(" [ -1 ] ") == -1
    assert specs.parse_slice("[1:]") == slice(1, None)
    assert specs.parse_slice("[:2]") == slice(None, 2)
    for bad in ("[__import__('os')]", "[0][1]", "x[0]", "[1.5]", "[a]"):
        with pytest.raises(ValueError, match="input_slice"):
            specs.parse_slice(bad)


def test_config_module_needs_no_tensorflow():
    code = ("import sys; import mtrec.config, mtrec.backbone.plan, mtrec.features.width; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------
# Config errors, each with the block's file:line


def _block(name, inputs, layer=""):
    return f"""    blocks {{
      name: "{name}"
{inputs}
{layer}
    }}"""


CASES = {
    "unknown_class": (
        _block("x", '      inputs { feature_group_name: "all" }',
               '      keras_layer { class_name: "Transformer" }'),
        'class_name: "Transformer"',
        ["unknown class_name 'Transformer'", "registered layers: AITMTower, Activation"]),
    "unknown_block": (
        _block("x", '      inputs { block_name: "nowhere" }',
               '      keras_layer { class_name: "MLP" mlp { hidden_units: [4] } }'),
        'block_name: "nowhere"', ["input block 'nowhere' does not exist; blocks: x"]),
    "unknown_group": (
        _block("x", '      inputs { feature_group_name: "users" }',
               '      keras_layer { class_name: "MLP" mlp { hidden_units: [4] } }'),
        'feature_group_name: "users"', ["feature group 'users' does not exist; groups: all"]),
    "params_of_another_class": (
        _block("x", '      inputs { feature_group_name: "all" }',
               '      keras_layer { class_name: "SENet" mlp { hidden_units: [4] } }'),
        'class_name: "SENet"', ["SENet takes `senet { ... }` (or st_params), not `mlp`"]),
    "unknown_st_param": (
        _block("x", '      inputs { feature_group_name: "all" }',
               '      keras_layer { class_name: "MLP" st_params { fields { key: "units" '
               'value { number_value: 4 } } } }'),
        'class_name: "MLP"', ["MLP st_params do not fit its `mlp` message", "units"]),
    "tensor_into_list_layer": (
        _block("x", '      inputs { feature_group_name: "all" }',
               '      keras_layer { class_name: "SENet" }'),
        'class_name: "SENet"', ["SENet takes a list of (batch, d) tensors, got a (batch, 8) "
                                "tensor", "only_output_feature_list"]),
    "list_into_tensor_layer": (
        _block("x", '      inputs { feature_group_name: "all" }\n'
               '      inputs { feature_group_name: "all" }\n      merge_inputs_into_list: true',
               '      keras_layer { class_name: "MLP" mlp { hidden_units: [4] } }'),
        'class_name: "MLP"', ["MLP takes one tensor, got a list of 2"]),
    "input_fn": (
        _block("x", '      inputs { feature_group_name: "all" input_fn: "lambda x: x.numpy()" }'),
        "input_fn", ["input_fn 'x.numpy' is not allowed; allowed: x, x[k]"]),
    "input_fn_of_tensor": (
        _block("x", '      inputs { feature_group_name: "all" input_fn: "lambda x: x[1]" }'),
        "input_fn", ["input_fn 'lambda x: x[1]': [1] picks from a list, got a (batch, 8) "
                     "tensor"]),
    "lambda": (
        _block("x", '      inputs { feature_group_name: "all" }',
               '      lambda { expression: "lambda x: __import__(1)" }'),
        "expression", ["lambda '__import__' is not allowed"]),
    "extra_input_fn": (
        _block("x", '      inputs { feature_group_name: "all" }\n'
               '      extra_input_fn: "lambda x: tf.reduce_sum(x, axis=0)"'),
        "extra_input_fn", ["extra_input_fn 'lambda x: tf.reduce_sum(x, axis=0)': "
                           "tf.reduce_sum axis 0 is out of range (or the batch axis)"]),
    "recurrent": (
        _block("x", '      inputs { feature_group_name: "all" }',
               '      recurrent { num_steps: 3 fixed_input_index: 0 '
               'keras_layer { class_name: "Cross" } }'),
        'class_name: "Cross"', ["recurrent with fixed_input_index 0 takes a list input"]),
    "bad_slice": (
        _block("x", '      inputs { feature_group_name: "all" input_slice: "[0][1]" }'),
        "input_slice", ["input_slice '[0][1]' is not supported"]),
    "slice_of_tensor": (
        _block("x", '      inputs { feature_group_name: "all" input_slice: "[0]" }'),
        "input_slice", ["input_slice [0] needs a list input, got a (batch, 8) tensor"]),
    "group_named_block": (
        _block("all", '      inputs { feature_group_name: "all" }'),
        '      name: "all"', ["block 'all' has the name of a feature group"]),
    "duplicate_name": (
        _block("x", '      inputs { feature_group_name: "all" }') + "\n" +
        _block("x", '      inputs { feature_group_name: "all" }'),
        ('name: "x"', 2), ["block name 'x' is used twice"]),
    "input_layer_two_inputs": (
        _block("x", '      inputs { feature_group_name: "all" }\n'
               '      inputs { feature_group_name: "all" }', "      input_layer {}"),
        'name: "x"', ["input_layer block 'x' takes exactly one input"]),
    "mmoe_tasks_vs_towers": (
        _block("x", '      inputs { feature_group_name: "all" }',
               '      keras_layer { class_name: "MMoE" mmoe { num_task: 3 num_expert: 2 '
               'expert_mlp { hidden_units: [4] } } }'),
        "backbone {", ["the backbone gives 3 outputs", "has 2 task_towers"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_backbone_config_errors_name_block_and_line(tmp_path, case):
    blocks, needle, parts = CASES[case]
    text = multitask(blocks)
    path, message = load_error(tmp_path, text)
    needle, nth = needle if isinstance(needle, tuple) else (needle, 1)
    assert f"{path}:{line_of(text, needle, nth)}: " in message, message
    for part in parts:
        assert part in message, message


def test_cycle_error_names_the_cycle(tmp_path):
    blocks = "\n".join([
        _block("a", '      inputs { block_name: "c" }'),
        _block("b", '      inputs { block_name: "a" }'),
        _block("c", '      inputs { block_name: "b" }\n      inputs { feature_group_name: "all" }'),
        _block("d", '      inputs { feature_group_name: "all" }')])
    text = multitask(blocks, extra='  model_name: "cyclic"\n')
    path, message = load_error(tmp_path, text)
    line = line_of(text, 'name: "a"')
    assert f"{path}:{line}: blocks form a cycle (a -> c -> b -> a)" in message


def test_unsupported_packages_and_outputs(tmp_path):
    text = multitask(_block("x", '      inputs { feature_group_name: "all" }') +
                     '\n    packages { name: "p" }')
    text = conftest.edit("    l2_regularization: 0.0\n", "    l2_regularization: 0.0\n"
                         '    outputs: "extra"\n', text)
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'packages {')}: backbone package 'p' has no blocks" \
        in message
    assert f"{path}:{line_of(text, 'outputs:')}: model_params.outputs is not supported" in message


def test_native_model_needs_one_tensor_from_its_backbone(tmp_path):
    text = TINY_INPUTS + """\
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  backbone {
    blocks { name: "feats" inputs { feature_group_name: "all" }
             input_layer { only_output_feature_list: true } }
  }
  mmoe {
    expert_dnn { hidden_units: [8] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" }
    task_towers { tower_name: "cvr" label_name: "buy" }
  }
}
"""
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'backbone {')}: the backbone output does not fit the model: " \
        "under `mmoe` the backbone output replaces the feature-group input, so it must be one " \
        "(batch, d) tensor, got a list of 2" in message


def test_backbone_models_need_a_backbone_and_rank_model_one_tower(tmp_path):
    text = multitask(_block("x", '      inputs { feature_group_name: "all" }'))
    start, end = text.index("  backbone {"), text.index("  model_params {")
    path, message = load_error(tmp_path, text[:start] + text[end:])
    assert "model_class 'MultiTaskModel' builds its towers on a backbone" in message
    text = text.replace('"MultiTaskModel"', '"RankModel"')
    path, message = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'task_towers {', 1)}: RankModel has one output but " \
        "model_params has 2 task_towers" in message


def test_model_class_agreement_names_both_backbone_classes(tmp_path):
    text = multitask(_block("x", '      inputs { feature_group_name: "all" }'))
    text = text.replace('"MultiTaskModel"', '"MMoE"')
    _, message = load_error(tmp_path, text)
    assert "use `mmoe { ... }` or model_class 'MultiTaskModel' or 'RankModel'" in message


# ---------------------------------------------------------------------------
# Registered layers: every class builds and has the shape its spec promises.

F = specs.Tensor
LAYER_CASES = {
    "MLP": ('mlp { hidden_units: [6, 3] }', F((8,))),
    "SENet": ('senet { reduction_ratio: 2 }', [F((4,)), F((6,))]),
    "FM": ('fm { }', [F((4,))] * 3),
    "DotInteraction": ('dot_interaction { self_interaction: true }', [F((4,))] * 3),
    "Cross": ('cross { projection_dim: 2 }', [F((5,)), F((5,))]),
    "MMoE": ('mmoe { num_task: 2 num_expert: 2 }', [F((3,)), F((3,)), F((7,))]),
    "CGC": ('cgc { num_task: 2 expert_num_per_task: 1 share_num: 1 shared_gate: true '
            'task_expert_net { hidden_units: [5] } }', F((8,))),
    "PLE": ('ple { num_task: 2 extraction_networks { expert_num_per_task: 1 share_num: 1 '
            'task_expert_net { hidden_units: [5] } share_expert_net { hidden_units: [5] } } '
            'extraction_networks { share_num: 2 share_expert_net { hidden_units: [3] } } }',
            F((8,))),
    "PPNet": ('ppnet { mlp { hidden_units: [6, 2] } mode: "lazy" }', [F((8,)), F((4,))]),
    "GateNU": ('gate_nu { hidden_dim: 3 }', F((5,))),
    "AITMTower": ('aitm { project_dim: 3 transfer_mlp { hidden_units: [4] } }',
                  [F((6,)), F((5,))]),
    "MaskBlock": ('mask_block { aggregation_size: 6 output_size: 3 }', [F((8,)), F((4,))]),
    "MaskNet": ('masknet { mask_blocks { reduction_factor: 0.5 output_size: 3 } '
                'mask_blocks { aggregation_size: 4 } use_parallel: false }', F((8,))),
    # [history (batch, len, d), mask (batch, len), target (batch, d_t)]
    "DIN": ('din { attention_dnn { hidden_units: [4, 1] } }', [F((5, 4)), F((5,)), F((4,))]),
    "BST": ('bst { hidden_size: 4 num_hidden_layers: 1 num_attention_heads: 2 '
            'intermediate_size: 6 max_position_embeddings: 5 }', [F((5, 4)), F((5,)), F((4,))]),
    "FiBiNet": ('fibinet { senet { reduction_ratio: 2 } bilinear { type: "each" '
                'num_output_units: 5 } mlp { hidden_units: [3] } }', [F((4,))] * 3),
    "Bilinear": ('bilinear { type: "interaction" use_plus: false num_output_units: 3 }',
                 [F((4,)), F((2,)), F((6,))]),
    "CIN": ('cin { hidden_feature_sizes: [3, 2] }', F((4, 5))),
    "AutoDisEmbedding": ('auto_dis_embedding { embedding_dim: 3 num_bins: 4 temperature: 0.5 '
                         'output_tensor_list: true }', F((2,))),
    "PeriodicEmbedding": ('periodic_embedding { embedding_dim: 4 sigma: 0.1 '
                          'output_3d_tensor: true }', F((3,))),
    "TextCNN": ('text_cnn { filter_sizes: [1, 3] num_filters: [2, 3] pad_sequence_length: 4 }',
                [F((5, 4)), F((5,))]),
    "Highway": ('highway { emb_size: 6 num_layers: 2 }', F((4,))),
    "Gate": ('gate { weight_index: 1 mlp { hidden_units: [2] } }',
             [F((4,)), F((2,)), F((4,))]),
    "SeqAugment": ('seq_aug { mask_rate: 0.5 }', [F((5, 4)), F((5,))]),
    "SeqAugmentOps": ('seq_aug { crop_rate: 0.5 }', [F((5, 4)), F((5,)), F((4,))]),
    "AuxiliaryLoss": ('st_params { fields { key: "loss_type" value { string_value: "l2_loss" '
                      '} } }', [F((4,)), F((4,))]),
    "Dense": ('st_params { fields { key: "units" value { number_value: 3 } } }', F((8,))),
    "Dropout": ('st_params { fields { key: "rate" value { number_value: 0.5 } } }', F((8,))),
    "Activation": ('st_params { fields { key: "activation" value { string_value: "tanh" } } }',
                   F((8,))),
    "LayerNormalization": ("", F((8,))),
    "BatchNormalization": ("", F((8,))),
    "Add": ("", [F((4,)), F((4,))]),
    "Multiply": ("", [F((4,)), F((4,))]),
    "Concatenate": ("", [F((4,)), F((2,))]),
}


def _example(spec, rng):
    if isinstance(spec, list):
        return [_example(s, rng) for s in spec]
    return tf.constant(rng.normal(size=(3,) + spec.shape).astype("float32"))


def _shapes(value):
    if isinstance(value, (list, tuple)):
        return [_shapes(v) for v in value]
    return tuple(value.shape)


def _spec_shapes(spec):
    if isinstance(spec, list):
        return [_spec_shapes(s) for s in spec]
    return (3,) + spec.shape


def test_catalogue_is_complete():
    """Every row: a params member of the KerasLayer oneof (or a built-in with its allowed
    kwargs), a shape rule, a builder that resolves, and a shape case below; every oneof
    params member (but st_params) has a row."""
    oneof = {f.name for f in backbone_pb2.KerasLayer.DESCRIPTOR.oneofs_by_name["params"].fields}
    for name, entry in catalogue.CATALOGUE.items():
        if entry.params is None:
            assert entry.kwargs or name in ("Add", "Multiply"), name
        else:
            assert entry.params in oneof - {"st_params"} and not entry.kwargs, name
        assert callable(entry.infer) and entry.summary, name
        assert callable(entry.builder()), name
    members = [e.params for e in catalogue.CATALOGUE.values() if e.params]
    assert sorted(set(members)) == sorted(oneof - {"st_params"})  # SeqAugment(Ops): aliases
    assert set(LAYER_CASES) == set(catalogue.CATALOGUE)


def test_backbone_package_needs_no_tensorflow():
    code = ("import sys; import mtrec.backbone, mtrec.backbone.catalogue; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_registered_layer_builds_with_exact_shapes(name):
    params_text, spec = LAYER_CASES[name]
    keras_layer = text_format.Parse(f'class_name: "{name}" {params_text}',
                                    backbone_pb2.KerasLayer())
    params = catalogue.layer_params(keras_layer)
    entry = catalogue.CATALOGUE[name]
    expected = entry.infer(params, spec)
    layer = catalogue.build_layer(name, params, 1e-4, f"block_{name.lower()}", spec)
    out = layer(_example(spec, np.random.default_rng(0)), training=True)
    if entry.single_output:  # e.g. one task of mtrec's PPNet: the backbone unwraps its list
        out = out[0]
    assert _shapes(out) == _spec_shapes(expected)
    assert layer.weights or name in ("FM", "DotInteraction", "Dropout", "Activation", "Add",
                                     "Multiply", "Concatenate", "SeqAugmentOps",
                                     "AuxiliaryLoss")
    paths = [w.path for w in layer.weights]
    assert len(paths) == len(set(paths))


@pytest.mark.parametrize("layer_class", [SENet, MLP, Cross])
def test_new_layers_weights_round_trip(tmp_path, layer_class):
    args = {SENet: {"reduction_ratio": 2}, MLP: {"hidden_units": [4, 2]},
            Cross: {"projection_dim": 2}}[layer_class]
    inputs = ([keras.Input((4,)), keras.Input((6,))] if layer_class is SENet
              else keras.Input((6,)))
    model = keras.Model(inputs, layer_class(**args, name="layer")(inputs))
    rng = np.random.default_rng(0)
    x = ([rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(3, 6)).astype("float32")]
         if layer_class is SENet else rng.normal(size=(3, 6)).astype("float32"))
    before = model(x)
    path = str(tmp_path / "layer.weights.h5")
    model.save_weights(path)
    layer = layer_class(**args, name="layer")
    clone = keras.Model(inputs, layer(inputs))
    clone.load_weights(path)
    np.testing.assert_allclose(clone(x).numpy(), before.numpy(), rtol=1e-6)
    rebuilt = layer_class.from_config(layer.get_config())
    rebuilt(x)
    assert [v.path for v in rebuilt.weights] == [v.path for v in layer.weights]


# ---------------------------------------------------------------------------
# Maths against numpy


def test_senet_matches_numpy():
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(3, 6)).astype("float32")]
    layer = SENet(reduction_ratio=2, num_squeeze_group=2, use_output_layer_norm=False)
    out = layer([tf.constant(v) for v in x]).numpy()
    stats = []
    for e in x:
        g = e.reshape(3, 2, -1)
        stats += [g.max(-1), g.mean(-1)]
    z = np.concatenate(stats, axis=1)                                  # (3, 8)
    w1, b1 = (v.numpy() for v in layer.squeeze.weights)
    w2, b2 = (v.numpy() for v in layer.excite.weights)
    assert w1.shape == (8, 4)  # fields * groups * 2 / reduction_ratio
    weights = np.maximum(z @ w1 + b1, 0) @ w2 + b2
    cat = np.concatenate(x, axis=1)
    np.testing.assert_allclose(out, cat * weights + cat, rtol=1e-5, atol=1e-6)


def test_dot_interaction_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    gram = np.einsum("bnd,bmd->bnm", x, x)
    lower = [gram[:, i, j] for i in range(4) for j in range(i)]
    out = DotInteraction()([tf.constant(x[:, i]) for i in range(4)]).numpy()
    np.testing.assert_allclose(out, np.stack(lower, axis=1), rtol=1e-5)
    with_self = DotInteraction(self_interaction=True)(tf.constant(x)).numpy()
    np.testing.assert_allclose(with_self, np.stack(
        [gram[:, i, j] for i in range(4) for j in range(i + 1)], axis=1), rtol=1e-5)
    full = DotInteraction(skip_gather=True)(tf.constant(x)).numpy()
    np.testing.assert_allclose(full, (gram * np.tril(np.ones((4, 4)), -1)).reshape(2, 16),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="one width"):
        DotInteraction()([tf.zeros((2, 3)), tf.zeros((2, 4))])


def test_cross_matches_numpy():
    rng = np.random.default_rng(3)
    x0, xl = (rng.normal(size=(3, 5)).astype("float32") for _ in range(2))
    layer = Cross(diag_scale=0.5)
    out = layer([tf.constant(x0), tf.constant(xl)]).numpy()
    w, b = (v.numpy() for v in layer.dense.weights)
    np.testing.assert_allclose(out, x0 * (xl @ w + b + 0.5 * xl) + xl, rtol=1e-5, atol=1e-6)
    low = Cross(projection_dim=2, use_bias=False)
    out = low(tf.constant(x0)).numpy()
    u, v = low.project.weights[0].numpy(), low.dense.weights[0].numpy()
    np.testing.assert_allclose(out, x0 * (x0 @ u @ v) + x0, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="diag_scale"):
        Cross(diag_scale=-1)


def test_mlp_follows_easyrec_settings():
    layer = MLP([4, 1], use_bn=False, use_final_bn=False, final_activation="linear",
                dropout_ratio=[0.5], name="mlp")
    x = tf.random.normal((6, 3))
    out = layer(x)
    assert [w.path for w in layer.weights] == ["mlp/dense_0/kernel", "mlp/dense_1/kernel"]
    assert layer.dropout_ratio == [0.5, 0.0]  # EasyRec: rates from the bottom, none after
    h = np.maximum(x.numpy() @ layer.dense_layers[0].kernel.numpy(), 0)
    np.testing.assert_allclose(out.numpy(), h @ layer.dense_layers[1].kernel.numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="3 dropout_ratio values"):
        MLP([4, 2], dropout_ratio=[0.1, 0.1, 0.1])


def test_input_layer_forms_and_feature_dropout():
    features = [tf.ones((200, 2)), 2 * tf.ones((200, 3))]
    assert GroupInput("2d")(features).shape == (200, 5)
    assert [t.shape for t in GroupInput("feature_list")(features)] == [(200, 2), (200, 3)]
    with pytest.raises(ValueError, match="one width"):
        GroupInput("tensor_3d")(features)
    both = GroupInput("2d_and_list", do_layer_norm=True)(features)
    assert both[0].shape == (200, 5) and len(both[1]) == 2
    dropped = GroupInput("feature_list", feature_dropout_rate=0.5)(features, training=True)
    for e, value in zip(dropped, (1.0, 2.0)):
        rows = e.numpy()
        # Whole features are dropped per row; kept ones are scaled by 1 / (1 - rate).
        assert set(np.unique(rows)) <= {0.0, 2 * value}
        assert np.all((rows == 0).all(axis=1) | (rows != 0).all(axis=1))
        assert 0.2 < (rows[:, 0] == 0).mean() < 0.8


# ---------------------------------------------------------------------------
# Models


def test_mmoe_from_blocks_equals_native_mmoe():
    mlp = ("expert_mlp { hidden_units: [8, 4] use_bn: false use_final_bn: false "
           "use_bias: true use_final_bias: true initializer: \"glorot_uniform\" }")
    blocks = f"""\
    blocks {{
      name: "mmoe"
      inputs {{ feature_group_name: "all" }}
      keras_layer {{ class_name: "MMoE" mmoe {{ num_task: 2 num_expert: 3 {mlp} }} }}
    }}"""
    backbone, features, _ = build(multitask(blocks))
    native, native_features, _ = build(TINY_INPUTS + """\
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  mmoe {
    expert_dnn { hidden_units: [8, 4] use_bn: false }
    num_expert: 3
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] use_bn: false } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] use_bn: false } }
    l2_regularization: 0.0
  }
}
""")
    assert backbone.count_params() == native.count_params()
    # The same weights: tables, the MMoE layer, then each tower's DNN and logit layer.
    for name, table in native.feature_groups.tables.items():
        table.assign(backbone.feature_groups.tables[name])
    native.mmoe.set_weights(backbone.backbone.block_layers["mmoe"].get_weights())
    for i, tower in enumerate(native.task_towers):
        tower.dnn.set_weights(backbone.task_towers[i].get_weights())
        tower.logits.set_weights(backbone.output_layers[i].get_weights())
    mine, theirs = backbone(features), native(native_features)
    assert set(mine) == set(theirs)
    for key in mine:
        np.testing.assert_allclose(mine[key].numpy(), theirs[key].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=key)


def test_senet_mmoe_backbone_trains_with_stable_names():
    model, features, outputs = build(multitask(MMOE_BLOCKS))
    assert outputs["probs_ctr"].shape == (4,) and outputs["probs_cvr"].shape == (4,)
    paths = set(model.checkpoint_variables())
    for path in ("MultiTaskModel/backbone/senet/squeeze/kernel",
                 "MultiTaskModel/backbone/mmoe/expert_2/dense_1/kernel",
                 "MultiTaskModel/backbone/mmoe/gate_1/kernel",
                 "MultiTaskModel/tower_cvr/dense_0/kernel", "MultiTaskModel/output_ctr/kernel"):
        assert path in paths, sorted(paths)
    totals, _ = train_steps(model, features, steps=4)
    assert totals[-1] < totals[0]


# EasyRec's backbone samples, their model_config structure in tiny form.

def test_easyrec_mmoe_sample_structure_senet_under_native_mmoe():
    text = TINY_INPUTS + """\
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  backbone {
    blocks { name: 'all' inputs { feature_group_name: 'all' }
             input_layer { only_output_feature_list: true } }
    blocks { name: "senet" inputs { block_name: "all" }
             keras_layer { class_name: 'SENet' senet { reduction_ratio: 4 } } }
    concat_blocks: ['senet']
  }
  mmoe {
    expert_dnn { hidden_units: [8, 4] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] } }
  }
}
"""
    model, features, _ = build(text)
    groups = model.feature_groups(features)
    x = model.group_tensor(groups)  # the backbone output replaces the group input
    np.testing.assert_allclose(x.numpy(), model.backbone(
        {"all": groups["all"]}).numpy(), rtol=1e-6)
    assert "MMoE/backbone/senet/excite/kernel" in model.checkpoint_variables()
    assert model.mmoe.experts[0].dense_layers[0].kernel.shape == (8, 8)


def test_easyrec_dbmtl_sample_structure_masknet_under_native_dbmtl():
    text = TINY_INPUTS + """\
model_config {
  model_class: "DBMTL"
  feature_groups { group_name: "all" feature_names: "user" feature_names: "price" }
  backbone {
    blocks {
      name: "mask_net"
      inputs { feature_group_name: "all" }
      keras_layer {
        class_name: 'MaskNet'
        masknet {
          mask_blocks { aggregation_size: 8 output_size: 4 }
          mask_blocks { aggregation_size: 8 output_size: 4 }
          mlp { hidden_units: [8, 6] }
        }
      }
    }
    concat_blocks: ['mask_net']
  }
  dbmtl {
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] }
                  relation_dnn { hidden_units: [3] } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] }
                  relation_tower_names: ["ctr"] relation_dnn { hidden_units: [3] } }
  }
}
"""
    model, features, outputs = build(text)
    assert model.task_towers[0].dense_layers[0].kernel.shape == (6, 4)  # reads MaskNet's MLP
    assert outputs["probs_cvr"].shape == (4,)
    totals, _ = train_steps(model, features)
    assert np.isfinite(totals).all()


def test_easyrec_simple_multi_task_sample_structure_identity_block():
    blocks = '    blocks { name: "identity" inputs { feature_group_name: "all" } }'
    model, features, _ = build(multitask(blocks))
    groups = model.feature_groups(features)
    np.testing.assert_allclose(model.backbone_output(groups).numpy(),
                               tf.concat(groups["all"], axis=-1).numpy())


def test_easyrec_aitm_sample_structure_ait_towers_and_order_calibrate_loss():
    towers = """
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] }
                  use_ait_module: true }
    task_towers { tower_name: "cvr" label_name: "buy"
                  losses { loss_type: CLASSIFICATION }
                  losses { loss_type: ORDER_CALIBRATE_LOSS weight: 0.5 }
                  dnn { hidden_units: [4] } relation_tower_names: ["ctr"]
                  use_ait_module: true ait_project_dim: 3 }
"""
    blocks = """    blocks { name: "mlp" inputs { feature_group_name: "all" }
             keras_layer { class_name: 'MLP' mlp { hidden_units: [8, 6] } } }"""
    model, features, outputs = build(multitask(blocks, towers))
    losses = model.compute_losses(outputs, COLUMNS)
    assert set(losses) == {"ctr", "cvr", "cvr_constraint"}
    expected = 0.5 * np.mean(np.maximum(outputs["probs_cvr"].numpy()
                                        - outputs["probs_ctr"].numpy(), 0))
    np.testing.assert_allclose(float(losses["cvr_constraint"]), expected, rtol=1e-5)
    assert model.relation_layers["cvr"].attention.dim == 3


def test_easyrec_aitm_doc_structure_aitm_tower_blocks_with_output_blocks():
    blocks = """\
    blocks { name: "share_bottom" inputs { feature_group_name: "all" }
             keras_layer { class_name: 'MLP' mlp { hidden_units: [8] } } }
    blocks { name: "ctr_tower" inputs { block_name: "share_bottom" }
             keras_layer { class_name: 'MLP' mlp { hidden_units: 6 } } }
    blocks { name: "cvr_tower" inputs { block_name: "share_bottom" }
             keras_layer { class_name: 'MLP' mlp { hidden_units: 6 } } }
    blocks { name: "cvr_aitm" inputs { block_name: "cvr_tower" } inputs { block_name: "ctr_tower" }
             merge_inputs_into_list: true
             keras_layer { class_name: "AITMTower" aitm { transfer_mlp { hidden_units: 5 } } } }
    output_blocks: ["ctr_tower", "cvr_aitm"]"""
    model, features, outputs = build(multitask(blocks))
    groups = model.feature_groups(features)
    ctr_in, cvr_in = model.tower_inputs(groups, False)
    assert ctr_in.shape == (4, 6) and cvr_in.shape == (4, 6)  # project_dim 0: own width
    aitm = model.backbone.block_layers["cvr_aitm"]
    assert aitm.query == "own" and aitm.stop_gradient
    # stop_gradient: cvr's loss sends no gradient into the ctr tower through the AITM block.
    with tf.GradientTape() as tape:
        cvr_loss = model.compute_losses(model(features, training=True), COLUMNS)["cvr"]
    ctr_kernel = model.backbone.block_layers["ctr_tower"].dense_layers[0].kernel
    assert tape.gradient(cvr_loss, ctr_kernel) is None


def test_easyrec_ppnet_sample_structure_rank_model():
    text = TINY_INPUTS + """\
model_config {
  model_name: 'PPNet'
  model_class: 'RankModel'
  feature_groups { group_name: 'memorize' feature_names: 'user' }
  feature_groups { group_name: 'general' feature_names: 'price' }
  backbone {
    blocks {
      name: "ppnet"
      inputs { feature_group_name: "general" }
      inputs { feature_group_name: "memorize" }
      merge_inputs_into_list: true
      keras_layer { class_name: "PPNet" ppnet { mlp { hidden_units: [8, 6] } mode: "lazy"
                                                full_gate_input: true } }
    }
    top_mlp { hidden_units: [5] }
  }
  model_params { l2_regularization: 1e-6 }
}
"""
    model, features, outputs = build(text)
    # One tower named after the first label field, trained on it.
    assert [t.tower_name for t in model.tower_configs] == ["clk"]
    assert set(outputs) == {"logits_clk", "probs_clk"}
    ppnet = model.backbone.block_layers["ppnet"]
    assert ppnet.mode == "lazy" and [g.output_dim for g in ppnet.gates] == [8, 6]
    assert ppnet.gates[0].hidden.units == 8  # EasyRec: gate hidden width = gate width
    assert model.output_layers[0].kernel.shape == (5, 1)  # reads top_mlp
    totals, _ = train_steps(model, features)
    assert totals[-1] < totals[0]


def test_rank_model_regression_from_model_config_loss_type():
    text = TINY_INPUTS.replace('label_fields: "clk"\n  label_fields: "buy"',
                               'label_fields: "price"') + """\
model_config {
  model_class: "RankModel"
  feature_groups { group_name: "all" feature_names: "user" }
  backbone { blocks { name: "mlp" inputs { feature_group_name: "all" }
                      keras_layer { class_name: "MLP" mlp { hidden_units: [4] } } } }
  loss_type: L2_LOSS
}
"""
    model, _, outputs = build(text)
    assert set(outputs) == {"logits_price", "y_price"}
    assert model.tower_configs[0].label_name == "price"


def test_blocks_with_slices_dot_interaction_and_sequential_layers():
    blocks = """\
    blocks { name: "feats" inputs { feature_group_name: "all" }
             input_layer { output_2d_tensor_and_feature_list: true } }
    blocks { name: "dot" inputs { block_name: "feats" input_slice: "[1]" }
             keras_layer { class_name: "DotInteraction" } }
    blocks { name: "deep" inputs { block_name: "feats" input_slice: "[0]" }
             layers { keras_layer { class_name: "Dense"
                      st_params { fields { key: "units" value { number_value: 3 } } } } }
             layers { keras_layer { class_name: "Dropout"
                      st_params { fields { key: "rate" value { number_value: 0.1 } } } } } }
    concat_blocks: ["deep", "dot"]
    top_mlp { hidden_units: [4] }"""
    model, features, _ = build(multitask(blocks))
    groups = model.feature_groups(features)
    assert model.backbone_output(dict(groups)).shape == (4, 4)
    paths = set(model.checkpoint_variables())
    assert "MultiTaskModel/backbone/deep_l0/kernel" in paths
    assert "MultiTaskModel/backbone/top_mlp/dense_0/kernel" in paths


def test_sample_configs_validate_without_warnings():
    for name in ("mmoe_backbone_on_taobao.config", "aitm_backbone_on_taobao.config",
                 "dbmtl_backbone_on_taobao.config", "ppnet_rank_on_taobao.config"):
        loaded = config_lib.load(os.path.join(conftest.SAMPLES, name))
        assert loaded.warnings == []
