"""BST: Behavior Sequence Transformer (Chen et al. 2019, "Behavior Sequence Transformer for
E-commerce Recommendation in Alibaba"), with EasyRec's BST layer settings.

For a history x_1..x_L (padded to max_position_embeddings, longer ones keep their first
positions) and an optional target item t:
  x_i <- relu(x_i W_s + b_s), t <- relu(t W_t + b_t)   only when their width != hidden_size
  tokens = [t, x_1..x_L] (target_item_position "head") or [x_1..x_L, t] ("tail"); without
           a target (or with "ignore") and reserve_target_position, a zero token takes the
           target's place, so the token count (and the output width) is the same either way
  h = Dropout(LayerNorm(tokens + P))                   P: learned position embeddings
  N times (post-norm Transformer encoder, BERT style):
    a = LayerNorm(h + Dropout(MultiHeadAttention(h, h, padding masked)))
    h = LayerNorm(a + Dropout(W_2 act(W_1 a + b_1) + b_2))
  output: all tokens flattened (batch, positions * hidden_size) with padded positions
          zeroed (output_all_token_embeddings), else the target's token (batch, hidden_size)
          (head: the first token, tail: the last one).
Padded history positions are never attended to; the target (or reserved) token always is.
Weights use truncated-normal(initializer_range) kernels, as in EasyRec.
"""
import keras
from keras import ops

from mtrec.layers.dnn import activation_name

TARGET_POSITIONS = ("head", "tail", "ignore")
LAYER_NORM_EPSILON = 1e-12  # EasyRec's (BERT's) layer norm


def _initializer(stddev):
    return keras.initializers.TruncatedNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="mtrec")
def check_encoder_args(owner, hidden_size, num_hidden_layers, num_attention_heads,
                       intermediate_size, hidden_dropout_prob, attention_probs_dropout_prob,
                       initializer_range):
    """ValueError for the BERT-style encoder settings BST and UNITER share."""
    for field, value in (("hidden_size", hidden_size),
                         ("num_hidden_layers", num_hidden_layers),
                         ("num_attention_heads", num_attention_heads),
                         ("intermediate_size", intermediate_size)):
        if int(value) < 1:
            raise ValueError(f"{owner} {field} must be at least 1, got {value}.")
    if int(hidden_size) % int(num_attention_heads):
        raise ValueError(f"{owner} hidden_size {hidden_size} must be a multiple of "
                         f"num_attention_heads {num_attention_heads}.")
    for field, value in (("hidden_dropout_prob", hidden_dropout_prob),
                         ("attention_probs_dropout_prob", attention_probs_dropout_prob)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{owner} {field} must be in [0, 1), got {value}.")
    if float(initializer_range) <= 0:
        raise ValueError(f"{owner} initializer_range must be > 0, got {initializer_range}.")


class TransformerBlock(keras.layers.Layer):
    """One post-norm encoder block: (batch, n, hidden_size), mask (batch, n) bool ->
    (batch, n, hidden_size)."""

    def __init__(self, hidden_size, num_attention_heads, intermediate_size, hidden_act="gelu",
                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 initializer_range=0.02, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.num_attention_heads = int(num_attention_heads)
        self.intermediate_size = int(intermediate_size)
        self.hidden_act = activation_name(hidden_act)
        self.hidden_dropout_prob = float(hidden_dropout_prob)
        self.attention_probs_dropout_prob = float(attention_probs_dropout_prob)
        self.initializer_range = float(initializer_range)
        self.l2_regularization = float(l2_regularization)
        regularizer = (keras.regularizers.L2(self.l2_regularization)
                       if self.l2_regularization else None)
        init = _initializer(self.initializer_range)
        self.attention = keras.layers.MultiHeadAttention(
            self.num_attention_heads, self.hidden_size // self.num_attention_heads,
            dropout=self.attention_probs_dropout_prob, kernel_initializer=init,
            kernel_regularizer=regularizer, name="attention")
        self.attention_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                              name="attention_norm")
        self.intermediate = keras.layers.Dense(self.intermediate_size, self.hidden_act,
                                               kernel_initializer=init,
                                               kernel_regularizer=regularizer,
                                               name="intermediate")
        self.output_dense = keras.layers.Dense(self.hidden_size, kernel_initializer=init,
                                               kernel_regularizer=regularizer, name="output")
        self.output_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                           name="output_norm")
        self.dropout = keras.layers.Dropout(self.hidden_dropout_prob)

    def build(self, x_shape, mask_shape=None):
        shape = tuple(x_shape)
        self.attention.build(shape, shape)
        self.attention_norm.build(shape)
        self.intermediate.build(shape)
        self.output_dense.build(shape[:-1] + (self.intermediate_size,))
        self.output_norm.build(shape)

    def compute_output_shape(self, x_shape, mask_shape=None):
        return tuple(x_shape)

    def call(self, x, mask=None, training=False):
        attention_mask = None
        if mask is not None:  # (batch, n, n): every query attends to the real tokens
            attention_mask = ops.repeat(ops.expand_dims(ops.cast(mask, "bool"), 1),
                                        ops.shape(x)[1], axis=1)
        a = self.attention(x, x, attention_mask=attention_mask, training=training)
        a = self.attention_norm(x + self.dropout(a, training=training))   # (batch, n, h)
        f = self.output_dense(self.intermediate(a))                       # (batch, n, h)
        return self.output_norm(a + self.dropout(f, training=training))

    def compute_mask(self, *args, **kwargs):
        return None

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size,
                "num_attention_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size, "hidden_act": self.hidden_act,
                "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "initializer_range": self.initializer_range,
                "l2_regularization": self.l2_regularization}


@keras.saving.register_keras_serializable(package="mtrec")
class BST(keras.layers.Layer):
    """seq (batch, len, d), mask (batch, len) bool, optional target (batch, d) ->
    (batch, positions * hidden_size) with output_all_token_embeddings, else
    (batch, hidden_size). positions = max_position_embeddings, + 1 with a target token or
    a reserved one. Argument names are EasyRec's BSTEncoder fields."""

    def __init__(self, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
                 hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 max_position_embeddings=512, use_position_embeddings=True,
                 initializer_range=0.02, output_all_token_embeddings=True,
                 target_item_position="head", reserve_target_position=True,
                 l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        check_encoder_args("BST", hidden_size, num_hidden_layers, num_attention_heads,
                           intermediate_size, hidden_dropout_prob,
                           attention_probs_dropout_prob, initializer_range)
        if int(max_position_embeddings) < 1:
            raise ValueError(f"BST max_position_embeddings must be at least 1, got "
                             f"{max_position_embeddings}.")
        if target_item_position not in TARGET_POSITIONS:
            raise ValueError(f"BST target_item_position must be one of "
                             f"{', '.join(TARGET_POSITIONS)}; got {target_item_position!r}.")
        if (target_item_position == "ignore" and not reserve_target_position
                and not output_all_token_embeddings):
            raise ValueError("BST with target_item_position 'ignore', no "
                             "reserve_target_position and output_all_token_embeddings false "
                             "would output the last (usually padded) history position; set "
                             "output_all_token_embeddings or reserve_target_position.")
        if l2_regularization < 0:
            raise ValueError(f"BST l2_regularization must be >= 0, got {l2_regularization}.")
        self.hidden_size = int(hidden_size)
        self.num_hidden_layers = int(num_hidden_layers)
        self.num_attention_heads = int(num_attention_heads)
        self.intermediate_size = int(intermediate_size)
        self.hidden_act = activation_name(hidden_act)
        self.hidden_dropout_prob = float(hidden_dropout_prob)
        self.attention_probs_dropout_prob = float(attention_probs_dropout_prob)
        self.max_position_embeddings = int(max_position_embeddings)
        self.use_position_embeddings = bool(use_position_embeddings)
        self.initializer_range = float(initializer_range)
        self.output_all_token_embeddings = bool(output_all_token_embeddings)
        self.target_item_position = target_item_position
        self.reserve_target_position = bool(reserve_target_position)
        self.l2_regularization = float(l2_regularization)
        regularizer = (keras.regularizers.L2(self.l2_regularization)
                       if self.l2_regularization else None)
        self._regularizer = regularizer
        self.seq_project = self.target_project = None
        self.embedding_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                              name="embedding_norm")
        self.embedding_dropout = keras.layers.Dropout(self.hidden_dropout_prob)
        self.blocks = [TransformerBlock(
            self.hidden_size, self.num_attention_heads, self.intermediate_size,
            self.hidden_act, self.hidden_dropout_prob, self.attention_probs_dropout_prob,
            self.initializer_range, self.l2_regularization, name=f"transformer_{i}")
            for i in range(self.num_hidden_layers)]
        self.has_target = None
        self.num_positions = None

    def _project(self, name):
        return keras.layers.Dense(self.hidden_size, "relu",
                                  kernel_initializer=_initializer(self.initializer_range),
                                  kernel_regularizer=self._regularizer, name=name)

    @staticmethod
    def _unpack(seq, mask, target, shapes=False):
        """The backbone passes [seq, mask] or [seq, mask, target] as one list."""
        if isinstance(mask, (list, tuple)) and all(m is None for m in mask):
            mask = None  # Keras fills `mask` with the list input's (absent) Keras masks
        if isinstance(seq, (list, tuple)) and (
                not shapes or (seq and isinstance(seq[0], (list, tuple)))):
            if len(seq) not in (2, 3) or mask is not None or target is not None:
                raise ValueError("BST takes [history (batch, len, d), mask (batch, len)] or "
                                 "[history, mask, target (batch, d)] (an input_layer with "
                                 f"output_seq_and_normal_feature), got a list of {len(seq)}.")
            return tuple(seq) + (None,) * (3 - len(seq))
        return seq, mask, target

    def build(self, seq_shape, mask_shape=None, target_shape=None):
        seq_shape, mask_shape, target_shape = self._unpack(seq_shape, mask_shape, target_shape,
                                                           shapes=True)
        if len(seq_shape) != 3 or seq_shape[-1] is None:
            raise ValueError(f"BST needs seq of shape (batch, len, d) with a known d, got "
                             f"{tuple(seq_shape)}.")
        width = int(seq_shape[-1])
        self.has_target = target_shape is not None and self.target_item_position != "ignore"
        if self.has_target:
            if len(target_shape) != 2 or target_shape[-1] != width:
                raise ValueError(f"BST needs a target of shape (batch, {width}) (the history "
                                 f"width), got {tuple(target_shape)}.")
        if width != self.hidden_size:
            self.seq_project = self._project("seq_project")
            self.seq_project.build((None, width))
            if self.has_target:
                self.target_project = self._project("target_project")
                self.target_project.build((None, width))
        slot = self.has_target or self.reserve_target_position
        self.num_positions = self.max_position_embeddings + int(slot)
        if self.use_position_embeddings:
            self.position_embeddings = self.add_weight(
                shape=(self.num_positions, self.hidden_size),
                initializer=_initializer(self.initializer_range),
                regularizer=self._regularizer, name="position_embeddings")
        tokens = (None, self.num_positions, self.hidden_size)
        self.embedding_norm.build(tokens)
        for block in self.blocks:
            block.build(tokens)

    def compute_output_shape(self, seq_shape, mask_shape=None, target_shape=None):
        seq_shape, mask_shape, target_shape = self._unpack(seq_shape, mask_shape, target_shape,
                                                           shapes=True)
        slot = ((target_shape is not None and self.target_item_position != "ignore")
                or self.reserve_target_position)
        positions = self.max_position_embeddings + int(slot)
        if self.output_all_token_embeddings:
            return (seq_shape[0], positions * self.hidden_size)
        return (seq_shape[0], self.hidden_size)

    def call(self, seq, mask=None, target=None, training=False):
        seq, mask, target = self._unpack(seq, mask, target)
        if mask is None:
            mask = ops.ones(ops.shape(seq)[:2], dtype="bool")
        mask = ops.cast(mask, "bool")
        n = self.max_position_embeddings
        # Pad (or cut) the history to n positions.
        batch = ops.shape(seq)[0]
        padding = ops.zeros((batch, n, ops.shape(seq)[2]), seq.dtype)
        seq = ops.concatenate([seq, padding], axis=1)[:, :n]                  # (batch, n, d)
        mask = ops.concatenate([mask, ops.zeros((batch, n), "bool")],
                               axis=1)[:, :n]                                 # (batch, n)
        if self.seq_project is not None:
            seq = self.seq_project(seq)                                       # (batch, n, h)
        if self.num_positions > n:
            if self.has_target:
                slot = target if self.target_project is None else self.target_project(target)
                slot = ops.expand_dims(slot, 1)                               # (batch, 1, h)
            else:
                slot = ops.zeros_like(seq[:, :1])                             # (batch, 1, h)
            real = ops.ones_like(mask[:, :1])                                 # (batch, 1)
            if self.target_item_position == "head":
                seq = ops.concatenate([slot, seq], axis=1)
                mask = ops.concatenate([real, mask], axis=1)
            else:
                seq = ops.concatenate([seq, slot], axis=1)
                mask = ops.concatenate([mask, real], axis=1)
        h = seq                                                               # (batch, p, h)
        if self.use_position_embeddings:
            h = h + ops.cast(self.position_embeddings, h.dtype)[None]
        h = self.embedding_dropout(self.embedding_norm(h), training=training)
        for block in self.blocks:
            h = block(h, mask, training=training)                             # (batch, p, h)
        if self.output_all_token_embeddings:
            h = h * ops.cast(ops.expand_dims(mask, -1), h.dtype)
            return ops.reshape(h, (-1, self.num_positions * self.hidden_size))
        return h[:, 0] if self.target_item_position == "head" else h[:, -1]  # (batch, h)

    def compute_mask(self, *args, **kwargs):
        return None

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size, "hidden_act": self.hidden_act,
                "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "max_position_embeddings": self.max_position_embeddings,
                "use_position_embeddings": self.use_position_embeddings,
                "initializer_range": self.initializer_range,
                "output_all_token_embeddings": self.output_all_token_embeddings,
                "target_item_position": self.target_item_position,
                "reserve_target_position": self.reserve_target_position,
                "l2_regularization": self.l2_regularization}
