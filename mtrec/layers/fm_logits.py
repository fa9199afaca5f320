"""The logits of EasyRec's FM model: a linear part, the FM interaction term and a bias.

  logits = wide + fm + bias                                          (batch, num_class)
  wide: the WIDE group's per-id weights summed per class             (batch, num_class)
  fm:   the FM's per-dimension terms (mtrec.layers.fm, use_variant) summed (num_class 1),
        or through a Dense per class (num_class > 1)
"""
import keras
from keras import ops


class FMLogits(keras.layers.Layer):
    """[wide (batch, num_class), fm terms (batch, dim)] -> logits (batch, num_class)."""

    def __init__(self, num_class=1, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if num_class < 1:
            raise ValueError(f"num_class must be at least 1, got {num_class}.")
        self.num_class = int(num_class)
        self.l2_regularization = l2_regularization
        regularizer = keras.regularizers.L2(l2_regularization) if l2_regularization else None
        self.fm_logits = (keras.layers.Dense(self.num_class, kernel_regularizer=regularizer,
                                             name="fm_logits")
                          if self.num_class > 1 else None)

    def build(self, input_shape):
        if self.fm_logits is not None:
            self.fm_logits.build(input_shape[1])
        self.bias = self.add_weight(shape=(self.num_class,), initializer="zeros",
                                    name="fm_bias")

    def call(self, inputs):
        wide, fm = inputs
        fm = (self.fm_logits(fm) if self.fm_logits is not None
              else ops.sum(fm, axis=-1, keepdims=True))  # (batch, num_class)
        return wide + fm + self.bias

    def get_config(self):
        return {**super().get_config(), "num_class": self.num_class,
                "l2_regularization": self.l2_regularization}
