"""The activation names a config may use, without TensorFlow: Keras 3's activation
functions and the EasyRec spellings mtrec maps onto them. Config validation checks names
against this list; mtrec.layers.dnn.activation_name maps them when layers are built (a test
keeps KERAS_ACTIVATIONS equal to what keras.activations.get accepts)."""

# The names keras.activations.get accepts (Keras 3).
KERAS_ACTIVATIONS = frozenset((
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish",
    "relu", "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus",
    "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh",
    "tanh_shrink", "threshold"))

# EasyRec configs name activations as TF1 functions.
ACTIVATION_ALIASES = {"tf.nn.relu": "relu", "tf.nn.sigmoid": "sigmoid", "tf.nn.tanh": "tanh",
                      "tf.nn.elu": "elu", "tf.nn.selu": "selu", "tf.nn.swish": "swish",
                      "tf.nn.leaky_relu": "leaky_relu", "tf.nn.gelu": "gelu", "dice": "relu"}


def keras_activation(name: str) -> str | None:
    """A config's activation name -> its Keras name, or None if mtrec does not know it."""
    name = ACTIVATION_ALIASES.get(name, name)
    return name if name in KERAS_ACTIVATIONS else None


def unknown_activation(name: str) -> str:
    """The message for an activation name mtrec does not know."""
    return (f"unknown activation {name!r}; use a Keras activation name such as 'relu', "
            "'gelu', 'swish' or 'tanh'.")
