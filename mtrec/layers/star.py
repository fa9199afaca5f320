"""STAR: Star Topology Adaptive Recommender (Sheng et al., CIKM 2021).

Partitioned normalisation: every domain p normalises its rows with its own statistics and
scales them with shared and domain parameters,
    PN(x) = (gamma * gamma_p) * (x - mu_p) / sqrt(var_p + eps) + (beta + beta_p).
Star topology fully connected layer: a shared layer (W, b) and one layer per domain
(W_p, b_p) combined element-wise,
    y = act(x @ (W * W_p) + b + b_p),
so W carries what all domains share and W_p (starting at ones) what domain p changes.
"""
import keras
import tensorflow as tf
from keras import ops

from mtrec.layers.dnn import activation_name


def _check_num_domains(num_domains) -> int:
    if int(num_domains) < 1:
        raise ValueError(f"num_domains must be at least 1, got {num_domains}.")
    return int(num_domains)


def _feature_dim(input_shape, layer: str) -> int:
    dim = tuple(input_shape)[-1]
    if dim is None:
        raise ValueError(f"{layer} needs a known last input dimension, got shape "
                         f"{tuple(input_shape)}.")
    return int(dim)


class PartitionedNormalization(keras.layers.Layer):
    """call(x (batch, d), domain (batch,) int in [0, num_domains), training) -> (batch, d).

    Training normalises each row with the batch statistics of its own domain and moves the
    moving statistics of the domains present in the batch only. Like
    DebiasedBatchNormalization, the moving statistics start at zero and are divided by
    1 - momentum^updates at inference, so a model evaluated early serves with statistics
    close to those it trained with; a domain never seen in training uses mean 0 /
    variance 1.
    """

    def __init__(self, num_domains, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}.")
        self.num_domains = _check_num_domains(num_domains)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        d = _feature_dim(input_shape, "PartitionedNormalization")
        n = self.num_domains
        self.gamma = self.add_weight(shape=(d,), initializer="ones", name="gamma",
                                     autocast=False)
        self.beta = self.add_weight(shape=(d,), initializer="zeros", name="beta",
                                    autocast=False)
        self.domain_gamma = self.add_weight(shape=(n, d), initializer="ones",
                                            name="domain_gamma", autocast=False)
        self.domain_beta = self.add_weight(shape=(n, d), initializer="zeros",
                                           name="domain_beta", autocast=False)
        self.moving_mean = self.add_weight(shape=(n, d), initializer="zeros", trainable=False,
                                           name="moving_mean", autocast=False)
        self.moving_variance = self.add_weight(shape=(n, d), initializer="zeros",
                                               trainable=False, name="moving_variance",
                                               autocast=False)
        # How many batches updated each domain's moving statistics (for the debiasing).
        self.num_updates = self.add_weight(shape=(n,), initializer="zeros", trainable=False,
                                           name="num_updates", autocast=False)

    def compute_output_shape(self, x_shape, domain_shape=None):
        return tuple(x_shape)

    def batch_moments(self, x, domain):
        """Per-domain batch statistics: mean, variance (num_domains, d) and a (num_domains,)
        bool of the domains that have rows in the batch (absent domains get zeros)."""
        n = self.num_domains
        counts = tf.math.unsorted_segment_sum(tf.ones_like(domain, tf.float32), domain, n)
        mean = tf.math.unsorted_segment_mean(x, domain, n)  # (num_domains, d)
        # Two passes (deviation from the domain's own mean) rather than E[x^2] - E[x]^2,
        # which loses precision when the mean is large against the spread.
        deviation = x - tf.gather(mean, domain)  # (batch, d)
        variance = tf.math.unsorted_segment_mean(tf.square(deviation), domain, n)
        return mean, variance, counts > 0

    def moving_moments(self):
        """Debiased moving mean and variance (num_domains, d)."""
        seen = (self.num_updates > 0)[:, None]  # (num_domains, 1)
        correction = 1.0 - tf.pow(self.momentum, self.num_updates)[:, None]
        correction = tf.where(seen, correction, 1.0)
        mean = tf.where(seen, self.moving_mean / correction, 0.0)
        variance = tf.where(seen, self.moving_variance / correction, 1.0)
        return mean, variance

    def call(self, x, domain, training=False):
        x = ops.cast(x, "float32")
        domain = tf.cast(tf.reshape(domain, [-1]), tf.int32)  # (batch,)
        if training and self.trainable:
            mean, variance, present = self.batch_moments(x, domain)
            present = present[:, None]  # (num_domains, 1)
            m = self.momentum
            # Domains absent from the batch keep their statistics (and their count).
            self.moving_mean.assign(tf.where(
                present, self.moving_mean * m + mean * (1.0 - m), self.moving_mean))
            self.moving_variance.assign(tf.where(
                present, self.moving_variance * m + variance * (1.0 - m), self.moving_variance))
            self.num_updates.assign_add(tf.cast(present[:, 0], tf.float32))
        else:
            mean, variance = self.moving_moments()
        # (batch, d): each row's own domain statistics and parameters.
        x_hat = (x - tf.gather(mean, domain)) * tf.math.rsqrt(
            tf.gather(variance, domain) + self.epsilon)
        scale = self.gamma * tf.gather(self.domain_gamma, domain)
        offset = self.beta + tf.gather(self.domain_beta, domain)
        return ops.cast(scale * x_hat + offset, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "num_domains": self.num_domains,
                "momentum": self.momentum, "epsilon": self.epsilon}


class StarTopologyDense(keras.layers.Layer):
    """call(x (batch, d_in), domain (batch,) int in [0, num_domains)) -> (batch, units).

    y = act(x @ (W * W_p[domain]) + b + b_p[domain]). Rows are grouped by domain so each
    domain does one matmul with its combined kernel, instead of building a
    (batch, d_in, units) tensor of per-row kernels; the results go back in row order.
    """

    def __init__(self, units, num_domains, activation="relu", l2_regularization=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"units must be at least 1, got {units}.")
        self.units = int(units)
        self.num_domains = _check_num_domains(num_domains)
        self.activation = activation_name(activation)
        self.l2_regularization = l2_regularization

    def build(self, input_shape):
        d_in = _feature_dim(input_shape, "StarTopologyDense")
        n = self.num_domains
        # Only the shared kernel is penalised: the domain kernels multiply it and start at
        # ones, so pulling them towards zero would switch the shared kernel off.
        regularizer = (keras.regularizers.L2(self.l2_regularization)
                       if self.l2_regularization else None)
        self.kernel = self.add_weight(shape=(d_in, self.units), initializer="glorot_uniform",
                                      regularizer=regularizer, name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
        self.domain_kernel = self.add_weight(shape=(n, d_in, self.units), initializer="ones",
                                             name="domain_kernel")
        self.domain_bias = self.add_weight(shape=(n, self.units), initializer="zeros",
                                           name="domain_bias")

    def compute_output_shape(self, x_shape, domain_shape=None):
        return tuple(x_shape)[:-1] + (self.units,)

    def call(self, x, domain):
        act = keras.activations.get(self.activation)
        domain = tf.cast(tf.reshape(domain, [-1]), tf.int32)  # (batch,)
        n = self.num_domains
        rows = tf.range(tf.shape(x)[0])
        parts = tf.dynamic_partition(x, domain, n)  # num_domains x (rows_p, d_in)
        positions = tf.dynamic_partition(rows, domain, n)  # num_domains x (rows_p,)
        outputs = [tf.matmul(part, self.kernel * self.domain_kernel[p])
                   + (self.bias + self.domain_bias[p])
                   for p, part in enumerate(parts)]  # num_domains x (rows_p, units)
        y = tf.dynamic_stitch(positions, outputs)  # (batch, units), original row order
        return act(tf.ensure_shape(y, [x.shape[0], self.units]))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "num_domains": self.num_domains,
                "activation": self.activation, "l2_regularization": self.l2_regularization}


class STAR(keras.layers.Layer):
    """call(x (batch, d_in), domain (batch,), training) -> (batch, hidden_units[-1]).

    Optional partitioned normalisation of the input, then one star topology layer per
    width in hidden_units.
    """

    def __init__(self, hidden_units, num_domains, activation="relu", partitioned_norm=True,
                 l2_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        hidden_units = [int(u) for u in hidden_units]
        if not hidden_units:
            raise ValueError("STAR needs hidden_units (the widths of its layers).")
        if any(u < 1 for u in hidden_units):
            raise ValueError(f"STAR hidden_units must be positive, got {hidden_units}.")
        self.hidden_units = hidden_units
        self.num_domains = _check_num_domains(num_domains)
        self.activation = activation_name(activation)
        self.partitioned_norm = bool(partitioned_norm)
        self.l2_regularization = l2_regularization
        # Explicit names keep variable paths (checkpoint keys) stable across processes.
        self.norm = (PartitionedNormalization(self.num_domains, name="partitioned_norm")
                     if self.partitioned_norm else None)
        self.star_layers = [StarTopologyDense(u, self.num_domains, self.activation,
                                              l2_regularization, name=f"star_{i}")
                            for i, u in enumerate(hidden_units)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.norm is not None:
            self.norm.build(shape)
        for layer in self.star_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def compute_output_shape(self, x_shape, domain_shape=None):
        return tuple(x_shape)[:-1] + (self.hidden_units[-1],)

    def call(self, x, domain, training=False):
        if self.norm is not None:
            x = self.norm(x, domain, training=training)
        for layer in self.star_layers:
            x = layer(x, domain)
        return x

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "num_domains": self.num_domains, "activation": self.activation,
                "partitioned_norm": self.partitioned_norm,
                "l2_regularization": self.l2_regularization}
