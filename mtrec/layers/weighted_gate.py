"""Weighted sum of experts (the gate of CDN, Chen et al. 2023, "Cold & Warm Net").

Inputs: a list with the weights w (batch, k) at weight_index and k experts e_j (batch, d):
  out = sum_j w[:, j] * e_j      (experts in list order, skipping the weights)
then an optional MLP.
"""
import keras

from mtrec.layers.mlp import MLP


@keras.saving.register_keras_serializable(package="mtrec")
class WeightedGate(keras.layers.Layer):
    """[.., w (batch, k), ..] with k experts (batch, d) -> (batch, d) or (batch, mlp width).
    mlp: mtrec.layers.mlp.MLP keyword arguments or None."""

    def __init__(self, weight_index=0, mlp=None, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        self.weight_index = int(weight_index)
        self.mlp_args = mlp
        self.l2_regularization = float(l2_regularization)
        self.mlp = (MLP(**mlp, l2_regularization=l2_regularization, name="mlp")
                    if mlp is not None else None)

    def call(self, inputs, training=False):
        inputs = list(inputs)
        if len(inputs) < 2 or not 0 <= self.weight_index < len(inputs):
            raise ValueError(f"Gate takes a list of weights and at least one expert, with the "
                             f"weights at weight_index {self.weight_index}; got "
                             f"{len(inputs)} inputs.")
        weights = inputs[self.weight_index]                       # (batch, k)
        experts = [x for i, x in enumerate(inputs) if i != self.weight_index]
        out = sum(weights[:, j, None] * x for j, x in enumerate(experts))  # (batch, d)
        if self.mlp is not None:
            out = self.mlp(out, training=training)
        return out

    def get_config(self):
        return {**super().get_config(), "weight_index": self.weight_index,
                "mlp": self.mlp_args, "l2_regularization": self.l2_regularization}
