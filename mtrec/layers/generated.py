"""Shared by the layers whose weights are generated from a scenario (APG, M2M's MetaUnit).

A batch holds few distinct scenarios (one per domain), so the weights are generated once
per distinct scenario row and each row then uses its scenario's weights. Applying them as
one matmul against every distinct scenario's weights and keeping each row's own result is
cheaper than gathering a (batch, a, c) weight tensor for a batched mat-vec: 6.4 vs 16.9
CPU-ms per forward + backward of one 64 x 64 layer at batch 512 with 4 scenarios. (M2M's
sample trains at the same rate either way, within run-to-run noise: its meta units are a
small part of its step.)
"""
import tensorflow as tf
from keras import ops

# Up to this many distinct scenarios in a batch, every row meets every scenario's weights
# in one matmul (D times the flops, but one large matmul); above it (e.g. a scenario that
# includes user features) each row gathers its own weights. At 4 scenarios grouped took
# 0.4x the per-row time, so the two meet near 10.
MAX_GROUPED_SCENARIOS = 8


def distinct_rows(x):
    """(first, row_of) for x (batch, c): `first` (D, c) holds each of the D distinct rows of x
    once, gathered from x at its first occurrence (so gradients reach x: Unique has none),
    and row_of (batch,) indexes each row's value in `first`: x == tf.gather(first, row_of)."""
    distinct, row_of = tf.raw_ops.UniqueV2(x=x, axis=[0])
    first = tf.math.unsorted_segment_min(tf.range(tf.shape(x)[0]), row_of,
                                         tf.shape(distinct)[0])
    return tf.gather(x, first), row_of


def grouped_affine(h, kernels, biases, row_of):
    """h (batch, a) or (batch, n, a); kernels (D, a, c), biases (D, c): row r of h times
    kernels[row_of[r]] plus biases[row_of[r]] -> (batch, c) or (batch, n, c)."""
    if len(h.shape) == 3:
        every = ops.einsum("bni,dij->bndj", h, kernels)  # (batch, n, D, c)
        return tf.gather(every, row_of, axis=2, batch_dims=1) + tf.gather(biases, row_of)[:, None]
    every = ops.einsum("bi,dij->bdj", h, kernels)  # (batch, D, c)
    return tf.gather(every, row_of, axis=1, batch_dims=1) + tf.gather(biases, row_of)


def per_row_affine(h, kernels, biases):
    """h (batch, a) or (batch, n, a); kernels (batch, a, c), biases (batch, c): each row
    with its own kernel -> (batch, c) or (batch, n, c)."""
    if len(h.shape) == 3:
        return ops.einsum("bni,bij->bnj", h, kernels) + biases[:, None, :]
    return ops.einsum("bi,bij->bj", h, kernels) + biases


def scenario_affine(h, kernels, biases, row_of):
    """h (batch, a) or (batch, n, a); kernels (D, a, c) and biases (D, c) of the D distinct
    scenarios; row_of (batch,) each row's scenario: grouped_affine for few scenarios,
    else each row gathers its own kernel (memory batch * a * c instead of batch * D * c)."""
    return tf.cond(tf.shape(kernels)[0] <= MAX_GROUPED_SCENARIOS,
                   lambda: grouped_affine(h, kernels, biases, row_of),
                   lambda: per_row_affine(h, tf.gather(kernels, row_of),
                                          tf.gather(biases, row_of)))
