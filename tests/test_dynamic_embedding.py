"""Dynamic embedding tables (ev_params): the map on TensorFlow's MutableHashTable, admission,
eviction, growth, checkpoints and export (mtrec/features/dynamic.py)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_INPUTS, TINY_MMOE, edit
from mtrec.features import dynamic
from mtrec.protos import dynamic_pb2

EV = dynamic_pb2.EVParams


class _Calls:
    """Records what a DynamicTable asks of the embedding tables."""

    def __init__(self):
        self.grown, self.fresh = [], []

    def grow(self, shard, capacity, new):
        assert shard == 0 and int(capacity) < int(new)
        self.grown.append(int(new))

    def reset(self, shard, rows):
        assert shard == 0
        self.fresh.append(sorted(rows.numpy().tolist()))


def _step(table, keys, step, calls=None):
    calls = calls or _Calls()
    table.assign(tf.constant(keys, tf.int64), step, calls.grow, calls.reset)
    return calls


def _rows(table, keys):
    return table.lookup(tf.constant(keys, tf.int64)).numpy().tolist()


def _counters(table):
    return dict(zip(dynamic.COUNTERS, table.counters.numpy().tolist()))


def test_no_collisions_while_capacity_lasts_and_growth_doubles_up_to_max():
    names = tf.constant([f"item{i}" for i in range(10_000)])
    hashed = tf.strings.to_hash_bucket_fast(names, 1000).numpy()
    assert len(set(hashed.tolist())) <= 1000  # 10,000 ids share 1,000 rows
    keys = dynamic.keys(names).numpy()
    assert len(set(keys.tolist())) == 10_000
    table = dynamic.DynamicTable("items", EV(init_capacity=1024, max_capacity=16384))
    calls = _Calls()
    for step, chunk in enumerate(np.split(keys, 10)):
        _step(table, chunk, step, calls)
        # Memory follows the rows in use: at most twice them (after the first step).
        assert int(table.capacity()) <= 2 * int(table.rows_in_use())
    rows = _rows(table, keys)
    assert sorted(rows) == list(range(10_000))  # one row each, none shared
    # 1,000 new ids a step: 1024 rows hold the first step; then it doubles when short.
    assert calls.grown == [2048, 4096, 8192, 16384]
    assert int(table.capacity()) == 16384 and int(table.rows_in_use()) == 10_000
    assert _counters(table) == {"admitted": 10_000, "evicted": 0, "refused": 0, "filtered": 0}


def test_strings_and_integers_become_64_bit_keys_and_missing_values_none():
    values = tf.constant(["a", "", "b", "a", "123", "-4", "12345678901234567890"])
    keys = dynamic.keys(values).numpy()
    fingerprints = tf.bitcast(tf.fingerprint(tf.constant(["a", "b", "12345678901234567890"])),
                              tf.int64).numpy()
    assert keys.tolist() == [fingerprints[0], dynamic.MISSING, fingerprints[1], fingerprints[0],
                             123, -4, fingerprints[2]]
    assert dynamic.keys(tf.constant([7, 1 << 40], tf.int64)).numpy().tolist() == [7, 1 << 40]
    table = dynamic.DynamicTable("t", EV(init_capacity=4))
    _step(table, [dynamic.MISSING, 5], 0)
    assert _rows(table, [dynamic.MISSING, 5]) == [-1, 0]


def test_filter_freq_admits_an_id_at_its_nth_occurrence():
    table = dynamic.DynamicTable("t", EV(filter_freq=3, init_capacity=8, max_capacity=8))
    calls = _step(table, [1, 2, 2, 2], 0)  # 2 seen three times in one batch: admitted
    assert _rows(table, [1, 2]) == [-1, 0] and calls.fresh == [[0]]
    assert _counters(table) == {"admitted": 1, "evicted": 0, "refused": 0, "filtered": 1}
    _step(table, [1], 1)  # 1 seen twice: still the zero row
    assert _rows(table, [1]) == [-1]
    calls = _step(table, [1, 2], 2)  # the third time
    assert _rows(table, [1, 2]) == [1, 0] and calls.fresh == [[1]]
    assert _counters(table) == {"admitted": 2, "evicted": 0, "refused": 0, "filtered": 2}


def test_steps_to_live_frees_rows_at_the_sweeps():
    table = dynamic.DynamicTable("t", EV(steps_to_live=3, eviction_interval=3,
                                         init_capacity=4, max_capacity=4))
    _step(table, [1, 2], 0)
    for step in (1, 2, 3, 4, 5):
        _step(table, [2], step)
        # Last seen at 0: at the sweep of step 3 it is 3 steps old (kept); by step 4 it is
        # over steps_to_live, but sweeps run every 3 steps only.
        assert _rows(table, [1]) == [0]
    _step(table, [2], 6)  # the sweep of step 6 frees it
    assert _rows(table, [1, 2]) == [-1, 1]
    assert _counters(table)["evicted"] == 1 and int(table.rows_in_use()) == 1
    calls = _step(table, [3], 7)  # the freed row is given again, reset
    assert _rows(table, [3]) == [0] and calls.fresh == [[0]]


def test_a_full_table_evicts_the_least_recently_seen_and_refuses_the_rest():
    table = dynamic.DynamicTable("t", EV(init_capacity=4, max_capacity=4))
    for step, key in enumerate([10, 11, 12, 13]):
        _step(table, [key], step)
    assert _rows(table, [10, 11, 12, 13]) == [0, 1, 2, 3]
    calls = _step(table, [10, 14], 4)  # 10 is seen again: 11 is the least recent
    assert _rows(table, [10, 11, 14]) == [0, -1, 1] and calls.fresh == [[1]]
    _step(table, [15, 16], 5)  # then 12 and 13
    assert sorted(_rows(table, [15, 16])) == [2, 3] and _rows(table, [12, 13]) == [-1, -1]
    assert _counters(table) == {"admitted": 7, "evicted": 3, "refused": 0, "filtered": 0}
    # Five new ids on four rows: all four rows go, one id is refused.
    _step(table, [20, 21, 22, 23, 24], 6)
    assert sorted(_rows(table, [20, 21, 22, 23])) == [0, 1, 2, 3] and _rows(table, [24]) == [-1]
    # Rows seen in this step are never taken: a fifth id finds none.
    _step(table, [20, 21, 22, 23, 30], 7)
    assert _rows(table, [30]) == [-1] and sorted(_rows(table, [20, 21, 22, 23])) == [0, 1, 2, 3]
    assert _counters(table) == {"admitted": 11, "evicted": 7, "refused": 2, "filtered": 0}
    assert int(table.capacity()) == 4


@pytest.mark.parametrize("policy, evicted", [(EV.LRU, 1), (EV.LFU, 2)])
def test_lfu_evicts_the_least_frequent_lru_the_least_recent(policy, evicted):
    table = dynamic.DynamicTable("t", EV(init_capacity=3, max_capacity=3,
                                         eviction_policy=policy))
    _step(table, [1, 1, 1, 2, 3, 3], 0)  # all seen at step 0; 2 the least often
    _step(table, [4], 1)
    assert _rows(table, [evicted]) == [-1]
    assert sorted(_rows(table, [k for k in (1, 2, 3) if k != evicted] + [4])) == [0, 1, 2]


def test_sparse_optimizer_resets_and_grows_the_slots_of_a_dynamic_table():
    from mtrec.protos import optimizer_pb2
    from mtrec.training.optimizers import SparseOptimizer
    config = optimizer_pb2.Optimizer()
    config.adam_optimizer.learning_rate.constant_learning_rate.learning_rate = 0.1
    table = tf.Variable(tf.ones([4, 2]), shape=tf.TensorShape([None, 2]), name="dyn")
    optimizer = SparseOptimizer(config)
    optimizer.build([table])
    for grad in (1.0, 2.0):
        optimizer.apply([(tf.IndexedSlices(tf.fill([4, 2], grad), tf.range(4)), table)])
    slots = optimizer._slots(table)
    optimizer.reset_rows(table, tf.constant([1, 3], tf.int64))
    for slot in slots.values():
        values = slot.numpy()
        assert (values[[1, 3]] == 0).all() and (values[[0, 2]] != 0).all()
    optimizer.grow(table, tf.constant(6, tf.int64))
    assert all(tuple(tf.shape(s).numpy()) == (6, 2) for s in slots.values())
    assert (slots["m"].numpy()[4:] == 0).all()


# -- training, checkpoints and export ------------------------------------------------------

MODEL = TINY_MMOE
USERS = 37


def _config(tmp, model_dir):
    """40 rows (one epoch = 10 steps of 4, in file order) of 37 users: a run resumed at
    step 10 reads what an uninterrupted one reads."""
    rows = [f"{i % 2},{(i // 3) % 2},u{i % USERS},{i % 40}" for i in range(40)]
    data = os.path.join(tmp, "train.csv")
    with open(data, "w") as f:
        f.write("\n".join(rows) + "\n")
    text = edit('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }',
                'features { input_names: "user" embedding_dim: 4\n'
                '    ev_params { init_capacity: 8 max_capacity: 64 } }', TINY_INPUTS)
    text = edit("batch_size: 4", "batch_size: 4\n  shuffle: false", text)
    text = edit("num_steps: 10", "num_steps: 20\n  save_checkpoints_steps: 10\n"
                "  log_step_count_steps: 10\n  seed: 5", text)
    path = os.path.join(tmp, "pipeline.config")
    with open(path, "w") as f:
        f.write(text + MODEL + f'train_input_path: "{data}"\nmodel_dir: "{model_dir}"\n')
    return path, data


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import mtrec
    tmp = str(tmp_path_factory.mktemp("dynamic"))
    config, data = _config(tmp, os.path.join(tmp, "model"))
    mtrec.train(config)
    return tmp, config, data


def _checkpoint(path):
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.mark.slow
def test_training_gives_every_user_a_row_and_resume_repeats_the_run(trained):
    import mtrec
    tmp, config, _ = trained
    model_dir = os.path.join(tmp, "model")
    final = _checkpoint(os.path.join(model_dir, "ckpt-20"))
    key_names = [n for n in final if n.startswith("dynamic_tables/") and "table-keys" in n]
    assert len(key_names) == 1
    users = dynamic.keys(tf.constant([f"u{i}" for i in range(USERS)])).numpy()
    assert sorted(final[key_names[0]].tolist()) == sorted(users.tolist())
    values = final[key_names[0].replace("table-keys", "table-values")]
    assert sorted(values.tolist()) == list(range(USERS))  # distinct rows
    # It grew from 8 rows, in the train step, to within twice the rows in use.
    table = final["model/variables_by_path/tables.Suser/.ATTRIBUTES/VARIABLE_VALUE"]
    assert final["sparse_optimizer/slot_variables/1/m/.ATTRIBUTES/VARIABLE_VALUE"].shape == \
        table.shape
    assert USERS <= table.shape[0] <= 2 * USERS
    # A run stopped after its checkpoint at step 10 (as by kill -9) and resumed ends with
    # the same map, counts, last-seen steps and weights as the uninterrupted one.
    resumed = os.path.join(tmp, "resumed")
    shutil.copytree(model_dir, resumed)
    for name in os.listdir(resumed):
        if name.startswith("ckpt-20"):
            os.remove(os.path.join(resumed, name))
    with open(os.path.join(resumed, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "ckpt-10"\nall_model_checkpoint_paths: "ckpt-10"\n')
    mtrec.train(config, model_dir=resumed)
    again = _checkpoint(os.path.join(resumed, "ckpt-20"))
    assert set(again) == set(final)
    for name, value in final.items():
        if name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
            continue
        if "table-keys" in name or "table-values" in name:
            continue  # the map, compared as a dict below (its export order is arbitrary)
        np.testing.assert_allclose(again[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    values_name = key_names[0].replace("table-keys", "table-values")
    assert (dict(zip(final[key_names[0]].tolist(), final[values_name].tolist()))
            == dict(zip(again[key_names[0]].tolist(), again[values_name].tolist())))


@pytest.mark.slow
def test_export_serves_a_compact_snapshot_equal_to_predict_and_unseen_ids_read_zero(trained):
    import mtrec
    from mtrec import config as config_lib
    from mtrec.training.checkpoints import restore_checkpoint
    from mtrec.training.job import Job
    tmp, config, data = trained
    export = mtrec.export(config, export_dir=os.path.join(tmp, "export"))
    # The export holds the rows in use, not the rows allocated.
    shapes = tf.train.load_checkpoint(os.path.join(export, "variables", "variables")) \
        .get_variable_to_shape_map()
    assert shapes["model_variables/tables.Suser/.ATTRIBUTES/VARIABLE_VALUE"] == [USERS, 4]
    assert shapes["dynamic_tables/tables/user/map/.ATTRIBUTES/table-keys"] == [USERS]
    assert not [n for n in shapes if "last_seen" in n or "free_rows" in n]
    # Rows: known users, an unseen user and a missing one.
    rows = ["1,0,u3,5", "0,1,u20,7", "1,1,never_seen,9", "0,0,,9"]
    inputs = os.path.join(tmp, "predict.csv")
    with open(inputs, "w") as f:
        f.write("\n".join(rows) + "\n")
    output = os.path.join(tmp, "scores.csv")
    mtrec.predict(export, inputs, output)
    import pandas as pd
    predicted = pd.read_csv(output)["probs_ctr"].to_numpy()
    # Plain TensorFlow: the serving signature, fed the columns it names.
    columns = {"user": tf.constant(["u3", "u20", "never_seen", ""]),
               "price": tf.constant([5, 7, 9, 9]), "clk": tf.constant([1, 0, 1, 0]),
               "buy": tf.constant([0, 1, 1, 0])}
    serve = tf.saved_model.load(export).signatures["serving_default"]
    served = serve(**{k: columns[k] for k in serve.structured_input_signature[1]})
    np.testing.assert_allclose(served["probs_ctr"].numpy(), predicted, rtol=1e-5, atol=1e-6)
    # And in a process that never imports mtrec.
    script = ("import json, sys, tensorflow as tf\n"
              "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
              "cols = {'user': tf.constant(['u3', 'u20', 'never_seen', '']),\n"
              "        'price': tf.constant([5, 7, 9, 9]), 'clk': tf.constant([1, 0, 1, 0]),\n"
              "        'buy': tf.constant([0, 1, 1, 0])}\n"
              "out = serve(**{k: cols[k] for k in serve.structured_input_signature[1]})\n"
              "assert 'mtrec' not in sys.modules\n"
              "print(json.dumps(out['probs_ctr'].numpy().tolist()))\n")
    done = subprocess.run([sys.executable, "-c", script, export], capture_output=True,
                          text=True, cwd=tmp, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    plain = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(plain, predicted, rtol=1e-5, atol=1e-6)
    # The same scores as the trained model with its full (uncompacted) table and live map.
    job = Job.create(config_lib.load(config).pipeline, for_training=False)
    job.build()
    restore_checkpoint(job.checkpoint, tf.train.latest_checkpoint(os.path.join(tmp, "model")),
                       partial=True)
    features, _ = job.split(columns)
    live = job.model(features, training=False)["probs_ctr"].numpy().ravel()
    np.testing.assert_allclose(live, predicted, rtol=1e-5, atol=1e-6)
    # An unseen id reads the zero row: the same score as a missing value.
    assert predicted[2] == pytest.approx(predicted[3], abs=1e-7)
    rows_of = job.model.feature_groups.dynamic.rows(features)["user"]["ids"].numpy()
    assert rows_of[2] == -1 and rows_of[3] == -1 and rows_of[0] >= 0


def _load(text):
    import tempfile
    from mtrec import config as config_lib
    path = os.path.join(tempfile.mkdtemp(), "x.config")
    with open(path, "w") as f:
        f.write(text)
    return config_lib.load(path)


def test_config_rules_of_ev_params():
    from mtrec.errors import ConfigError
    base = TINY_INPUTS + MODEL
    # model_config.ev_params: the default of hashed id features, not of num_buckets ones.
    pipeline = _load(edit("model_class: \"MMoE\"", "model_class: \"MMoE\"\n  ev_params { "
                          "filter_freq: 2 }", base)).pipeline
    user, price = pipeline.feature_config.features
    assert user.HasField("ev_params") and user.ev_params.filter_freq == 2
    assert not price.HasField("ev_params")
    bad = [
        ('features { input_names: "price" num_buckets: 50 embedding_dim: 4 }',
         'features { input_names: "price" vocab_list: ["1", "2"] embedding_dim: 4 '
         'ev_params { } }', "ev_params and a vocabulary"),
        ('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }',
         'features { input_names: "user" embedding_dim: 4 ev_params { init_capacity: 10 '
         'max_capacity: 5 } }', "init_capacity 10 is above max_capacity 5"),
        ('features { input_names: "price" num_buckets: 50 embedding_dim: 4 }',
         'features { input_names: "price" feature_type: RawFeature ev_params { } }',
         "needs an IdFeature, TagFeature, ComboFeature or a SequenceFeature of ids, not a "
         "RawFeature"),
    ]
    # Every strategy mtrec runs trains dynamic tables (tests/test_dynamic_distributed.py),
    # PSStrategy included (each ps task's share grows): no warning.
    dynamic_user = edit('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }',
                        'features { input_names: "user" embedding_dim: 4 ev_params { } }', base)
    for strategy in ("MirroredStrategy", "MultiWorkerMirroredStrategy", "PSStrategy"):
        loaded = _load(edit("num_steps: 10", f"num_steps: 10\n  train_distribute: {strategy}",
                            dynamic_user))
        assert [w for w in loaded.warnings if "dynamic" in w] == []
    for old, new, message in bad:
        text = edit(old, new, base)
        with pytest.raises(ConfigError) as e:
            _load(text)
        assert message in str(e.value)
        assert "x.config:" in str(e.value)


def test_tags_crosses_and_shared_sequence_tables_map_through_one_map_per_table():
    from mtrec.training.job import Job
    ev = "ev_params { init_capacity: 4 max_capacity: 64 }"
    text = TINY_INPUTS.replace('  input_fields { input_name: "price" input_type: INT32 }\n',
                               '  input_fields { input_name: "price" input_type: INT32 }\n'
                               '  input_fields { input_name: "item" input_type: INT64 }\n'
                               '  input_fields { input_name: "tags" input_type: STRING }\n'
                               '  input_fields { input_name: "hist" input_type: STRING }\n')
    text = edit('features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }',
                f'features {{ input_names: "user" embedding_dim: 4 {ev} }}\n'
                f'  features {{ input_names: "item" embedding_dim: 4 {ev} }}\n'
                f'  features {{ input_names: "tags" feature_type: TagFeature embedding_dim: 4 '
                f'{ev} }}\n'
                f'  features {{ feature_name: "cross" input_names: ["user", "price"] '
                f'feature_type: ComboFeature embedding_dim: 4 {ev} }}\n'
                f'  features {{ input_names: "hist" feature_type: SequenceFeature '
                f'embedding_name: "item" hash_bucket_size: 7 embedding_dim: 4 {ev} }}', text)
    text += MODEL.replace('feature_names: ["user", "price"] wide_deep: DEEP }',
                          'feature_names: ["user", "price", "item", "tags", "cross", "hist"]'
                          ' wide_deep: DEEP }\n  feature_groups { group_name: "wide" '
                          'feature_names: ["user"] wide_deep: WIDE }').replace(
        "num_expert: 2", "num_expert: 2\n    use_linear_logits: true")
    job = Job.create(_load(text).pipeline, for_training=True)
    job.build()
    groups = job.model.feature_groups
    assert sorted(groups.dynamic.tables) == ["cross", "item", "tags", "user"]
    columns = {"clk": tf.constant([1, 0, 1]), "buy": tf.constant([0, 0, 1]),
               "user": tf.constant(["a", "b", "a"]), "price": tf.constant([1, 1, 2]),
               "item": tf.constant([100, 200, 300], tf.int64),
               "tags": tf.constant(["x|y", "y", ""]), "hist": tf.constant(["300|100", "", "7"])}
    features, _ = job.split(columns)
    mapped = groups.dynamic.train_rows(features, tf.constant(0, tf.int64), groups.tables,
                                       job.sparse_optimizer)
    item = mapped["item"]["ids"].numpy()
    hist = mapped["hist"]["ids"].to_list()
    # The sequence shares the item table and its map (its hash_bucket_size is not used):
    # items 300 and 100 have the same rows.
    assert hist == [[item[2], item[0]], [], [3]] and sorted(item.tolist()) == [0, 1, 2]
    assert mapped["tags"]["ids"].to_list() == [[0, 1], [1], []]
    cross = mapped["cross"]["ids"].to_list()  # (a,1), (b,1), (a,2): three distinct crosses
    assert sorted(r[0] for r in cross) == [0, 1, 2]
    # The item table grew from 4 rows to hold 4 ids with its slots; rows got values.
    assert tf.shape(groups.tables["item"]).numpy()[0] == 4
    assert np.abs(tf.gather(groups.tables["item"], [0, 1, 2, 3]).numpy()).max() <= 0.05
    assert groups.dynamic.stats()["item"]["rows"] == 4
    # A WIDE group's table of the same feature shares its map: the same rows, starting at 0.
    assert groups.dynamic.bound["user"] == ["user", "user/wide"]
    user = mapped["user"]["ids"].numpy()
    assert user.tolist() == [0, 1, 0]
    assert (tf.gather(groups.tables["user/wide"], [0, 1]).numpy() == 0).all()
    assert (tf.gather(groups.tables["user"], [0, 1]).numpy() != 0).all()
    # Looking up (the model's own path, as evaluation and serving do) gives the same rows.
    trained = job.model(mapped, training=False)
    looked_up = job.model(features, training=False)
    for key in trained:
        np.testing.assert_allclose(trained[key].numpy(), looked_up[key].numpy(), rtol=1e-6)


def test_domain_feature_cannot_be_dynamic_and_model_ev_params_leaves_it_fixed():
    from conftest import DOMAIN_INPUTS, DOMAIN_TOWERS
    from mtrec.errors import ConfigError
    star = DOMAIN_INPUTS + """\
model_config {
  model_class: "STAR"
  feature_groups { group_name: "all" feature_names: ["user", "price"] }
  star {
    domain_feature: "dom"
    hidden_units: [16, 8]
""" + DOMAIN_TOWERS + "  }\n}\n"
    # The model-level default applies to the hashed user, not to the num_buckets domain.
    pipeline = _load(edit('model_class: "STAR"', 'model_class: "STAR"\n  ev_params { }',
                          star)).pipeline
    dynamic_features = [f.feature_name for f in pipeline.feature_config.features
                        if f.HasField("ev_params")]
    assert dynamic_features == ["user"]
    with pytest.raises(ConfigError) as e:
        _load(edit('features { input_names: "dom" num_buckets: 3 embedding_dim: 4 }',
                   'features { input_names: "dom" num_buckets: 3 embedding_dim: 4 '
                   'ev_params { } }', star))
    assert "feature 'dom' is the domain_feature" in str(e.value)


def test_check_prints_each_dynamic_table_and_its_memory_at_start_and_at_max(tmp_path):
    import mtrec
    from mtrec.config.dynamic_params import ROW_STATE_BYTES, MAP_ENTRY_BYTES
    config, _ = _config(str(tmp_path), str(tmp_path / "model"))
    lines = mtrec.check(config)
    assert "    user: IdFeature (dynamic, 8 -> 64 rows, LRU when full), embedding_dim 4" in lines
    # Values and Adam's two slots (float32, dim 4) plus the map's bookkeeping per row.
    start, most = [rows * (4 * 3 * 4 + ROW_STATE_BYTES + MAP_ENTRY_BYTES) for rows in (8, 64)]
    assert f"    user: {start / 1024:.1f} KiB (8 rows) -> {most / 1024:.1f} KiB (64 rows)" in lines
