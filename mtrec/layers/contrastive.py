"""Contrastive losses between two encodings of the same rows, and EasyRec's AuxiliaryLoss
layer that adds one of them to the training loss (the CL4SRec sample's `contrastive`
block).

For z_i, z_j (batch B, h), rows b of both encode the same example:
  nce_loss  (CL4SRec's NT-Xent) z = [z_i; z_j] (2B, h), s = z z^T / temperature; row r's
            positive is its other view p(r) = r +- B, its negatives the other 2B - 2 rows:
            mean over r of  -s[r, p(r)] + log sum_{c != r} exp s[r, c]
  info_nce  s = z_i z_j^T / temperature: mean over b of  -s[b, b] + log sum_c exp s[b, c]
  l2_loss   mean over b of  sum_k (z_i[b, k] - z_j[b, k])^2
No normalisation of z (as EasyRec).
"""
import keras
from keras import ops

LOSS_TYPES = ("nce_loss", "info_nce", "l2_loss")


def nce_loss(z_i, z_j, temperature=1.0):
    """CL4SRec's NT-Xent loss of two (batch, h) views -> a scalar."""
    z = ops.concatenate([ops.cast(z_i, "float32"), ops.cast(z_j, "float32")], axis=0)  # (2B, h)
    batch = ops.shape(z_i)[0]
    sim = ops.matmul(z, ops.transpose(z)) / temperature               # (2B, 2B)
    rows = ops.arange(2 * batch)
    sim = ops.where(ops.eye(2 * batch, dtype="bool"), -1e9, sim)      # drop s[r, r]
    positive = (rows + batch) % (2 * batch)                           # (2B,)
    return ops.mean(keras.losses.sparse_categorical_crossentropy(positive, sim,
                                                                 from_logits=True))


def info_nce_loss(query, positive, temperature=0.1):
    """InfoNCE of (batch, h) queries against their positives (the other rows' positives
    are the negatives) -> a scalar."""
    query, positive = ops.cast(query, "float32"), ops.cast(positive, "float32")
    logits = ops.matmul(query, ops.transpose(positive)) / temperature  # (B, B)
    labels = ops.arange(ops.shape(query)[0])
    return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                 from_logits=True))


def l2_loss(x1, x2):
    """Mean over rows of the squared euclidean distance -> a scalar."""
    diff = ops.cast(x1, "float32") - ops.cast(x2, "float32")
    return ops.mean(ops.sum(ops.square(diff), axis=-1))


@keras.saving.register_keras_serializable(package="mtrec")
class AuxiliaryLoss(keras.layers.Layer):
    """[x1 (batch, h), x2 (batch, h)] -> (batch, 1), every row the weighted loss. While
    training the weighted loss is added to the model's losses (Keras add_loss, which the
    train step sums into the total); outside training nothing is computed and the output
    is zeros."""

    def __init__(self, loss_type="nce_loss", loss_weight=1.0, temperature=0.1, **kwargs):
        super().__init__(**kwargs)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"AuxiliaryLoss loss_type must be one of {', '.join(LOSS_TYPES)}; "
                             f"got {loss_type!r}.")
        if temperature <= 0:
            raise ValueError(f"AuxiliaryLoss temperature must be > 0, got {temperature}.")
        self.loss_type = loss_type
        self.loss_weight = float(loss_weight)
        self.temperature = float(temperature)

    def build(self, input_shape):
        ok = (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
              and all(isinstance(s, (list, tuple)) and len(s) == 2 for s in input_shape))
        if not ok or input_shape[0][-1] != input_shape[1][-1]:
            raise ValueError("AuxiliaryLoss takes two (batch, h) tensors of the same width "
                             f"(merge_inputs_into_list), got {input_shape}.")

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def loss(self, x1, x2):
        """The weighted loss of two views (a float32 scalar)."""
        if self.loss_type == "nce_loss":
            value = nce_loss(x1, x2, self.temperature)
        elif self.loss_type == "info_nce":
            value = info_nce_loss(x1, x2, self.temperature)
        else:
            value = l2_loss(x1, x2)
        return self.loss_weight * value

    def call(self, inputs, training=False):
        x1, x2 = inputs
        rows = ops.zeros((ops.shape(x1)[0], 1), "float32")               # (batch, 1)
        if not training:
            return rows
        value = self.loss(x1, x2)
        self.add_loss(value)
        return rows + value

    def get_config(self):
        return {**super().get_config(), "loss_type": self.loss_type,
                "loss_weight": self.loss_weight, "temperature": self.temperature}
