"""Synthetic two-task regression data with a controlled task correlation (numpy only).

The generator of the MMoE paper (Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018, synthetic data section):

1. Draw two orthonormal vectors u1, u2 in R^d (Gram-Schmidt on two N(0, I) draws):
       u1 = a / |a|,   u2 = (b - (b.u1) u1) / |b - (b.u1) u1|.
2. For a scale c and a correlation -1 <= p <= 1:
       w1 = c u1,      w2 = c (p u1 + sqrt(1 - p^2) u2),
   so |w1| = |w2| = c and cos(w1, w2) = p.
3. Draw every input x ~ N(0, I_d).
4. The labels:
       y1 = w1^T x + sum_{i=1..m} sin(alpha_i w1^T x + beta_i) + eps1,
       y2 = w2^T x + sum_{i=1..m} sin(alpha_i w2^T x + beta_i) + eps2,
   eps1, eps2 ~ N(0, noise_std^2) independently.

Because x ~ N(0, I), (w1^T x, w2^T x) is bivariate normal with variances c^2 and
covariance c^2 p: its Pearson correlation is exactly p. The labels' correlation is a
monotone function of p but lower than p when p < 1 (the sines are non-linear).

Choices where the paper leaves room:
  - alpha_i, beta_i (i = 1..m): the paper calls them "given parameters that control the
    shape of the sinusoidal functions" and gives no values. They are drawn here once per
    data set, i.i.d. N(0, alpha_std^2) and N(0, beta_std^2) with alpha_std = beta_std = 1,
    and shared by both tasks (so at p = 1 the two tasks are the same function). With
    w^T x ~ N(0, c^2 = 1), alpha ~ N(0, 1) makes the sines genuinely non-linear over the
    data; a small alpha (e.g. std 0.1) would make every sine almost linear in w^T x, and
    both tasks almost linear.
  - noise: the paper writes eps ~ N(0, 0.01), i.e. variance 0.01; the default
    noise_std = 0.1 is that variance. A regression model's test MSE per task cannot go
    below noise_std^2.

Everything is drawn from one `numpy.random.default_rng(seed)` in a fixed order
(u1/u2, alpha, beta, x, eps1, eps2), so a seed fixes the whole data set.

`token_cells` makes the multi-valued cells of generated tag and sequence columns
(`a|b|c`, `a:0.5|b:1.2`, `a#b|c#d`), e.g. for scripts/easyrec_status.py.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class TaskParams:
    """The parameters shared by every row of one synthetic data set."""
    u1: np.ndarray      # (dim,) unit vector
    u2: np.ndarray      # (dim,) unit vector orthogonal to u1
    w1: np.ndarray      # (dim,) c * u1
    w2: np.ndarray      # (dim,) c * (p u1 + sqrt(1 - p^2) u2)
    alpha: np.ndarray   # (num_sin,)
    beta: np.ndarray    # (num_sin,)
    correlation: float
    c: float
    noise_std: float


def orthonormal_pair(dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two orthogonal unit vectors in R^dim, by Gram-Schmidt on two Gaussian draws."""
    if dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim}.")
    a = rng.standard_normal(dim)
    b = rng.standard_normal(dim)
    u1 = a / np.linalg.norm(a)
    b = b - (b @ u1) * u1
    # Once more against rounding: keeps |u1.u2| at machine precision.
    b = b - (b @ u1) * u1
    u2 = b / np.linalg.norm(b)
    return u1, u2


def task_params(dim: int = 100, correlation: float = 0.5, c: float = 1.0, num_sin: int = 10,
                alpha_std: float = 1.0, beta_std: float = 1.0, noise_std: float = 0.1,
                rng: np.random.Generator | None = None) -> TaskParams:
    """Draw u1, u2, alpha, beta and build w1, w2 (see the module docstring)."""
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must lie in [-1, 1], got {correlation}.")
    rng = rng if rng is not None else np.random.default_rng()
    u1, u2 = orthonormal_pair(dim, rng)
    p = float(correlation)
    w1 = c * u1
    w2 = c * (p * u1 + np.sqrt(max(0.0, 1.0 - p * p)) * u2)
    alpha = alpha_std * rng.standard_normal(num_sin)
    beta = beta_std * rng.standard_normal(num_sin)
    return TaskParams(u1, u2, w1, w2, alpha, beta, p, float(c), float(noise_std))


def task_label(z: np.ndarray, params: TaskParams) -> np.ndarray:
    """Noise-free label of one task from its projection z = w^T x:
    z + sum_i sin(alpha_i z + beta_i)."""
    return z + np.sin(np.outer(z, params.alpha) + params.beta).sum(axis=1)


def sample(params: TaskParams, n: int, rng: np.random.Generator):
    """n rows from a data set's parameters -> (x (n, dim) float32, y1, y2 float32)."""
    dim = params.w1.shape[0]
    x = rng.standard_normal((n, dim))
    eps1 = params.noise_std * rng.standard_normal(n)
    eps2 = params.noise_std * rng.standard_normal(n)
    y1 = task_label(x @ params.w1, params) + eps1
    y2 = task_label(x @ params.w2, params) + eps2
    return x.astype(np.float32), y1.astype(np.float32), y2.astype(np.float32)


def mmoe_synthetic(n: int, dim: int = 100, correlation: float = 0.5, c: float = 1.0,
                   num_sin: int = 10, alpha_std: float = 1.0, beta_std: float = 1.0,
                   noise_std: float = 0.1, seed: int | None = 0, return_params: bool = False):
    """The MMoE paper's synthetic regression data.

    Returns (x, y1, y2): x float32 (n, dim), y1 and y2 float32 (n,); with
    return_params=True, (x, y1, y2, TaskParams). Rows of one call share u1, u2, alpha
    and beta, so split one call into train and test (the same seed always gives the same
    rows).
    """
    rng = np.random.default_rng(seed)
    params = task_params(dim, correlation, c, num_sin, alpha_std, beta_std, noise_std, rng)
    x, y1, y2 = sample(params, n, rng)
    return (x, y1, y2, params) if return_params else (x, y1, y2)


def binarize(y: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Labels y > threshold (default: the median of y) as int32 0/1."""
    threshold = float(np.median(y)) if threshold is None else threshold
    return (np.asarray(y) > threshold).astype(np.int32)


def mmoe_synthetic_binary(n: int, **kwargs):
    """Classification variant: (x, b1, b2) with b_k = 1[y_k > median(y_k)], the median
    taken over the n rows of this call (so each label is about half positive).
    Accepts the keyword arguments of `mmoe_synthetic` (return_params included)."""
    out = mmoe_synthetic(n, **kwargs)
    x, y1, y2 = out[:3]
    binary = (x, binarize(y1), binarize(y2))
    return binary + tuple(out[3:])


def write_csv(path: str, x: np.ndarray, ys, header: bool = True) -> None:
    """Write a comma-separated file with columns f0..f{dim-1}, then the labels.

    ys: a dict {column name: (n,) array} in column order (e.g. {"y1": .., "y2": ..,
    "b1": .., "b2": ..}), or a sequence of arrays named y1, y2, ... Integer arrays are
    written as integers, floats with 7 significant digits (float32 precision).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be (n, dim), got shape {x.shape}.")
    if not isinstance(ys, dict):
        ys = {f"y{k + 1}": y for k, y in enumerate(ys)}
    n, dim = x.shape
    names = [f"f{j}" for j in range(dim)] + list(ys)
    columns = [np.asarray(y).reshape(-1) for y in ys.values()]
    for name, column in zip(ys, columns):
        if column.shape[0] != n:
            raise ValueError(f"label {name!r} has {column.shape[0]} rows, x has {n}.")
    formats = ["%.7g"] * dim + ["%d" if np.issubdtype(col.dtype, np.integer) or col.dtype == bool
                                else "%.7g" for col in columns]
    table = np.empty((n, dim + len(columns)), dtype=np.float64)
    table[:, :dim] = x
    for k, column in enumerate(columns):
        table[:, dim + k] = column
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    np.savetxt(tmp, table, fmt=formats, delimiter=",",
               header=",".join(names) if header else "", comments="")
    os.replace(tmp, path)


def token_cells(rng: np.random.Generator, n: int, tokens, separator: str = "|",
                max_len: int = 5, min_len: int = 0, kv_separator: str = "",
                inner_separator: str = "", inner_len: int = 1, lengths=None) -> list[str]:
    """n multi-valued cells of a tag or sequence column, e.g. `a|b|c` (or `a:0.5|b:1.2`
    with kv_separator, or `a#b|c#d` with inner_separator and inner_len values per item).

    Each cell holds between min_len and max_len items (uniform; 0 gives an empty cell)
    drawn with replacement from `tokens` (a non-empty sequence of strings or numbers);
    weights after kv_separator are uniform in [0.1, 2) with 4 decimals. `lengths` (n
    integers) fixes the number of items of each cell instead, e.g. to give aligned
    sequence columns the same length per row. Uses only `rng`, so a seed fixes the cells.
    """
    tokens = [str(t) for t in tokens]
    if not tokens:
        raise ValueError("tokens must not be empty.")
    if not 0 <= min_len <= max_len:
        raise ValueError(f"need 0 <= min_len <= max_len, got {min_len} and {max_len}.")
    if not separator:
        raise ValueError("separator must not be empty.")
    if inner_len < 1:
        raise ValueError(f"inner_len must be at least 1, got {inner_len}.")
    if inner_len > 1 and not inner_separator:
        raise ValueError("inner_len > 1 needs an inner_separator.")
    if lengths is None:
        lengths = rng.integers(min_len, max_len + 1, size=n)
    elif len(lengths) != n or min(lengths, default=0) < 0:
        raise ValueError(f"lengths must be {n} non-negative integers.")
    cells = []
    for length in lengths:
        items = []
        for _ in range(int(length)):
            picks = rng.integers(0, len(tokens), size=inner_len)
            item = (inner_separator or "").join(tokens[k] for k in picks)
            if kv_separator:
                item += f"{kv_separator}{rng.uniform(0.1, 2.0):.4f}"
            items.append(item)
        cells.append(separator.join(items))
    return cells
