"""Token embeddings of the multimodal encoders (CMBF, UNITER), BERT's embedding step:

  h = Dropout(LayerNorm(x + t + P[:n]))

x: (batch, n, hidden) tokens; t: an optional (hidden,) vector added to every token (the
token-type embedding of the source, a row of a table its caller owns); P: learned position
embeddings (max_positions, hidden), or none with max_positions 0. A sequence longer than
max_positions must be cut by the caller (a static n that is too long is a ValueError).
"""
import keras
from keras import ops

LAYER_NORM_EPSILON = 1e-12  # BERT's, as EasyRec's encoders and mtrec.layers.bst


class TokenEmbeddings(keras.layers.Layer):
    """call(x (batch, n, hidden), token_type (hidden,) or None) -> (batch, n, hidden)."""

    def __init__(self, max_positions=0, dropout_rate=0.0, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        if int(max_positions) < 0:
            raise ValueError(f"TokenEmbeddings max_positions must be >= 0, got "
                             f"{max_positions}.")
        if not 0.0 <= float(dropout_rate) < 1.0:
            raise ValueError(f"TokenEmbeddings dropout_rate must be in [0, 1), got "
                             f"{dropout_rate}.")
        if float(initializer_range) <= 0:
            raise ValueError(f"TokenEmbeddings initializer_range must be > 0, got "
                             f"{initializer_range}.")
        self.max_positions = int(max_positions)
        self.dropout_rate = float(dropout_rate)
        self.initializer_range = float(initializer_range)
        self.norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm")
        self.dropout = keras.layers.Dropout(self.dropout_rate)

    def build(self, x_shape, token_type_shape=None):
        if len(x_shape) != 3 or x_shape[-1] is None:
            raise ValueError(f"TokenEmbeddings needs tokens of shape (batch, n, hidden) with a "
                             f"known hidden, got {tuple(x_shape)}.")
        if self.max_positions and x_shape[1] is not None and x_shape[1] > self.max_positions:
            raise ValueError(f"TokenEmbeddings got {x_shape[1]} tokens but has "
                             f"{self.max_positions} position embeddings.")
        hidden = int(x_shape[-1])
        if self.max_positions:
            self.positions = self.add_weight(
                shape=(self.max_positions, hidden),
                initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range),
                name="position_embeddings")
        self.norm.build(tuple(x_shape))

    def call(self, x, token_type=None, training=False):
        if token_type is not None:
            x = x + ops.cast(token_type, x.dtype)                             # (batch, n, h)
        if self.max_positions:
            n = ops.shape(x)[1]
            x = x + ops.cast(self.positions[:n], x.dtype)[None]               # (batch, n, h)
        return self.dropout(self.norm(x), training=training)

    def get_config(self):
        return {**super().get_config(), "max_positions": self.max_positions,
                "dropout_rate": self.dropout_rate,
                "initializer_range": self.initializer_range}
