"""UNITER: UNiversal Image-TExt Representation learning (Yen-Chun Chen, Linjie Li, Licheng Yu,
Ahmed El Kholy, Faisal Ahmed, Zhe Gan, Yu Cheng, Jingjing Liu, ECCV 2020), with EasyRec's
UniterTower settings (argument names are its fields).

Inputs: image features (batch, n_img, d_img) (raw vectors), general features
(batch, n_gen, d_gen) (one embedding per feature), text sequences
[(batch, len_i, d_i) tokens, (batch, len_i) mask]. Every source is projected to
hidden_size H (a Dense per source, when its width differs; one for all general features)
and embedded as Dropout(LayerNorm(x + type + P)) (mtrec.layers.token_embeddings):

  source            token type                       position embeddings P
  image             0                                its own table (use_position_embeddings)
  general           s = 1 if image else 0            none
  text sequence i   s + (1 if general) + i           its own table (use_position_embeddings)

Token types are added only when there are several sources or several image or text
features (one shared table of one row per type). Text sequences keep their first
max_position_embeddings positions when position embeddings are used.
  tokens = [CLS (a learned vector), image, general, text_1, ..., text_k]
  N = num_hidden_layers post-norm Transformer encoder layers (mtrec.layers.bst.
  TransformerBlock: num_attention_heads heads, feed-forward intermediate_size with
  hidden_act, truncated-normal(initializer_range) kernels), padding masked
  output: the CLS token (batch, H).
hidden_act "gelu" is Keras' exact (erf) form; EasyRec's is the tanh approximation.
"""
import keras
from keras import ops

from mtrec.layers.bst import TransformerBlock, check_encoder_args
from mtrec.layers.dnn import activation_name
from mtrec.layers.token_embeddings import TokenEmbeddings

INPUT_KEYS = ("image", "general", "text")


class Uniter(keras.layers.Layer):
    """call({"image": (batch, n_img, d_img), "general": (batch, n_gen, d_gen),
    "text": [((batch, len_i, d_i), (batch, len_i) bool), ...]}) -> (batch, hidden_size);
    each key may be absent, not all."""

    def __init__(self, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
                 hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 max_position_embeddings=512, use_position_embeddings=True,
                 initializer_range=0.02, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        check_encoder_args("Uniter", hidden_size, num_hidden_layers, num_attention_heads,
                           intermediate_size, hidden_dropout_prob,
                           attention_probs_dropout_prob, initializer_range)
        if use_position_embeddings and int(max_position_embeddings) < 1:
            raise ValueError("Uniter with use_position_embeddings needs "
                             f"max_position_embeddings >= 1, got {max_position_embeddings}.")
        if l2_regularization < 0:
            raise ValueError(f"Uniter l2_regularization must be >= 0, got "
                             f"{l2_regularization}.")
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
        self.l2_regularization = float(l2_regularization)
        self.blocks = [TransformerBlock(
            self.hidden_size, self.num_attention_heads, self.intermediate_size,
            self.hidden_act, self.hidden_dropout_prob, self.attention_probs_dropout_prob,
            self.initializer_range, self.l2_regularization, name=f"transformer_{i}")
            for i in range(self.num_hidden_layers)]

    def _projection(self, width, name):
        """A Dense to hidden_size for inputs `width` wide, or None when they already are."""
        if width == self.hidden_size:
            return None
        regularizer = (keras.regularizers.L2(self.l2_regularization)
                       if self.l2_regularization else None)
        return keras.layers.Dense(self.hidden_size, kernel_regularizer=regularizer, name=name)

    def _embeddings(self, positions, name):
        return TokenEmbeddings(positions, self.hidden_dropout_prob, self.initializer_range,
                               name=name)

    def build(self, input_shape):
        if not isinstance(input_shape, dict) or not input_shape:
            raise ValueError("Uniter takes a dict with at least one of 'image', 'general', "
                             "'text'.")
        unknown = set(input_shape) - set(INPUT_KEYS)
        if unknown:
            raise ValueError(f"Uniter got unknown inputs {sorted(unknown)}; it takes "
                             f"{', '.join(INPUT_KEYS)}.")
        positions = self.max_position_embeddings if self.use_position_embeddings else 0
        for key in ("image", "general"):
            shape = input_shape.get(key)
            if shape is not None and (len(shape) != 3 or shape[1] is None or shape[2] is None):
                raise ValueError(f"Uniter {key} must be (batch, n, d) with known sizes, got "
                                 f"{tuple(shape)}.")
        image, general = input_shape.get("image"), input_shape.get("general")
        texts = list(input_shape.get("text", []))
        self.image_projection = self.image_embeddings = None
        if image is not None:
            if positions and image[1] > positions:
                raise ValueError(f"Uniter has {image[1]} image features but "
                                 f"max_position_embeddings {positions}.")
            self.image_projection = self._projection(image[2], "image_projection")
            self.image_embeddings = self._embeddings(positions, "image_embeddings")
        self.general_projection = self.general_embeddings = None
        if general is not None:
            self.general_projection = self._projection(general[2], "general_projection")
            self.general_embeddings = self._embeddings(0, "general_embeddings")
        self.text_projections, self.text_embeddings = [], []
        for i, (seq, _) in enumerate(texts):
            if len(seq) != 3 or seq[-1] is None:
                raise ValueError(f"Uniter text[{i}] must be (batch, len, d) with a known d, "
                                 f"got {tuple(seq)}.")
            self.text_projections.append(self._projection(seq[-1], f"text_projection_{i}"))
            self.text_embeddings.append(self._embeddings(positions, f"text_embeddings_{i}"))
        sources = (image is not None) + (general is not None) + bool(texts)
        num_images = image[1] if image is not None else 0
        self.num_token_types = len(texts) + (image is not None) + (general is not None)
        self.token_types = None
        if sources > 1 or len(texts) > 1 or num_images > 1:
            self.token_types = self.add_weight(
                shape=(self.num_token_types, self.hidden_size),
                initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range),
                name="token_type_embeddings")
        self.general_type = 1 if image is not None else 0
        self.text_type = self.general_type + (general is not None)
        self.cls = self.add_weight(shape=(1, 1, self.hidden_size),
                                   initializer="glorot_uniform", name="cls_embedding")
        for block in self.blocks:
            block.build((None, None, self.hidden_size))

    def _embed(self, x, projection, embeddings, token_type, training):
        """(batch, n, d) -> (batch, n, hidden_size)."""
        if projection is not None:
            x = projection(x)
        row = None if self.token_types is None else self.token_types[token_type]
        return embeddings(x, row, training=training)

    def call(self, inputs, training=False):
        parts = []  # (tokens (batch, n, H), mask (batch, n) bool)
        if self.image_embeddings is not None:
            x = self._embed(inputs["image"], self.image_projection, self.image_embeddings, 0,
                            training)
            parts.append((x, ops.ones(ops.shape(x)[:2], "bool")))
        if self.general_embeddings is not None:
            x = self._embed(inputs["general"], self.general_projection,
                            self.general_embeddings, self.general_type, training)
            parts.append((x, ops.ones(ops.shape(x)[:2], "bool")))
        for i, (seq, mask) in enumerate(inputs.get("text", [])):
            if self.use_position_embeddings:  # the first positions of a longer sequence
                seq = seq[:, :self.max_position_embeddings]
                mask = mask[:, :self.max_position_embeddings]
            x = self._embed(seq, self.text_projections[i], self.text_embeddings[i],
                            self.text_type + i, training)
            parts.append((x, ops.cast(mask, "bool")))
        batch = ops.shape(parts[0][0])[0]
        cls = ops.tile(ops.cast(self.cls, parts[0][0].dtype), (batch, 1, 1))  # (b, 1, H)
        h = ops.concatenate([cls] + [x for x, _ in parts], axis=1)            # (b, n, H)
        mask = ops.concatenate([ops.ones((batch, 1), "bool")] + [m for _, m in parts],
                               axis=1)                                        # (b, n)
        for block in self.blocks:
            h = block(h, mask, training=training)
        return h[:, 0]                                                        # (b, H)

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
                "l2_regularization": self.l2_regularization}
