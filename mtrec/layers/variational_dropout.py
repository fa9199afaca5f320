"""Variational (concrete) dropout over the features of a group, as EasyRec's
VariationalDropoutLayer (Chang et al. 2017, "Dropout Feature Ranking for Deep Learning
Models"): a learned dropout rate per feature ranks the features by how much the model
needs them.

With logit_p one learned value per feature (or per output dimension, embedding_wise):
  p    = sigmoid(logit_p)                                   drop rate
  training:   x * (1 - sigmoid((logit(p) + logit(u)) / t))   u ~ U(0, 1) per row and rate,
              logit(a) = log(a + eps) - log(1 - a + eps),    t = 0.1 (a relaxed Bernoulli
                                                             keep mask, differentiable in p)
  inference:  x * (1 - p)                                    the mask's expectation
  loss:       lambda / batch * sum(1 - p)                    pushes rates of unneeded
                                                             features towards 1
A rate per feature covers all of that feature's dimensions.
"""
import keras
import numpy as np
from keras import ops

# EasyRec's constants: the relaxation's temperature and the epsilon inside its logs.
TEMPERATURE = 0.1
EPSILON = float(np.finfo(float).eps)


class VariationalDropout(keras.layers.Layer):
    """List of f tensors (batch, d_i) -> the same list, each feature scaled by its keep mask
    (training) or keep rate (inference); adds the rate penalty to the layer's losses."""

    def __init__(self, widths, regularization_lambda=0.01, embedding_wise=False, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        widths = [int(w) for w in widths]
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"VariationalDropout needs one width >= 1 per feature, got "
                             f"{widths}.")
        if regularization_lambda < 0:
            raise ValueError(f"VariationalDropout regularization_lambda must be >= 0, got "
                             f"{regularization_lambda}.")
        self.widths = widths
        self.regularization_lambda = float(regularization_lambda)
        self.embedding_wise = bool(embedding_wise)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Rate i covers output dimensions expand[i] (feature-wise: a feature's dimensions).
        self.num_rates = sum(widths) if self.embedding_wise else len(widths)
        self.expand = (None if self.embedding_wise
                       else np.repeat(np.arange(len(widths)), widths).astype("int32"))

    def build(self, input_shape=None):
        # EasyRec's tf.get_variable default: Glorot uniform, i.e. U(+-sqrt(3 / num_rates)).
        self.logit_p = self.add_weight(shape=(self.num_rates,), name="logit_p",
                                       initializer=keras.initializers.GlorotUniform())

    def drop_rates(self):
        """(num_rates,) the learned dropout rates p (float32, also under mixed precision)."""
        return ops.sigmoid(ops.cast(self.logit_p, "float32"))

    def keep_mask(self, u):
        """(batch, num_rates) uniform noise -> the relaxed Bernoulli keep mask."""
        p = self.drop_rates()
        logit = (ops.log(p + EPSILON) - ops.log(1.0 - p + EPSILON)
                 + ops.log(u + EPSILON) - ops.log(1.0 - u + EPSILON))
        return 1.0 - ops.sigmoid(logit / TEMPERATURE)

    def _per_dimension(self, values):
        """(..., num_rates) -> (..., sum d_i): each rate repeated over its dimensions."""
        return values if self.expand is None else ops.take(values, self.expand, axis=-1)

    def call(self, inputs, training=None):
        if len(inputs) != len(self.widths):
            raise ValueError(f"VariationalDropout was built for {len(self.widths)} features, "
                             f"got {len(inputs)}.")
        x = ops.concatenate(list(inputs), axis=-1)  # (batch, sum d_i)
        p = self.drop_rates()  # (num_rates,)
        batch = ops.shape(x)[0]
        if training:
            u = keras.random.uniform((batch, self.num_rates), dtype="float32",
                                     seed=self.seed_generator)  # (batch, num_rates)
            scale = self._per_dimension(self.keep_mask(u))  # (batch, sum d_i)
        else:
            scale = self._per_dimension(1.0 - p)[None, :]  # (1, sum d_i)
        x = x * ops.cast(scale, x.dtype)
        penalty = self.regularization_lambda / ops.cast(batch, "float32") * ops.sum(1.0 - p)
        self.add_loss(penalty)
        splits = np.cumsum(self.widths)[:-1].tolist()
        return ops.split(x, splits, axis=-1) if splits else [x]

    def get_config(self):
        return {**super().get_config(), "widths": self.widths,
                "regularization_lambda": self.regularization_lambda,
                "embedding_wise": self.embedding_wise}
