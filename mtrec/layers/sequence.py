"""Sequence combiners: pooling a padded behaviour sequence into one vector, and DIN's
target attention (Zhou et al. 2018, "Deep Interest Network for Click-Through Rate
Prediction").

Every layer takes a dense padded sequence (batch, len, dim) and a boolean mask (batch, len)
that is True on real positions. Padded positions never contribute, and a row whose
positions are all padded (an empty sequence) gives a zero vector, never NaN or -inf.

Pooling modes (EasyRec's sequence_combiner):
  sum        sum_t m_t x_t
  mean       sum_t m_t x_t / max(1, sum_t m_t)
  max        max over real positions (0 for an empty row)
  attention  a = softmax over real positions of (x_t . w), w a (dim, 1) kernel without
             bias; out = sum_t a_t x_t

Target attention: for a query q (the target item) and keys k_t (the history),
  s_t = MLP([q, k_t, q - k_t, q * k_t])        one score per position, last layer linear
  a   = softmax over real positions of s       (or sigmoid(s / sqrt(d)) on real positions)
  out = sum_t a_t v_t                          v = values, or the keys themselves
The MLP's first layer is computed from its kernel's four (d, u) blocks, a per-row part for q
and a per-position part for k (TargetAttention._first_layer): the same values and weights
with a quarter of that layer's multiply-adds, and no (batch, len, 4d) input.
EasyRec gives padded positions the score -2**32 + 1 before the softmax; here they get
weight 0 after it, which is the same for every row with a real position and gives an empty
row zero weights instead of uniform ones.
"""
import keras
from keras import ops

from mtrec.layers.dnn import DNN, activation_name

POOLING_MODES = ("sum", "mean", "max", "attention")
ATTENTION_NORMALIZERS = ("softmax", "sigmoid")
_MASKED_LOGIT = -1e9  # finite in float32: softmax of an all-masked row stays finite


def _float_mask(mask, seq):
    """The (batch, len) mask as (batch, len) floats of seq's dtype; None means all real."""
    if mask is None:
        return ops.ones(ops.shape(seq)[:2], dtype=seq.dtype)
    return ops.cast(mask, seq.dtype)


def masked_softmax(logits, mask):
    """(batch, len) logits, (batch, len) bool mask -> (batch, len) weights that are zero on
    masked positions and sum to 1 over the real ones (all zero when there are none)."""
    mask = ops.cast(mask, "bool")
    if logits.shape[-1] == 1:  # one position: the softmax is 1 (Keras warns on size-1 axes)
        return ops.cast(mask, "float32")
    logits = ops.cast(logits, "float32")
    weights = ops.softmax(ops.where(mask, logits, _MASKED_LOGIT), axis=-1)
    return weights * ops.cast(mask, "float32")


def _check_sequence_shape(layer, name, shape):
    if len(shape) != 3 or shape[-1] is None:
        raise ValueError(f"{layer} needs {name} of shape (batch, len, dim) with a known dim, "
                         f"got {tuple(shape)}.")


@keras.saving.register_keras_serializable(package="mtrec")
class SequencePooling(keras.layers.Layer):
    """seq (batch, len, dim) float, mask (batch, len) bool -> (batch, dim)."""

    def __init__(self, mode="mean", l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(f"SequencePooling mode must be one of {', '.join(POOLING_MODES)}; "
                             f"got {mode!r}.")
        if l2_regularization < 0:
            raise ValueError(f"SequencePooling l2_regularization must be >= 0, got "
                             f"{l2_regularization}.")
        self.mode = mode
        self.l2_regularization = float(l2_regularization)
        self.score = None
        if mode == "attention":
            regularizer = (keras.regularizers.L2(self.l2_regularization)
                           if self.l2_regularization else None)
            self.score = keras.layers.Dense(1, use_bias=False, kernel_regularizer=regularizer,
                                            name="attention")

    def build(self, seq_shape, mask_shape=None):
        _check_sequence_shape("SequencePooling", "seq", seq_shape)
        if self.score is not None:
            self.score.build(tuple(seq_shape))

    def compute_output_shape(self, seq_shape, mask_shape=None):
        return (seq_shape[0], seq_shape[-1])

    def call(self, seq, mask=None):
        m = _float_mask(mask, seq)                               # (batch, len)
        if self.mode == "attention":
            logits = ops.squeeze(self.score(seq), axis=-1)       # (batch, len)
            weights = ops.cast(masked_softmax(logits, m > 0), seq.dtype)
            return ops.einsum("bl,bld->bd", weights, seq)        # (batch, dim)
        if self.mode == "max":
            real = ops.expand_dims(m > 0, -1)                    # (batch, len, 1)
            lowest = ops.where(real, seq, ops.cast(float("-inf"), seq.dtype))
            best = ops.max(lowest, axis=1)                       # (batch, dim)
            return ops.where(ops.any(m > 0, axis=1, keepdims=True), best,
                             ops.zeros_like(best))
        total = ops.einsum("bl,bld->bd", m, seq)                 # (batch, dim)
        if self.mode == "sum":
            return total
        count = ops.maximum(ops.sum(m, axis=1, keepdims=True), 1.0)  # (batch, 1)
        return total / count

    def compute_mask(self, *args, **kwargs):
        return None

    def get_config(self):
        return {**super().get_config(), "mode": self.mode,
                "l2_regularization": self.l2_regularization}


@keras.saving.register_keras_serializable(package="mtrec")
class TargetAttention(keras.layers.Layer):
    """DIN target attention. query (batch, d), keys (batch, len, d), mask (batch, len) bool,
    optional values (batch, len, d_v) -> (batch, d_v) (d_v = d without values).

    hidden_units: the score MLP's widths; a final width-1 linear layer is appended unless
    the last width is already 1 (that layer is then the linear score). Hidden layers:
    Dense(use_bias) -> [BatchNorm if use_bn] -> activation -> [Dropout(dropout_rate)].
    dropout_rate: one rate for every hidden layer, or one per hidden layer.
    attention_normalizer: "softmax" over real positions, or EasyRec DIN's "sigmoid"
    (sigmoid(score / sqrt(d)) on real positions, 0 on padding).
    """

    def __init__(self, hidden_units=(128, 64, 32, 1), activation="relu", dropout_rate=0.0, *,
                 use_bn=False, use_bias=True, kernel_initializer="glorot_uniform",
                 l2_regularization=0.0, attention_normalizer="softmax", **kwargs):
        super().__init__(**kwargs)
        hidden_units = [int(u) for u in hidden_units]
        if any(u <= 0 for u in hidden_units):
            raise ValueError(f"TargetAttention hidden_units must be positive, got "
                             f"{hidden_units}.")
        units = hidden_units if hidden_units and hidden_units[-1] == 1 else hidden_units + [1]
        n_hidden = len(units) - 1
        rates = ([float(dropout_rate)] * n_hidden if isinstance(dropout_rate, (int, float))
                 else [float(r) for r in dropout_rate])
        if len(rates) not in (n_hidden, len(units)):
            raise ValueError(f"TargetAttention has {n_hidden} hidden layers but "
                             f"{len(rates)} dropout rates.")
        if any(not 0.0 <= r < 1.0 for r in rates):
            raise ValueError(f"TargetAttention dropout rates must be in [0, 1), got {rates}.")
        if attention_normalizer not in ATTENTION_NORMALIZERS:
            raise ValueError(f"TargetAttention attention_normalizer must be one of "
                             f"{', '.join(ATTENTION_NORMALIZERS)}; got "
                             f"{attention_normalizer!r}.")
        if l2_regularization < 0:
            raise ValueError(f"TargetAttention l2_regularization must be >= 0, got "
                             f"{l2_regularization}.")
        self.hidden_units = hidden_units
        self.activation = activation_name(activation)
        self.dropout_rate = (dropout_rate if isinstance(dropout_rate, (int, float))
                             else list(rates))
        self.use_bn = bool(use_bn)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.l2_regularization = float(l2_regularization)
        self.attention_normalizer = attention_normalizer
        # The score layer is linear, has a bias and no batch norm (EasyRec's DIN sets
        # final_activation linear, use_final_bias, no final BN).
        self.score_mlp = DNN(units, self.activation, self.use_bn, rates[:n_hidden] + [0.0],
                             self.l2_regularization, use_bias=self.use_bias,
                             final_activation="linear", use_final_bn=False,
                             use_final_bias=True, kernel_initializer=kernel_initializer,
                             name="score_mlp")
        self.key_dim = None

    def build(self, query_shape, keys_shape=None, mask_shape=None, values_shape=None):
        if len(query_shape) != 2 or query_shape[-1] is None:
            raise ValueError(f"TargetAttention needs a query of shape (batch, d) with a known "
                             f"d, got {tuple(query_shape)}.")
        if keys_shape is None:
            raise ValueError("TargetAttention needs keys (batch, len, d) as well as a query.")
        _check_sequence_shape("TargetAttention", "keys", keys_shape)
        if int(query_shape[-1]) != int(keys_shape[-1]):
            raise ValueError(f"TargetAttention query width {query_shape[-1]} differs from the "
                             f"keys width {keys_shape[-1]}; they must match (query "
                             f"{tuple(query_shape)}, keys {tuple(keys_shape)}).")
        if values_shape is not None:
            _check_sequence_shape("TargetAttention", "values", values_shape)
        self.key_dim = int(keys_shape[-1])
        self.score_mlp.build(tuple(keys_shape[:-1]) + (4 * self.key_dim,))

    def compute_output_shape(self, query_shape, keys_shape=None, mask_shape=None,
                             values_shape=None):
        width = (values_shape or keys_shape)[-1]
        return (query_shape[0], width)

    def attention_weights(self, query, keys, mask=None, training=False):
        """query (batch, d), keys (batch, len, d), mask (batch, len) -> (batch, len) weights,
        zero on masked positions."""
        if not self.built:
            self.build(tuple(query.shape), tuple(keys.shape))
            self.built = True
        hidden = self._first_layer(query, keys)                         # (batch, len, u)
        scores = ops.squeeze(_rest_of_mlp(self.score_mlp, hidden, training), -1)  # (batch, len)
        m = _float_mask(mask, keys) > 0                                # (batch, len)
        if self.attention_normalizer == "softmax":
            weights = masked_softmax(scores, m)
        else:
            scaled = ops.cast(scores, "float32") / float(self.key_dim) ** 0.5
            weights = ops.sigmoid(scaled) * ops.cast(m, "float32")
        return ops.cast(weights, keys.dtype)

    def _first_layer(self, query, keys):
        """The score MLP's first Dense on [q, k, q - k, q * k] (batch, len, 4d), without
        building that input. Its kernel's row blocks W = [Wq; Wk; Wd; Wp] (d rows each) give
          [q, k, q - k, q * k] W + b = (q (Wq + Wd) + b) + k ((Wk - Wd) + diag(q) Wp):
        a per-row part and, per position, the key times a per-row (d, u) kernel; d*u
        multiply-adds per position instead of 4d*u. -> (batch, len, u) before any batch
        norm or activation (the same weights, checkpoints and maths as the naive form)."""
        dense = self.score_mlp.dense_layers[0]
        d, dtype = self.key_dim, dense.compute_dtype
        query, keys = ops.cast(query, dtype), ops.cast(keys, dtype)
        kernel = ops.cast(dense.kernel, dtype)                             # (4d, u)
        w_q, w_k, w_d, w_p = (kernel[i * d:(i + 1) * d] for i in range(4))  # (d, u) each
        row = ops.matmul(query, w_q + w_d)                                 # (batch, u)
        if dense.bias is not None:
            row = row + ops.cast(dense.bias, dtype)
        per_row = (w_k - w_d)[None] + query[:, :, None] * w_p[None]      # (batch, d, u)
        return ops.matmul(keys, per_row) + row[:, None, :]                # (batch, len, u)

    def call(self, query, keys, mask=None, values=None, training=False):
        weights = self.attention_weights(query, keys, mask, training=training)  # (batch, len)
        values = keys if values is None else values                   # (batch, len, d_v)
        return ops.einsum("bl,bld->bd", weights, values)               # (batch, d_v)

    def compute_mask(self, *args, **kwargs):
        return None

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "activation": self.activation, "dropout_rate": self.dropout_rate,
                "use_bn": self.use_bn, "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer,
                "l2_regularization": self.l2_regularization,
                "attention_normalizer": self.attention_normalizer}


def _rest_of_mlp(mlp, x, training):
    """A DNN (mtrec.layers.dnn) given its first Dense's output x: that layer's batch norm,
    activation and dropout, then every later layer, exactly as DNN.call runs them."""
    for i, dense in enumerate(mlp.dense_layers):
        if i:
            x = dense(x)
        act = keras.activations.get(mlp.layer_settings[i][0])
        norm = mlp.norms[i]
        if norm is not None and not mlp.bn_after_activation:
            x = norm(x, training=training)
        x = act(x)
        if norm is not None and mlp.bn_after_activation:
            x = norm(x, training=training)
        if mlp.dropouts[i] is not None:
            x = mlp.dropouts[i](x, training=training)
    return x


@keras.saving.register_keras_serializable(package="mtrec")
class DIN(keras.layers.Layer):
    """EasyRec's DIN backbone layer: [hist (batch, len, d), mask (batch, len) bool,
    target (batch, d_t)] -> (batch, d + d_t) with need_target_feature, else (batch, d).

    TargetAttention of the target over the history. A target narrower than the history is
    zero-padded to its width for the attention (as EasyRec does); the output is the
    weighted sum of the full history, then the unpadded target. attention: the
    TargetAttention keyword arguments.
    """

    def __init__(self, attention=None, need_target_feature=True, **kwargs):
        super().__init__(**kwargs)
        self.attention_args = dict(attention or {})
        self.need_target_feature = bool(need_target_feature)
        self.attention = TargetAttention(**self.attention_args, name="attention")

    def _parts(self, inputs, shapes=False):
        parts_ok = isinstance(inputs, (list, tuple)) and len(inputs) == 3 and (
            not shapes or all(isinstance(s, (list, tuple)) for s in inputs))
        if not parts_ok:
            raise ValueError("DIN takes [history (batch, len, d), mask (batch, len), target "
                             "(batch, d_t)] (an input_layer with "
                             "output_seq_and_normal_feature over a group with target "
                             f"features), got {_describe(inputs)}.")
        return inputs

    def build(self, input_shape):
        hist, _, target = self._parts(input_shape, shapes=True)
        _check_sequence_shape("DIN", "history", hist)
        if len(target) != 2 or target[-1] is None:
            raise ValueError(f"DIN needs a target of shape (batch, d_t), got {tuple(target)}.")
        if target[-1] > hist[-1]:
            raise ValueError(f"DIN: the target is {target[-1]} wide but the history only "
                             f"{hist[-1]}; the target may not be wider than the history.")
        self.attention.build((target[0], hist[-1]), tuple(hist))

    def compute_output_shape(self, input_shape):
        hist, _, target = self._parts(input_shape, shapes=True)
        return (hist[0], hist[-1] + (target[-1] if self.need_target_feature else 0))

    def call(self, inputs, training=False):
        hist, mask, target = self._parts(inputs)
        query = target                                                 # (batch, d_t)
        missing = hist.shape[-1] - target.shape[-1]
        if missing:
            query = ops.pad(target, [[0, 0], [0, missing]])            # (batch, d)
        pooled = self.attention(query, hist, mask, training=training)  # (batch, d)
        if self.need_target_feature:
            return ops.concatenate([pooled, target], axis=-1)          # (batch, d + d_t)
        return pooled

    def get_config(self):
        return {**super().get_config(), "attention": self.attention_args,
                "need_target_feature": self.need_target_feature}


def _describe(value):
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    return f"one tensor of shape {tuple(getattr(value, 'shape', ()))}"
