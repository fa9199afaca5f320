"""TextCNN (Kim 2014, "Convolutional Neural Networks for Sentence Classification") over a
padded sequence of embeddings.

seq (batch, len, d) with mask (batch, len): masked positions are zeroed, the sequence is
padded with zeros or cut to pad_sequence_length positions, then per window width w_k
  c_k = max over positions of act(Conv1D(num_filters_k, w_k, valid)(seq))   (batch, n_k)
and out = concat_k c_k (batch, sum n_k), then an optional MLP.
"""
import keras
from keras import ops

from mtrec.layers.dnn import activation_name, dnn_args
from mtrec.layers.mlp import MLP


@keras.saving.register_keras_serializable(package="mtrec")
class TextCNN(keras.layers.Layer):
    """[seq (batch, len, d), mask (batch, len), ...], or seq with an optional mask
    argument -> (batch, sum(num_filters)) or (batch, mlp width). mlp: mtrec.layers.mlp.MLP
    keyword arguments or None."""

    def __init__(self, filter_sizes, num_filters, pad_sequence_length, activation="relu",
                 mlp=None, l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        filter_sizes = [int(s) for s in filter_sizes]
        num_filters = [int(n) for n in num_filters]
        if not filter_sizes or len(filter_sizes) != len(num_filters):
            raise ValueError(f"TextCNN needs filter_sizes and num_filters of one (non-zero) "
                             f"length, got {len(filter_sizes)} and {len(num_filters)}.")
        if min(filter_sizes + num_filters) < 1:
            raise ValueError("TextCNN filter_sizes and num_filters must be positive.")
        if int(pad_sequence_length) < max(filter_sizes):
            raise ValueError(f"TextCNN pad_sequence_length {pad_sequence_length} must be at "
                             f"least the widest filter, {max(filter_sizes)}.")
        self.filter_sizes, self.num_filters = filter_sizes, num_filters
        self.pad_sequence_length = int(pad_sequence_length)
        self.activation = activation
        self.mlp_args = mlp
        self.l2_regularization = float(l2_regularization)
        reg = keras.regularizers.L2(l2_regularization) if l2_regularization else None
        self.convs = [keras.layers.Conv1D(n, s, activation=activation_name(activation),
                                          kernel_regularizer=reg, name=f"conv_{s}_{k}")
                      for k, (s, n) in enumerate(zip(filter_sizes, num_filters))]
        self.mlp = (MLP(**mlp, l2_regularization=l2_regularization, name="mlp")
                    if mlp is not None else None)

    @classmethod
    def from_combiner(cls, message, **kwargs):
        """The TextCNN of a TextCNNCombiner message (a SequenceFeature's text_cnn
        sequence_combiner, or a backbone TextCNN's params); call(seq, mask)."""
        mlp = dnn_args(message.mlp) if message.HasField("mlp") else None
        return cls(list(message.filter_sizes), list(message.num_filters),
                   message.pad_sequence_length, message.activation, mlp, **kwargs)

    def call(self, inputs, mask=None, training=False):
        if isinstance(inputs, (list, tuple)):
            inputs, mask = inputs[0], inputs[1]
        seq = inputs
        if mask is not None:
            seq = seq * ops.cast(mask, seq.dtype)[:, :, None]     # (batch, len, d)
        length = self.pad_sequence_length
        seq = seq[:, :length]
        missing = length - ops.shape(seq)[1]
        seq = ops.pad(seq, [[0, 0], [0, missing], [0, 0]])         # (batch, length, d)
        seq = ops.reshape(seq, (-1, length, seq.shape[-1]))
        pooled = [ops.max(conv(seq), axis=1) for conv in self.convs]  # (batch, n_k) each
        x = ops.concatenate(pooled, axis=-1) if len(pooled) > 1 else pooled[0]
        if self.mlp is not None:
            x = self.mlp(x, training=training)
        return x

    def get_config(self):
        return {**super().get_config(), "filter_sizes": self.filter_sizes,
                "num_filters": self.num_filters,
                "pad_sequence_length": self.pad_sequence_length,
                "activation": self.activation, "mlp": self.mlp_args,
                "l2_regularization": self.l2_regularization}
