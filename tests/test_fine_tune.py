"""fine_tune_checkpoint: a new model_dir starts from another run's weights; a checkpoint
that holds none of the model's weights, or weights of other shapes, is one clear error, and
one that holds only some of them says how many it initialised."""
import logging

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_INPUTS, TINY_MMOE, edit

ROWS = [f"{(i % 8) < 4:d},{(i % 3) == 0:d},u{i % 8},{i % 40}" for i in range(64)]


def _config(tmp_path, model=TINY_MMOE, inputs=TINY_INPUTS, train=""):
    data = tmp_path / "train.csv"
    data.write_text("\n".join(ROWS) + "\n")
    path = tmp_path / f"pipeline{len(list(tmp_path.iterdir()))}.config"
    path.write_text(inputs.replace("num_steps: 10", f"num_steps: 4\n{train}") + model
                    + f'train_input_path: "{data}"\n')
    return str(path)


def _values(model_dir):
    """{checkpoint key: value} of the model's weights in model_dir's latest checkpoint
    (TensorFlow keys the dense weights by their first path: the optimizer's list)."""
    reader = tf.train.load_checkpoint(model_dir)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith(("model/", "dense_optimizer/_trainable_variables/"))}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A model_dir trained 4 steps on the tiny MMoE."""
    import mtrec
    tmp_path = tmp_path_factory.mktemp("source")
    model_dir = str(tmp_path / "model")
    mtrec.train(_config(tmp_path), model_dir=model_dir)
    return model_dir


def test_fine_tune_starts_from_the_checkpoints_weights(source, tmp_path):
    import mtrec
    # Learning rate 0: the weights after training are the ones fine-tuning started from.
    config = _config(tmp_path, inputs=TINY_INPUTS.replace("learning_rate: 0.01",
                                                          "learning_rate: 0.0"),
                     train=f'  fine_tune_checkpoint: "{source}"\n')
    model_dir = str(tmp_path / "tuned")
    mtrec.train(config, model_dir=model_dir)
    before, after = _values(source), _values(model_dir)
    assert before.keys() == after.keys() and len(before) > 4
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_a_checkpoint_of_something_else_is_one_clear_error(tmp_path):
    import mtrec
    from mtrec.errors import TrainingError
    other = tf.train.Checkpoint(net=tf.Module()).save(str(tmp_path / "other" / "ckpt"))
    config = _config(tmp_path, train=f'  fine_tune_checkpoint: "{other}"\n')
    with pytest.raises(TrainingError, match="holds none of this model's weights"):
        mtrec.train(config, model_dir=str(tmp_path / "tuned"))


def test_weights_of_another_shape_are_one_clear_error(source, tmp_path):
    import mtrec
    from mtrec.errors import TrainingError
    wider = edit('hash_bucket_size: 100 embedding_dim: 4', 'hash_bucket_size: 100 embedding_dim: 6',
                 TINY_INPUTS)
    config = _config(tmp_path, inputs=wider, train=f'  fine_tune_checkpoint: "{source}"\n')
    with pytest.raises(TrainingError, match="does not fit this config's model"):
        mtrec.train(config, model_dir=str(tmp_path / "tuned"))


def test_a_partial_checkpoint_says_how_many_weights_it_initialised(source, tmp_path, caplog):
    import mtrec
    # A third tower: its weights are not in the source checkpoint.
    model = edit('    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] '
                 'use_bn: false } }\n',
                 '    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] '
                 'use_bn: false } }\n    task_towers { tower_name: "cvr2" label_name: "buy" '
                 'dnn { hidden_units: [4] use_bn: false } }\n', TINY_MMOE)
    config = _config(tmp_path, model=model, train=f'  fine_tune_checkpoint: "{source}"\n')
    with caplog.at_level(logging.INFO, logger="mtrec"):
        mtrec.train(config, model_dir=str(tmp_path / "tuned"))
    lines = [r.getMessage() for r in caplog.records if "keep their initial values" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    # The extra tower adds its MMoE gate, a hidden layer and an output layer: three
    # kernels and three biases.
    assert " 6 keep their initial values" in lines[0], lines[0]
