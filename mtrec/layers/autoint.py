"""AutoInt's interacting layer (Song et al., CIKM 2019): multi-head self-attention over
field embeddings with a ReLU residual.

  per head h:  Q_h = x W_q^h, K_h = x W_k^h, V_h = x W_v^h          (batch, n, head_size)
               A_h = softmax(Q_h K_h^T / sqrt(head_size))            (batch, n, n)
  out = relu(concat_h(A_h V_h) + x W_res)                            (batch, n, heads * size)

Keras' MultiHeadAttention adds an output projection AutoInt does not have, so the layer
writes the attention itself. (EasyRec multiplies the scores by sqrt(head_size) where it
means to divide; this layer divides.)
"""
import keras
from keras import ops


class InteractingLayer(keras.layers.Layer):
    """(batch, n, d) -> (batch, n, num_heads * head_size)."""

    def __init__(self, num_heads, head_size, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if num_heads < 1 or head_size < 1:
            raise ValueError(f"InteractingLayer needs num_heads >= 1 and head_size >= 1, got "
                             f"{num_heads} and {head_size}.")
        self.num_heads = int(num_heads)
        self.head_size = int(head_size)
        self.l2_regularization = l2_regularization
        width = self.num_heads * self.head_size
        regularizer = keras.regularizers.L2(l2_regularization) if l2_regularization else None
        self.query, self.key, self.value, self.residual = [
            keras.layers.Dense(width, use_bias=False, kernel_regularizer=regularizer, name=n)
            for n in ("query", "key", "value", "residual")]

    def build(self, input_shape):
        for dense in (self.query, self.key, self.value, self.residual):
            dense.build(input_shape)

    def _heads(self, x):
        """(batch, n, heads * size) -> (batch, heads, n, size)."""
        x = ops.reshape(x, (-1, ops.shape(x)[1], self.num_heads, self.head_size))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, x):
        q, k, v = (self._heads(layer(x)) for layer in (self.query, self.key, self.value))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # (batch, heads, n, n)
        weights = ops.softmax(scores / self.head_size ** 0.5, axis=-1)
        heads = ops.matmul(weights, v)  # (batch, heads, n, size)
        merged = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)),
                             (-1, ops.shape(x)[1], self.num_heads * self.head_size))
        return ops.relu(merged + self.residual(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_heads * self.head_size,)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "head_size": self.head_size, "l2_regularization": self.l2_regularization}
