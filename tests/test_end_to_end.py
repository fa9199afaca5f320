"""Each sample config: train a few steps -> evaluate -> export -> the SavedModel, loaded in a
process that never imports mtrec, gives the same outputs as `mtrec predict` (1e-5)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import exact_auc, fast_overrides, sample_config

# Every sample config is exercised.
SAMPLES = sorted(os.listdir(os.path.join(os.path.dirname(__file__), "..", "samples",
                                         "model_config")))

# Runs in a fresh interpreter: only TensorFlow, numpy and csv; never mtrec. One process
# serves every test (a TensorFlow import costs seconds): each stdin line is a JSON request
# [saved_model, data_path, columns]; it answers one JSON line of outputs (or an error).
BARE_LOADER = r"""
import csv, json, sys, traceback
import numpy as np
import tensorflow as tf
assert "mtrec" not in sys.modules

def score(saved_model, data_path, columns):
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    with open(data_path, newline="") as f:
        rows = list(csv.reader(f))
    inputs = {}
    for name, spec in specs.items():
        cells = [r[columns.index(name)] for r in rows]
        if spec.dtype == tf.string:
            cells = [c if c not in ("", "NULL") else "" for c in cells]
            inputs[name] = tf.constant(cells)
        else:
            cast = int if spec.dtype.is_integer else float
            inputs[name] = tf.constant([cast(float(c)) if c not in ("", "NULL") else 0
                                        for c in cells], dtype=spec.dtype)
    outputs = serve(**inputs)
    return {k: v.numpy().tolist() for k, v in outputs.items()}

for line in sys.stdin:
    saved_model, data_path, columns = json.loads(line)
    try:
        answer = {"outputs": score(saved_model, data_path, columns.split(","))}
    except Exception:
        answer = {"error": traceback.format_exc()}
    answer["mtrec_imported"] = "mtrec" in sys.modules
    print(json.dumps(answer), flush=True)
"""


@pytest.fixture(scope="module")
def bare_loader(tmp_path_factory):
    """score(saved_model, data_path, columns) -> outputs, from a process without mtrec."""
    process = subprocess.Popen([sys.executable, "-c", BARE_LOADER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": ""},
                               cwd=str(tmp_path_factory.mktemp("bare")))

    def score(saved_model, data_path, columns):
        process.stdin.write(json.dumps([saved_model, data_path, columns]) + "\n")
        process.stdin.flush()
        answer = json.loads(process.stdout.readline())
        assert not answer["mtrec_imported"]
        assert "error" not in answer, answer.get("error")
        return answer["outputs"]

    yield score
    process.stdin.close()
    process.wait(timeout=60)


TAOBAO_COLUMNS = ("clk,buy,pid,adgroup_id,cate_id,campaign_id,customer,brand,user_id,cms_segid,"
                  "cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,"
                  "occupation,new_user_class_level,tag_category_list,tag_brand_list,price")


MULTIDOMAIN_COLUMNS = ("clk,like,domain,user_id,item_id,user_group,gender,age_bucket,item_cate,"
                       "hour,price")


@pytest.mark.slow
@pytest.mark.parametrize("name", SAMPLES)
def test_train_evaluate_export_predict(name, request, tmp_path, bare_loader):
    """Multi-scenario samples (`*_on_multidomain.config`) run on the multi-domain data."""
    import mtrec
    multidomain = "multidomain" in name
    train_path, test_path = request.getfixturevalue(
        "small_multidomain" if multidomain else "small_taobao")
    columns = MULTIDOMAIN_COLUMNS if multidomain else TAOBAO_COLUMNS
    model_dir = str(tmp_path / "model")
    sets = fast_overrides(train_path, test_path)
    result = mtrec.train(sample_config(name), model_dir=model_dir, sets=sets)
    assert result["global_step"] == 20
    # Checkpoints at 10 and 20, the merged config, one eval line per checkpoint.
    assert os.path.exists(os.path.join(model_dir, "pipeline.config"))
    with open(os.path.join(model_dir, "eval_result.txt")) as f:
        lines = [json.loads(line) for line in f]
    assert [line["global_step"] for line in lines] == [10, 20]
    assert os.listdir(os.path.join(model_dir, "train"))
    # Both evaluations write to one events file (one writer per directory).
    assert len(os.listdir(os.path.join(model_dir, "eval"))) == 1
    assert os.listdir(os.path.join(model_dir, "export", "final"))
    if multidomain and not name.startswith("mmoe"):  # every metric per domain too
        assert {f"auc_ctr/domain={d}" for d in range(4)} <= set(lines[-1])

    # evaluate from model_dir alone takes the best checkpoint (the final export's too).
    best = result["best"]
    again = mtrec.evaluate(model_dir=model_dir)
    assert again["global_step"] == best["global_step"]
    assert again["auc_ctr"] == pytest.approx(best["auc_ctr"], abs=1e-6)

    # The export train wrote at the end (export_config default "final"); `mtrec export`
    # from a model_dir is tested in test_cli.
    final = os.path.join(model_dir, "export", "final")
    export_dir = os.path.join(final, os.listdir(final)[0])
    assert os.path.basename(export_dir).isdigit()
    assert os.path.isfile(os.path.join(export_dir, "assets", "pipeline.config"))

    scored = str(tmp_path / "scored.csv")
    rows = mtrec.predict(export_dir, test_path, scored, reserved_cols=["user_id"])
    assert rows == 400
    with open(scored, newline="") as f:
        predicted = list(csv.DictReader(f))
    assert len(predicted) == 400
    assert "probs_ctr" in predicted[0] and "user_id" in predicted[0]
    # The reported AUC is the rank AUC of the exported model's scores, up to Keras' 10,000
    # thresholds (pairs in one bucket count half; the scores of 20 steps crowd, so 5e-3).
    # clk is the first column of both data sets.
    with open(test_path, newline="") as f:
        clicks = [int(row[0]) for row in csv.reader(f)]
    assert best["auc_ctr"] == pytest.approx(
        exact_auc(clicks, [float(r["probs_ctr"]) for r in predicted]), abs=5e-3)

    outputs = bare_loader(export_dir, test_path, columns)
    for key, values in outputs.items():
        mine = np.array([float(r[key]) for r in predicted])
        np.testing.assert_allclose(mine, np.array(values, dtype=float), atol=1e-5, err_msg=key)
    if name.startswith("esmm"):
        np.testing.assert_allclose(np.array(outputs["probs_ctcvr"]),
                                   np.array(outputs["probs_ctr"]) * np.array(outputs["probs_cvr"]),
                                   rtol=1e-5)


@pytest.mark.slow
def test_resume_continues_at_exact_step(small_taobao, tmp_path):
    import mtrec
    train_path, test_path = small_taobao
    model_dir = str(tmp_path / "model")
    sets = fast_overrides(train_path, test_path, steps=10) + ["export_config.exporter_type=latest"]
    mtrec.train(sample_config("mmoe_on_taobao.config"), model_dir=model_dir, sets=sets)
    sets = fast_overrides(train_path, test_path, steps=30) + ["export_config.exporter_type=latest"]
    result = mtrec.train(sample_config("mmoe_on_taobao.config"), model_dir=model_dir, sets=sets)
    assert result["global_step"] == 30
    with open(os.path.join(model_dir, "eval_result.txt")) as f:
        steps = [json.loads(line)["global_step"] for line in f]
    assert steps == [10, 20, 30]
    # exporter_type "latest": one export per evaluation, exports_to_keep (1) kept.
    assert len([d for d in os.listdir(os.path.join(model_dir, "export", "latest"))
                if d.isdigit()]) == 1


@pytest.mark.slow
def test_same_seed_same_result(small_taobao, tmp_path):
    import mtrec
    train_path, test_path = small_taobao
    sets = fast_overrides(train_path, test_path, steps=10) + [
        "train_config.seed=7", "export_config.exporter_type=latest"]
    first = mtrec.train(sample_config("mmoe_on_taobao.config"), model_dir=str(tmp_path / "a"),
                        sets=sets)
    second = mtrec.train(sample_config("mmoe_on_taobao.config"), model_dir=str(tmp_path / "b"),
                         sets=sets)
    assert first["auc_ctr"] == second["auc_ctr"] and first["auc_cvr"] == second["auc_cvr"]
