"""How an embedding table's rows start: a feature's `initializer` (EasyRec's Initializer).

One description, a hashable tuple, serves a table's first values (Keras' seeded
initializers) and the rows a dynamic table gives new ids later (its tf.random.Generator),
so both draw from the same distribution.
"""
import math

import keras
import tensorflow as tf

# mtrec's default: uniform in [-INIT_RANGE, INIT_RANGE].
INIT_RANGE = 0.05
# Keras' GlorotNormal divides its stddev by the stddev of a unit normal truncated at two.
_TRUNCATED_STDDEV = 0.87962566103423978


def table_initializer(config) -> tuple:
    """A FeatureConfig's `initializer` -> () for the default, else (oneof name, *numbers):
    (name, mean, stddev) for the normals, (name, *consts) for constants, (name,) for glorot."""
    which = config.initializer.WhichOneof("initializer_oneof") \
        if config.HasField("initializer") else None
    if which is None:
        return ()
    message = getattr(config.initializer, which)
    if which in ("truncated_normal_initializer", "random_normal_initializer"):
        return (which, message.mean, message.stddev)
    if which == "constant_initializer":
        return (which, *message.consts)
    return (which,)


def initial_rows(spec, shape, generator=None) -> tf.Tensor:
    """float32 values of `shape` (rows, dim): rows of the table of TableSpec `spec`, as its
    `initializer` says; a WIDE table's (linear weights) are zeros.

    Glorot's fans are the whole table's (spec.num_rows, spec.dim), so a part of a table
    split over parameter servers draws with the whole table's scale. generator: a
    tf.random.Generator to draw from (a dynamic table's new rows; shape may then be a
    tensor), else Keras' initializers, which follow keras.utils.set_random_seed
    (train_config.seed)."""
    if spec.wide:
        return tf.zeros(shape)
    initializer = spec.initializer
    kind = initializer[0] if initializer else "uniform"
    if kind == "constant_initializer":
        consts = initializer[1:]
        value = tf.constant(consts[0] if len(consts) == 1 else consts, tf.float32)
        return tf.broadcast_to(value, shape)  # one value, or one per column
    if kind == "glorot_normal_initializer":
        # Keras' GlorotNormal of the table's matrix: fan_avg variance scaling.
        mean, stddev = 0.0, math.sqrt(2.0 / (spec.num_rows + spec.dim)) / _TRUNCATED_STDDEV
        kind = "truncated_normal_initializer"
    elif kind != "uniform":
        mean, stddev = initializer[1:]
    if generator is not None:
        if kind == "uniform":
            return generator.uniform(shape, -INIT_RANGE, INIT_RANGE, tf.float32)
        if kind == "random_normal_initializer":
            return generator.normal(shape, mean, stddev, tf.float32)
        return generator.truncated_normal(shape, mean, stddev, tf.float32)
    if kind == "uniform":
        return keras.initializers.RandomUniform(-INIT_RANGE, INIT_RANGE)(shape)
    if kind == "random_normal_initializer":
        return keras.initializers.RandomNormal(mean, stddev)(shape)
    return keras.initializers.TruncatedNormal(mean, stddev)(shape)
