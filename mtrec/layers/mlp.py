"""EasyRec's MLP: a DNN whose last layer has its own settings, with EasyRec's defaults.

Every layer but the last: Dense(use_bias) -> [BatchNorm] -> activation -> [Dropout];
the last: Dense(use_final_bias) -> [BatchNorm if use_final_bn] -> final_activation ->
[Dropout]. Defaults: batch norm everywhere, ReLU everywhere (the last layer too), no
biases, he_uniform kernels. dropout_ratio gives one rate per layer from the bottom; layers
past the end of the list get none (unlike DNN, where one value applies to every layer).
"""
from mtrec.layers.dnn import DNN


class MLP(DNN):
    """(..., d_in) -> (..., hidden_units[-1]). From a config: MLP.from_config_proto(message)
    with an MLP message (mtrec.layers.dnn.dnn_args reads it)."""

    def __init__(self, hidden_units, activation="relu", use_bn=True, dropout_ratio=(),
                 l2_regularization=0.0, *, use_final_bn=True, final_activation="relu",
                 use_bias=False, use_final_bias=False, kernel_initializer="he_uniform",
                 bn_after_activation=False, **kwargs):
        hidden_units = [int(u) for u in hidden_units]
        if not hidden_units:
            raise ValueError("MLP needs at least one hidden unit count.")
        dropout_ratio = [float(r) for r in dropout_ratio]
        if len(dropout_ratio) > len(hidden_units):
            raise ValueError(f"MLP has {len(hidden_units)} layers but {len(dropout_ratio)} "
                             "dropout_ratio values.")
        dropout_ratio += [0.0] * (len(hidden_units) - len(dropout_ratio))
        if len(hidden_units) == 1:  # one layer: the "final" settings are the only ones
            use_bn, activation, use_bias = use_final_bn, final_activation, use_final_bias
        super().__init__(hidden_units, activation, use_bn, dropout_ratio, l2_regularization,
                         use_bias=use_bias, final_activation=final_activation,
                         use_final_bn=use_final_bn, use_final_bias=use_final_bias,
                         kernel_initializer=kernel_initializer,
                         bn_after_activation=bn_after_activation, **kwargs)
