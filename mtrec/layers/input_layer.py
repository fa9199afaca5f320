"""A backbone input layer: one feature group's per-feature embeddings -> the form a block
asks for, with optional normalisation and dropout (EasyRec's InputLayer).

  feature dropout (training): e_i <- e_i * k_i / (1 - rate), k_i ~ Bernoulli(1 - rate) per
      row and feature, so whole features vanish;
  batch norm: per feature (the same as on the concatenation: it is per column);
  layer norm: on the concatenated tensor, and on each feature for list outputs;
  dropout: on the concatenated tensor, and on each feature for list outputs.
Outputs: the (batch, sum d_i) concatenation (default); the list [e_1, ...]
(feature_list); the stack (batch, n, d) (tensor_3d); or both (2d_and_list).
"""
import keras
from keras import ops

from mtrec.layers.dnn import DebiasedBatchNormalization

OUTPUTS = ("2d", "feature_list", "tensor_3d", "2d_and_list")


class GroupInput(keras.layers.Layer):
    """List of n (batch, d_i) embeddings -> the `output` form (see module docstring)."""

    def __init__(self, output="2d", do_batch_norm=False, do_layer_norm=False, dropout_rate=0.0,
                 feature_dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
        if do_batch_norm and do_layer_norm:
            raise ValueError("do_batch_norm and do_layer_norm are exclusive.")
        for name, rate in (("dropout_rate", dropout_rate),
                           ("feature_dropout_rate", feature_dropout_rate)):
            if not 0 <= rate < 1:
                raise ValueError(f"{name} must be in [0, 1), got {rate}.")
        self.output_form = output
        self.do_batch_norm = bool(do_batch_norm)
        self.do_layer_norm = bool(do_layer_norm)
        self.dropout_rate = float(dropout_rate)
        self.feature_dropout_rate = float(feature_dropout_rate)
        self.dropout = keras.layers.Dropout(dropout_rate, name="dropout") if dropout_rate else None
        # noise_shape (batch, 1): one keep/drop draw per row for the whole feature.
        self.feature_dropout = (keras.layers.Dropout(feature_dropout_rate, noise_shape=(None, 1),
                                                     name="feature_dropout")
                                if feature_dropout_rate else None)
        self.feature_norms = []
        self.concat_norm = None

    @property
    def lists(self) -> bool:
        return self.output_form != "2d"

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if self.output_form == "tensor_3d" and len({s[-1] for s in shapes}) > 1:
            raise ValueError(f"a (batch, n, d) output needs features of one width, got widths "
                             f"{sorted({s[-1] for s in shapes})}.")
        if self.do_batch_norm:
            self.feature_norms = [DebiasedBatchNormalization(name=f"bn_{i}")
                                  for i in range(len(shapes))]
        elif self.do_layer_norm:
            if self.output_form != "2d":
                self.feature_norms = [keras.layers.LayerNormalization(name=f"ln_{i}")
                                      for i in range(len(shapes))]
            if self.output_form in ("2d", "2d_and_list"):
                self.concat_norm = keras.layers.LayerNormalization(name="ln")
                self.concat_norm.build((None, sum(s[-1] for s in shapes)))
        for norm, shape in zip(self.feature_norms, shapes):
            norm.build(shape)

    def call(self, features, training=False):
        features = list(features)
        if self.feature_dropout is not None:
            features = [self.feature_dropout(e, training=training) for e in features]
        if self.do_batch_norm:
            features = [norm(e, training=training) for norm, e in zip(self.feature_norms, features)]
        tensor = None
        if self.output_form in ("2d", "2d_and_list"):
            tensor = ops.concatenate(features, axis=-1)  # (batch, sum d_i)
            if self.concat_norm is not None:
                tensor = self.concat_norm(tensor)
            if self.dropout is not None:
                tensor = self.dropout(tensor, training=training)
        if self.output_form == "2d":
            return tensor
        if self.do_layer_norm:
            features = [norm(e) for norm, e in zip(self.feature_norms, features)]
        if self.dropout is not None:
            features = [self.dropout(e, training=training) for e in features]
        if self.output_form == "tensor_3d":
            return ops.stack(features, axis=1)  # (batch, n, d)
        if self.output_form == "feature_list":
            return features
        return [tensor, features]

    def get_config(self):
        return {**super().get_config(), "output": self.output_form,
                "do_batch_norm": self.do_batch_norm, "do_layer_norm": self.do_layer_norm,
                "dropout_rate": self.dropout_rate,
                "feature_dropout_rate": self.feature_dropout_rate}
