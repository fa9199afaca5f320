"""export_config options that shape the serving signature (EasyRec's names):
multi_placeholder, placeholder_named_by_input, filter_inputs, asset_files; and the clear
errors for the ones mtrec does not build."""
import csv
import os

import numpy as np
import pytest

from conftest import fast_overrides, sample_config


@pytest.fixture(scope="module")
def trained(small_taobao, tmp_path_factory):
    """(model_dir, test_path) of the MMoE sample trained a few steps."""
    import mtrec
    train_path, test_path = small_taobao
    model_dir = str(tmp_path_factory.mktemp("signature") / "model")
    mtrec.train(sample_config("mmoe_on_taobao.config"), model_dir=model_dir,
                sets=fast_overrides(train_path, test_path, steps=5))
    return model_dir, test_path


def _export(model_dir, tmp_path, *sets):
    import mtrec
    return mtrec.export(model_dir=model_dir, export_dir=str(tmp_path / "export"),
                        sets=list(sets))


def _rows(test_path, n=6):
    with open(test_path, newline="") as f:
        return list(csv.reader(f))[:n]


def _columns(serve, pipeline, rows):
    """The `columns` signature's inputs from CSV rows."""
    import tensorflow as tf
    names = [f.input_name for f in pipeline.data_config.input_fields]
    specs = serve.structured_input_signature[1]
    inputs = {}
    for name, spec in specs.items():
        cells = [r[names.index(name)] for r in rows]
        inputs[name] = (tf.constant(cells) if spec.dtype == tf.string else
                        tf.constant([float(c or 0) for c in cells], tf.float64))
        inputs[name] = tf.cast(inputs[name], spec.dtype) if spec.dtype != tf.string else inputs[name]
    return inputs


def _pipeline(export_dir):
    from mtrec import config as config_lib
    path = os.path.join(export_dir, "assets", "pipeline.config")
    with open(path, encoding="utf-8") as f:
        return config_lib.parse_text(f.read(), path)


@pytest.mark.slow
def test_single_placeholder_equals_the_columns_signature(trained, tmp_path):
    import tensorflow as tf
    model_dir, test_path = trained
    export_dir = _export(model_dir, tmp_path, "export_config.multi_placeholder=false")
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["features"]
    pipeline = _pipeline(export_dir)
    rows = _rows(test_path)
    names = [f.input_name for f in pipeline.data_config.input_fields]
    used = {f.input_name for f in pipeline.data_config.input_fields} - set(
        pipeline.data_config.label_fields)
    columns = loaded.signatures["columns"]
    wanted = set(columns.structured_input_signature[1])
    assert wanted <= used
    # EasyRec's single placeholder: the model's inputs, in data_config order, joined.
    order = [i for i, n in enumerate(names) if n in wanted]
    joined = [pipeline.data_config.separator.join(r[i] for i in order) for r in rows]
    single = serve(features=tf.constant(joined))
    by_column = columns(**_columns(columns, pipeline, rows))
    assert sorted(single) == sorted(by_column)
    for key in by_column:
        np.testing.assert_allclose(single[key].numpy(), by_column[key].numpy(), rtol=1e-6)


@pytest.mark.slow
def test_inputs_named_by_index_and_unfiltered(trained, tmp_path):
    import tensorflow as tf
    model_dir, test_path = trained
    export_dir = _export(model_dir, tmp_path, "export_config.placeholder_named_by_input=false",
                         "export_config.filter_inputs=false")
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    pipeline = _pipeline(export_dir)
    fields = pipeline.data_config.input_fields
    labels = set(pipeline.data_config.label_fields)
    expected = {f"input_{i}" for i, f in enumerate(fields) if f.input_name not in labels}
    assert set(serve.structured_input_signature[1]) == expected
    rows = _rows(test_path)
    by_name = _columns(loaded.signatures["columns"], pipeline, rows)
    named = {}
    for i, f in enumerate(fields):
        if f.input_name in labels:
            continue
        spec = serve.structured_input_signature[1][f"input_{i}"]
        named[f"input_{i}"] = by_name.get(f.input_name, tf.zeros([len(rows)], spec.dtype)
                                          if spec.dtype != tf.string
                                          else tf.constant([""] * len(rows)))
    out, ref = serve(**named), loaded.signatures["columns"](**by_name)
    for key in ref:
        np.testing.assert_allclose(out[key].numpy(), ref[key].numpy(), rtol=1e-6)


@pytest.mark.slow
def test_predict_reads_columns_whatever_the_signature(trained, tmp_path):
    import mtrec
    model_dir, test_path = trained
    export_dir = _export(model_dir, tmp_path, "export_config.multi_placeholder=false")
    out = str(tmp_path / "scored.csv")
    assert mtrec.predict(saved_model=export_dir, input_path=test_path, output_path=out) > 0
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert "probs_ctr" in header


@pytest.mark.slow
def test_asset_files_are_copied(trained, tmp_path):
    model_dir, _ = trained
    asset = tmp_path / "vocab.txt"
    asset.write_text("a\nb\n")
    export_dir = _export(model_dir, tmp_path, f"export_config.asset_files={asset}")
    assert (open(os.path.join(export_dir, "assets", "vocab.txt")).read()) == "a\nb\n"


@pytest.mark.parametrize("setting,needle", [
    ("export_config.export_features=true", "export_features is not supported"),
    ("export_config.export_rtp_outputs=true", "export_rtp_outputs is not supported"),
    ("export_config.auto_multi_value=true", "auto_multi_value is not supported"),
    ("export_config.asset_files=/no/such/file", "'/no/such/file' is not a file"),
])
def test_unsupported_export_options_are_one_clear_error(tmp_path, setting, needle):
    from mtrec import config as config_lib
    from mtrec.errors import ConfigError
    text = open(sample_config("mmoe_on_taobao.config")).read()
    text += "\nexport_config {\n  %s: %s\n}\n" % tuple(setting.split(".", 1)[1].split("=", 1))
    if "asset_files" in setting:
        text = text.replace("/no/such/file", '"/no/such/file"')
    path = tmp_path / "c.config"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        config_lib.load(str(path))
    message = str(e.value)
    assert needle in message
    line = len(text.splitlines()) - 1  # the option's line
    assert f"c.config:{line}:" in message, message
