"""CMBF: Cross-Modal-Based Fusion (Xi Chen, Yangsiyi Lu, Yuehai Wang, Jianyi Yang, Sensors
2021), with EasyRec's CMBFTower settings (argument names are its fields).

Inputs: image features (batch, n_img, d_img) (raw vectors), general features
(batch, n_gen, d_gen) (one embedding per feature) and text sequences
[(batch, len_i, d_i) tokens, (batch, len_i) mask] (one per sequence feature).

Image tokens (width H_i):
  image_self_attention_layer_num 0: each image feature projected to H_i =
      multi_head_num * image_cross_head_size (Dense, when d_img != H_i); no encoder;
  else H_i = image_head_size * image_multi_head_num and the tokens are
      n_img > 1:                each feature, projected to H_i;
      image_feature_patch_num p > 1 (one feature): its p slices of d_img / p values,
                                each projected to H_i;
      otherwise (one feature):  v = Dense(image_feature_dim)(x) (when the widths differ),
                                token j = v_j * M_j with a learned M (image_feature_dim, H_i);
    then image_self_attention_layer_num Transformer encoder layers (post-norm, BERT style,
    mtrec.layers.bst.TransformerBlock: multi_head_num heads, feed-forward 4 * H_i, gelu).
Text tokens (width H_t = text_head_size * text_multi_head_num):
  general features projected to H_t (one shared Dense when d_gen != H_t), then every text
  sequence (cut to max_position_embeddings with use_position_embeddings) projected to H_t
  (its own Dense) and embedded as Dropout(LayerNorm(x + type_i + P_i))
  (mtrec.layers.token_embeddings; type_i with use_token_type, P_i its own position
  table), all concatenated; then text_self_attention_layer_num encoder layers with
  multi_head_num heads, padding masked.
Cross-modal fusion (both modalities, cross_modal_layer_num layers, CrossModalBlock):
  image <- block(image attends to text), text <- block(text attends to image), both from
  the previous layer's outputs; the image side has head size image_cross_head_size, the
  text side text_cross_head_size, multi_head_num heads each.
Output (batch, d): [mean over the image tokens] + [the general tokens flattened, each text
  sequence's masked mean over its real tokens (zeros for an empty one)], concatenated.
Weights: attention kernels truncated-normal(0.02), as EasyRec; projections Glorot-uniform.
gelu is Keras' exact (erf) form; EasyRec's is the tanh approximation.
"""
import math

import keras
from keras import ops

from mtrec.layers.bst import LAYER_NORM_EPSILON, TransformerBlock
from mtrec.layers.token_embeddings import TokenEmbeddings

INPUT_KEYS = ("image", "general", "text")


def _initializer(stddev=0.02):
    return keras.initializers.TruncatedNormal(stddev=stddev)


def _regularizer(l2):
    return keras.regularizers.L2(l2) if l2 else None


def _check_rate(layer: str, field: str, value) -> float:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{layer} {field} must be in [0, 1), got {value}.")
    return float(value)


def masked_mean(x, mask):
    """(batch, n, d), (batch, n) bool -> (batch, d): the mean over real positions, zeros
    for a row without any."""
    weights = ops.cast(ops.expand_dims(mask, -1), x.dtype)                   # (batch, n, 1)
    total = ops.sum(x * weights, axis=1)                                     # (batch, d)
    return total / ops.maximum(ops.sum(weights, axis=1), 1.0)


class ProjectedAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention without an output projection (EasyRec's
    attention_layer; Keras' MultiHeadAttention always adds one):

      Q = query W_q + b_q, K = context W_k + b_k, V = context W_v + b_v, split into heads
      out = concat over heads of softmax(Q K^T / sqrt(size_per_head), masked) V

    call(query (batch, f, d_q), context (batch, t, d_c), other_mask (batch, t) bool or None:
    the context's real positions)
    -> (batch, f, num_heads * size_per_head)."""

    def __init__(self, num_heads, size_per_head, dropout_rate=0.0, initializer_range=0.02,
                 l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_heads) < 1 or int(size_per_head) < 1:
            raise ValueError(f"ProjectedAttention needs num_heads >= 1 and size_per_head >= "
                             f"1, got {num_heads} and {size_per_head}.")
        self.num_heads = int(num_heads)
        self.size_per_head = int(size_per_head)
        self.dropout_rate = _check_rate("ProjectedAttention", "dropout_rate", dropout_rate)
        self.initializer_range = float(initializer_range)
        self.l2_regularization = float(l2_regularization)
        width = self.num_heads * self.size_per_head
        self.query, self.key, self.value = (
            keras.layers.Dense(width, kernel_initializer=_initializer(self.initializer_range),
                               kernel_regularizer=_regularizer(self.l2_regularization),
                               name=name) for name in ("query", "key", "value"))
        self.softmax = keras.layers.Softmax(axis=-1)
        self.dropout = keras.layers.Dropout(self.dropout_rate)

    def build(self, query_shape, context_shape=None, other_mask_shape=None):
        context_shape = query_shape if context_shape is None else context_shape
        for shape in (query_shape, context_shape):
            if len(shape) != 3 or shape[-1] is None:
                raise ValueError(f"ProjectedAttention needs (batch, n, d) inputs with a known "
                                 f"d, got {tuple(shape)}.")
        self.query.build(tuple(query_shape))
        self.key.build(tuple(context_shape))
        self.value.build(tuple(context_shape))

    def _heads(self, x):
        """(batch, n, heads * size) -> (batch, n, heads, size)."""
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], self.num_heads, self.size_per_head))

    def call(self, query, context, other_mask=None, training=False):
        q = self._heads(self.query(query))                                   # (b, f, n, h)
        k = self._heads(self.key(context))                                   # (b, t, n, h)
        v = self._heads(self.value(context))                                 # (b, t, n, h)
        scores = ops.einsum("bfnh,btnh->bnft", q, k) / math.sqrt(self.size_per_head)
        mask = None
        if other_mask is not None:
            mask = ops.cast(other_mask, "bool")[:, None, None, :]            # (b, 1, 1, t)
        if scores.shape[-1] == 1:  # one key: weight 1 (skips Keras' softmax-of-one warning)
            probs = ops.ones_like(scores)
        else:
            probs = self.softmax(scores, mask=mask)                          # (b, n, f, t)
        probs = self.dropout(probs, training=training)
        out = ops.einsum("bnft,btnh->bfnh", probs, v)                        # (b, f, n, h)
        shape = ops.shape(out)
        return ops.reshape(out, (shape[0], shape[1], self.num_heads * self.size_per_head))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "size_per_head": self.size_per_head, "dropout_rate": self.dropout_rate,
                "initializer_range": self.initializer_range,
                "l2_regularization": self.l2_regularization}


class CrossModalBlock(keras.layers.Layer):
    """One cross-modal layer of one side (EasyRec's cross_attention_block):

      c = ProjectedAttention(x attends to other, other's padding masked)
      a = LayerNorm(c + Dropout(ProjectedAttention(c attends to c, x's padding masked)))
      y = LayerNorm(a + Dropout(W_2 relu(W_1 a + b_1) + b_2))

    call(x (batch, f, d_x), other (batch, t, d_o), other_mask (batch, t) or None,
    self_mask (batch, f) or None) -> (batch, f, num_heads * size_per_head)."""

    def __init__(self, num_heads, size_per_head, intermediate_size, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, initializer_range=0.02,
                 l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if int(intermediate_size) < 1:
            raise ValueError(f"CrossModalBlock intermediate_size must be at least 1, got "
                             f"{intermediate_size}.")
        self.num_heads = int(num_heads)
        self.size_per_head = int(size_per_head)
        self.intermediate_size = int(intermediate_size)
        self.hidden_dropout_prob = _check_rate("CrossModalBlock", "hidden_dropout_prob",
                                               hidden_dropout_prob)
        self.attention_probs_dropout_prob = float(attention_probs_dropout_prob)
        self.initializer_range = float(initializer_range)
        self.l2_regularization = float(l2_regularization)
        args = dict(dropout_rate=self.attention_probs_dropout_prob,
                    initializer_range=self.initializer_range,
                    l2_regularization=self.l2_regularization)
        self.cross = ProjectedAttention(self.num_heads, self.size_per_head, name="cross",
                                        **args)
        self.self_attention = ProjectedAttention(self.num_heads, self.size_per_head,
                                                 name="self", **args)
        width = self.num_heads * self.size_per_head
        init, regularizer = _initializer(self.initializer_range), _regularizer(
            self.l2_regularization)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                              name="attention_norm")
        self.intermediate = keras.layers.Dense(self.intermediate_size, "relu",
                                               kernel_initializer=init,
                                               kernel_regularizer=regularizer,
                                               name="intermediate")
        self.output_dense = keras.layers.Dense(width, kernel_initializer=init,
                                               kernel_regularizer=regularizer, name="output")
        self.output_norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON,
                                                           name="output_norm")
        self.dropout = keras.layers.Dropout(self.hidden_dropout_prob)

    def build(self, x_shape, other_shape=None, other_mask_shape=None, self_mask_shape=None):
        width = self.num_heads * self.size_per_head
        tokens = tuple(x_shape[:-1]) + (width,)
        self.cross.build(tuple(x_shape), tuple(other_shape or x_shape))
        self.self_attention.build(tokens, tokens)
        self.attention_norm.build(tokens)
        self.intermediate.build(tokens)
        self.output_dense.build(tuple(x_shape[:-1]) + (self.intermediate_size,))
        self.output_norm.build(tokens)

    def call(self, x, other, other_mask=None, self_mask=None, training=False):
        c = self.cross(x, other, other_mask=other_mask, training=training)   # (b, f, w)
        s = self.self_attention(c, c, other_mask=self_mask, training=training)  # (b, f, w)
        a = self.attention_norm(c + self.dropout(s, training=training))      # (b, f, w)
        f = self.output_dense(self.intermediate(a))                          # (b, f, w)
        return self.output_norm(a + self.dropout(f, training=training))

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "size_per_head": self.size_per_head,
                "intermediate_size": self.intermediate_size,
                "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "initializer_range": self.initializer_range,
                "l2_regularization": self.l2_regularization}


class CMBF(keras.layers.Layer):
    """call({"image": (batch, n_img, d_img), "general": (batch, n_gen, d_gen),
    "text": [((batch, len_i, d_i), (batch, len_i) bool), ...]}) -> (batch, d); each key
    may be absent, not all (see the module docstring for the maths and d)."""

    def __init__(self, multi_head_num=1, image_multi_head_num=1, text_multi_head_num=1,
                 text_head_size=0, image_head_size=64, image_feature_patch_num=1,
                 image_feature_dim=0, image_self_attention_layer_num=0,
                 text_self_attention_layer_num=1, cross_modal_layer_num=1,
                 image_cross_head_size=0, text_cross_head_size=0, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, use_token_type=False,
                 use_position_embeddings=True, max_position_embeddings=0,
                 text_seq_emb_dropout_prob=0.1, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        counts = dict(multi_head_num=multi_head_num, image_multi_head_num=image_multi_head_num,
                      text_multi_head_num=text_multi_head_num, text_head_size=text_head_size,
                      image_head_size=image_head_size,
                      image_feature_patch_num=image_feature_patch_num,
                      image_feature_dim=image_feature_dim,
                      image_self_attention_layer_num=image_self_attention_layer_num,
                      text_self_attention_layer_num=text_self_attention_layer_num,
                      cross_modal_layer_num=cross_modal_layer_num,
                      image_cross_head_size=image_cross_head_size,
                      text_cross_head_size=text_cross_head_size,
                      max_position_embeddings=max_position_embeddings)
        for field, value in counts.items():
            if int(value) < 0:
                raise ValueError(f"CMBF {field} must be >= 0, got {value}.")
            setattr(self, field, int(value))
        if self.multi_head_num < 1:
            raise ValueError(f"CMBF multi_head_num must be at least 1, got {multi_head_num}.")
        for field, value in (("hidden_dropout_prob", hidden_dropout_prob),
                             ("attention_probs_dropout_prob", attention_probs_dropout_prob),
                             ("text_seq_emb_dropout_prob", text_seq_emb_dropout_prob)):
            setattr(self, field, _check_rate("CMBF", field, value))
        if l2_regularization < 0:
            raise ValueError(f"CMBF l2_regularization must be >= 0, got {l2_regularization}.")
        self.use_token_type = bool(use_token_type)
        self.use_position_embeddings = bool(use_position_embeddings)
        self.l2_regularization = float(l2_regularization)

    # -- build -----------------------------------------------------------------
    def _dense(self, units, name):
        return keras.layers.Dense(units, kernel_regularizer=_regularizer(self.l2_regularization),
                                  name=name)

    def _encoder(self, width, layers, prefix):
        if layers and width % self.multi_head_num:
            raise ValueError(f"CMBF: the {prefix} encoder's width {width} must be a multiple "
                             f"of multi_head_num {self.multi_head_num}.")
        blocks = [TransformerBlock(width, self.multi_head_num, 4 * width, "gelu",
                                   self.hidden_dropout_prob, self.attention_probs_dropout_prob,
                                   l2_regularization=self.l2_regularization,
                                   name=f"{prefix}_self_attention_{i}")
                  for i in range(layers)]
        for block in blocks:
            block.build((None, None, width))
        return blocks

    def build(self, input_shape):
        if not isinstance(input_shape, dict) or not input_shape:
            raise ValueError("CMBF takes a dict with at least one of 'image', 'general', "
                             "'text'.")
        unknown = set(input_shape) - set(INPUT_KEYS)
        if unknown:
            raise ValueError(f"CMBF got unknown inputs {sorted(unknown)}; it takes "
                             f"{', '.join(INPUT_KEYS)}.")
        self.has_image = "image" in input_shape
        self.has_text = "general" in input_shape or "text" in input_shape
        self.image_width = self.text_width = 0
        if self.has_image:
            self._build_image(tuple(input_shape["image"]))
        if self.has_text:
            self._build_text(input_shape.get("general"), input_shape.get("text", []))
        # Layer i of the image side and of the text side.
        self.image_cross_blocks, self.text_cross_blocks = [], []
        if self.has_image and self.has_text and self.cross_modal_layer_num:
            for field in ("image_cross_head_size", "text_cross_head_size"):
                if getattr(self, field) < 1:
                    raise ValueError(f"CMBF with image and text needs {field} >= 1 for its "
                                     "cross-modal layers.")
            heads = self.multi_head_num
            sides = (("image", self.image_cross_head_size), ("text", self.text_cross_head_size))
            for i in range(self.cross_modal_layer_num):
                for side, size in sides:
                    getattr(self, f"{side}_cross_blocks").append(CrossModalBlock(
                        heads, size, 4 * heads * size, self.hidden_dropout_prob,
                        self.attention_probs_dropout_prob,
                        l2_regularization=self.l2_regularization, name=f"{side}_cross_{i}"))
            self.image_width = heads * self.image_cross_head_size
            self.text_width = heads * self.text_cross_head_size

    def _build_image(self, shape):
        if len(shape) != 3 or shape[1] is None or shape[2] is None:
            raise ValueError(f"CMBF image must be (batch, n_img, d_img) with known sizes, got "
                             f"{shape}.")
        count, width = int(shape[1]), int(shape[2])
        layers = self.image_self_attention_layer_num
        self.image_projection = self.image_map = None
        if layers == 0:
            hidden = self.multi_head_num * self.image_cross_head_size
            if hidden < 1:
                raise ValueError("CMBF without image self-attention layers projects the image "
                                 "to multi_head_num * image_cross_head_size values; set "
                                 "image_cross_head_size >= 1.")
            self.image_mode, token_width = "features", width
        else:
            hidden = self.image_head_size * self.image_multi_head_num
            if hidden < 1:
                raise ValueError("CMBF image_head_size and image_multi_head_num must be >= 1.")
            if count > 1:
                self.image_mode, token_width = "features", width
            elif self.image_feature_patch_num > 1:
                if width % self.image_feature_patch_num:
                    raise ValueError(f"CMBF image_feature_patch_num "
                                     f"{self.image_feature_patch_num} must divide the image "
                                     f"feature's width {width}.")
                self.image_mode = "patches"
                token_width = width // self.image_feature_patch_num
            else:
                if self.image_feature_dim < 1:
                    raise ValueError("CMBF with one image feature, image_feature_patch_num 1 "
                                     "and image self-attention layers needs image_feature_dim "
                                     ">= 1 (one token per projected value).")
                self.image_mode, token_width = "values", 1
                if width != self.image_feature_dim:
                    self.image_projection = self._dense(self.image_feature_dim,
                                                        "image_projection")
                self.image_map = self.add_weight(
                    shape=(1, self.image_feature_dim, hidden),
                    initializer="glorot_uniform", name="image_map_matrix")
        if self.image_mode != "values" and token_width != hidden:
            self.image_projection = self._dense(hidden, "image_projection")
        self.image_blocks = self._encoder(hidden, layers, "image")
        self.image_width = hidden

    def _build_text(self, general_shape, text_shapes):
        hidden = self.text_head_size * self.text_multi_head_num
        if hidden < 1:
            raise ValueError("CMBF with general or text features needs text_head_size >= 1 "
                             "and text_multi_head_num >= 1.")
        self.general_projection = None
        if general_shape is not None:
            if len(general_shape) != 3 or general_shape[1] is None or general_shape[2] is None:
                raise ValueError(f"CMBF general must be (batch, n_gen, d_gen) with known "
                                 f"sizes, got {tuple(general_shape)}.")
            self.general_count = int(general_shape[1])
            if general_shape[2] != hidden:
                self.general_projection = self._dense(hidden, "general_projection")
        else:
            self.general_count = 0
        if self.use_position_embeddings and text_shapes and self.max_position_embeddings < 1:
            raise ValueError("CMBF with use_position_embeddings needs max_position_embeddings "
                             ">= 1 for its text sequences.")
        self.text_projections, self.text_embeddings = [], []
        for i, (seq_shape, _) in enumerate(text_shapes):
            if len(seq_shape) != 3 or seq_shape[-1] is None:
                raise ValueError(f"CMBF text[{i}] must be (batch, len, d) with a known d, got "
                                 f"{tuple(seq_shape)}.")
            self.text_projections.append(self._dense(hidden, f"text_projection_{i}")
                                         if seq_shape[-1] != hidden else None)
            self.text_embeddings.append(TokenEmbeddings(
                self.max_position_embeddings if self.use_position_embeddings else 0,
                self.text_seq_emb_dropout_prob, name=f"text_embeddings_{i}"))
        self.token_types = None
        if self.use_token_type and text_shapes:
            self.token_types = self.add_weight(shape=(len(text_shapes), hidden),
                                               initializer=_initializer(),
                                               name="token_type_embeddings")
        self.text_blocks = self._encoder(hidden, self.text_self_attention_layer_num, "text")
        self.text_width = hidden

    # -- call ------------------------------------------------------------------
    def _image_tokens(self, x, training):
        """(batch, n_img, d_img) -> (batch, n, image width)."""
        if self.image_mode == "patches":
            x = ops.reshape(x, (-1, self.image_feature_patch_num,
                                x.shape[-1] // self.image_feature_patch_num))  # (b, p, d/p)
        elif self.image_mode == "values":
            x = x[:, 0]                                                        # (b, d_img)
        if self.image_projection is not None:
            x = self.image_projection(x)
        if self.image_mode == "values":
            x = ops.expand_dims(x, -1) * ops.cast(self.image_map, x.dtype)     # (b, F, H)
        for block in self.image_blocks:
            x = block(x, training=training)
        return x

    def _text_tokens(self, general, texts, training):
        """-> ((batch, n, text width) tokens, (batch, n) bool mask, [len_i])."""
        tokens, masks, lengths = [], [], []
        if general is not None:
            if self.general_projection is not None:
                general = self.general_projection(general)                    # (b, n_gen, H)
            tokens.append(general)
            masks.append(ops.ones(ops.shape(general)[:2], "bool"))
        for i, (seq, mask) in enumerate(texts):
            if self.use_position_embeddings:  # the first positions of a longer sequence
                seq = seq[:, :self.max_position_embeddings]
                mask = mask[:, :self.max_position_embeddings]
            if self.text_projections[i] is not None:
                seq = self.text_projections[i](seq)                           # (b, len_i, H)
            token_type = None if self.token_types is None else self.token_types[i]
            tokens.append(self.text_embeddings[i](seq, token_type, training=training))
            masks.append(ops.cast(mask, "bool"))
            lengths.append(ops.shape(seq)[1])
        x = ops.concatenate(tokens, axis=1)                                   # (b, n, H)
        mask = ops.concatenate(masks, axis=1)                                 # (b, n)
        for block in self.text_blocks:
            x = block(x, mask, training=training)
        return x, mask, lengths

    def _merge_text(self, x, mask, lengths):
        """(batch, n, w) -> (batch, (n_gen + number of sequences) * w)."""
        parts = []
        start = self.general_count
        if start:
            parts.append(ops.reshape(x[:, :start], (-1, start * x.shape[-1])))
        for length in lengths:
            parts.append(masked_mean(x[:, start:start + length],
                                     mask[:, start:start + length]))          # (b, w)
            start = start + length
        return ops.concatenate(parts, axis=-1)

    def call(self, inputs, training=False):
        image = text = None
        if self.has_image:
            image = self._image_tokens(inputs["image"], training)             # (b, n_i, w_i)
        if self.has_text:
            text, mask, lengths = self._text_tokens(inputs.get("general"),
                                                    inputs.get("text", []), training)
        if image is not None and text is not None:
            for image_block, text_block in zip(self.image_cross_blocks,
                                               self.text_cross_blocks):
                image, text = (image_block(image, text, other_mask=mask, training=training),
                               text_block(text, image, self_mask=mask, training=training))
        out = []
        if image is not None:
            out.append(ops.mean(image, axis=1))                               # (b, w_i)
        if text is not None:
            out.append(self._merge_text(text, mask, lengths))
        return ops.concatenate(out, axis=-1)

    def get_config(self):
        config = {field: getattr(self, field) for field in (
            "multi_head_num", "image_multi_head_num", "text_multi_head_num", "text_head_size",
            "image_head_size", "image_feature_patch_num", "image_feature_dim",
            "image_self_attention_layer_num", "text_self_attention_layer_num",
            "cross_modal_layer_num", "image_cross_head_size", "text_cross_head_size",
            "hidden_dropout_prob", "attention_probs_dropout_prob", "use_token_type",
            "use_position_embeddings", "max_position_embeddings",
            "text_seq_emb_dropout_prob", "l2_regularization")}
        return {**super().get_config(), **config}
