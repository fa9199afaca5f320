"""FiBiNet (Huang et al. 2019, "FiBiNET: Combining Feature Importance and Bilinear feature
Interaction for Click-Through Rate Prediction"; FiBiNet++, Zhang et al. 2022).

Input: a list of f field embeddings v_1 .. v_f, each (batch, d_i).

Bilinear interaction, one term per field pair i < j (in itertools.combinations order):
  q_i  = v_i W + b           W: one shared (d, d) matrix ("all"), one per field i
                             ("each"), or one (d_i, d_j) per pair ("interaction")
  p_ij = <q_i, v_j>          (batch, 1) with use_plus (bilinear+)
       = q_i * v_j           (batch, d_j) otherwise
  out  = Dense(num_output_units)(concat_ij p_ij)
FiBiNet: concat(SENet(v), Bilinear(v)) (SENet of mtrec.layers.senet), then an optional MLP.
"""
import itertools

import keras
from keras import ops

from mtrec.layers.mlp import MLP
from mtrec.layers.senet import SENet

BILINEAR_TYPES = ("all", "each", "interaction")


def _regularizer(l2):
    return keras.regularizers.L2(l2) if l2 else None


@keras.saving.register_keras_serializable(package="mtrec")
class Bilinear(keras.layers.Layer):
    """List of f >= 2 tensors (batch, d_i) -> (batch, num_output_units). "all" and "each"
    need equal widths d_i."""

    def __init__(self, num_output_units, bilinear_type="interaction", use_plus=True,
                 l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_output_units) < 1:
            raise ValueError(f"Bilinear needs num_output_units >= 1, got {num_output_units}.")
        bilinear_type = bilinear_type.lower()
        if bilinear_type not in BILINEAR_TYPES:
            raise ValueError(f"Bilinear type must be one of {', '.join(BILINEAR_TYPES)}; got "
                             f"{bilinear_type!r}.")
        self.num_output_units = int(num_output_units)
        self.bilinear_type = bilinear_type
        self.use_plus = bool(use_plus)
        self.l2_regularization = float(l2_regularization)
        self.output_layer = keras.layers.Dense(
            self.num_output_units, kernel_regularizer=_regularizer(l2_regularization),
            name="output")
        self.pairs = []
        self.kernels, self.biases = [], []

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2 or \
                not isinstance(input_shape[0], (list, tuple)):
            raise ValueError(f"Bilinear takes a list of at least 2 (batch, d) field "
                             f"embeddings, got shape {input_shape}.")
        widths = []
        for i, shape in enumerate(input_shape):
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(f"Bilinear field {i} must be (batch, d) with a known d, got "
                                 f"{tuple(shape)}.")
            widths.append(int(shape[-1]))
        if self.bilinear_type != "interaction" and len(set(widths)) > 1:
            raise ValueError(f"Bilinear type {self.bilinear_type!r} needs fields of one width, "
                             f"got {sorted(set(widths))}; use type 'interaction'.")
        f = len(widths)
        self.pairs = list(itertools.combinations(range(f), 2))
        # Matrix k maps field i of pair k (per type: one shared, one per i, one per pair).
        if self.bilinear_type == "all":
            shapes = [(widths[0], widths[0])]
        elif self.bilinear_type == "each":
            shapes = [(widths[i], widths[i]) for i in range(f - 1)]
        else:
            shapes = [(widths[i], widths[j]) for i, j in self.pairs]
        reg = _regularizer(self.l2_regularization)
        self.kernels = [self.add_weight(shape=s, initializer="glorot_uniform", regularizer=reg,
                                        name=f"kernel_{k}") for k, s in enumerate(shapes)]
        self.biases = [self.add_weight(shape=(s[1],), initializer="zeros", name=f"bias_{k}")
                       for k, s in enumerate(shapes)]
        terms = len(self.pairs) if self.use_plus else sum(widths[j] for _, j in self.pairs)
        self.output_layer.build((None, terms))

    def _matrix(self, k, i):
        """Index of the matrix that maps field i in pair k."""
        return {"all": 0, "each": i}.get(self.bilinear_type, k)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.num_output_units)

    def call(self, inputs):
        inputs = list(inputs)
        projected = {}
        terms = []
        for k, (i, j) in enumerate(self.pairs):
            m = self._matrix(k, i)
            if (m, i) not in projected:                                  # (batch, d_j)
                projected[(m, i)] = ops.matmul(inputs[i], self.kernels[m]) + self.biases[m]
            q = projected[(m, i)]
            if self.use_plus:
                terms.append(ops.sum(q * inputs[j], axis=-1, keepdims=True))  # (batch, 1)
            else:
                terms.append(q * inputs[j])                                  # (batch, d_j)
        return self.output_layer(ops.concatenate(terms, axis=-1))

    def get_config(self):
        return {**super().get_config(), "num_output_units": self.num_output_units,
                "bilinear_type": self.bilinear_type, "use_plus": self.use_plus,
                "l2_regularization": self.l2_regularization}


@keras.saving.register_keras_serializable(package="mtrec")
class FiBiNet(keras.layers.Layer):
    """List of f field embeddings (batch, d_i) -> (batch, sum d_i [+ bilinear units]), or
    (batch, mlp width) with an MLP.

    senet: SENet keyword arguments; bilinear: Bilinear keyword arguments or None;
    mlp: mtrec.layers.mlp.MLP keyword arguments or None."""

    def __init__(self, senet, bilinear=None, mlp=None, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        self.senet_args, self.bilinear_args, self.mlp_args = dict(senet), bilinear, mlp
        self.l2_regularization = float(l2_regularization)
        self.senet = SENet(**senet, l2_regularization=l2_regularization, name="senet")
        self.bilinear = (Bilinear(**bilinear, l2_regularization=l2_regularization,
                                  name="bilinear") if bilinear is not None else None)
        self.mlp = (MLP(**mlp, l2_regularization=l2_regularization, name="mlp")
                    if mlp is not None else None)

    def call(self, inputs, training=False):
        inputs = list(inputs)
        parts = [self.senet(inputs)]                              # (batch, sum d_i)
        if self.bilinear is not None:
            parts.append(self.bilinear(inputs))                   # (batch, units)
        x = ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        if self.mlp is not None:
            x = self.mlp(x, training=training)
        return x

    def get_config(self):
        return {**super().get_config(), "senet": self.senet_args,
                "bilinear": self.bilinear_args, "mlp": self.mlp_args,
                "l2_regularization": self.l2_regularization}
