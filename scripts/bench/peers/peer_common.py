"""What the peer runners (run_deepctr.py, run_rechub.py, run_deepctr_torch.py) share.

Each runner runs in a peer virtualenv (make_venvs.py), never in mtrec's own environment, so
this module needs numpy, pandas and scikit-learn only (and scripts/bench/common.py for the
AUC, which needs numpy only: the peers' AUCs are computed exactly as mtrec's benchmark does).

Conventions every runner keeps:
  * stdout carries ONE JSON line, the result. Whatever the libraries print (progress bars,
    "cpu", version-check notices, Keras epoch lines) goes to stderr: `claim_stdout()` moves
    file descriptor 1 onto stderr before any library is imported and hands back a private
    copy of the real stdout for the result.
  * preprocessing is the libraries' documented one: pandas.read_csv, a LabelEncoder per
    sparse column fitted on the training file, dense columns as they are.
  * steady_ex_per_s: per-batch timestamps from inside the library's own training loop; the
    window starts once `--warmup_batches` batches (default 20) have finished and ends when the
    loop returns, so it holds the batches warmup..last and rows - warmup * batch_size examples.
"""
import argparse
import json
import os
import resource
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # scripts/bench, for common.auc
from common import auc  # noqa: E402,F401  (re-exported: pc.auc)

NUM_SPARSE, NUM_DENSE = 20, 5
SPARSE = [f"c{j}" for j in range(NUM_SPARSE)]
DENSE = [f"d{i}" for i in range(NUM_DENSE)]
EMBEDDING_DIM = 16
LEARNING_RATE = 1e-3


def claim_stdout():
    """Send everything written to fd 1 (Python or C) to stderr from now on; return a file
    object on the original stdout, for the one result line."""
    sys.stdout.flush()
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return result


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mmoe", "esmm"], required=True)
    p.add_argument("--train", required=True, help="training CSV (speed_data.py)")
    p.add_argument("--test", required=True, help="test CSV, for the AUCs")
    p.add_argument("--batch_size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2,
                   help="intra-op threads (torch.set_num_threads / TF intra and inter op); "
                        "0 leaves the library's default")
    p.add_argument("--warmup_batches", type=int, default=20)
    p.add_argument("--nrows", type=int, default=None,
                   help="read only the first N rows of each file (smoke tests)")
    p.add_argument("--seed", type=int, default=1024)
    p.add_argument("--vocab_size", type=int, default=0,
                   help="rows of every embedding table (large-table runs); 0: ids seen + 1")
    return p


def read_and_encode(train_path: str, nrows=None):
    """pandas.read_csv + LabelEncoder per sparse column (the libraries' documented recipe).

    Returns (frame, encoders): the frame's sparse columns now hold codes 0..n_seen-1."""
    import pandas as pd
    from sklearn.preprocessing import LabelEncoder

    frame = pd.read_csv(train_path, nrows=nrows)
    encoders = {}
    for col in SPARSE:
        encoder = LabelEncoder()
        frame[col] = encoder.fit_transform(frame[col])
        encoders[col] = encoder
    return frame, encoders


def vocabulary_sizes(encoders, vocab_size: int = 0) -> dict:
    """Codes seen in training, plus one slot for ids the test file has and training had not;
    with vocab_size, that many rows per table (at least the codes seen + 1)."""
    return {col: max(len(enc.classes_) + 1, vocab_size) for col, enc in encoders.items()}


def read_test(test_path: str, encoders, nrows=None):
    """The test CSV with the training encoders; unseen ids map to the extra last slot (the
    same thing LabelEncoder.transform does for seen ids, without raising on unseen ones)."""
    import pandas as pd

    frame = pd.read_csv(test_path, nrows=nrows)
    for col in SPARSE:
        classes = encoders[col].classes_
        values = frame[col].to_numpy()
        pos = np.searchsorted(classes, values)
        pos_clipped = np.minimum(pos, len(classes) - 1)
        seen = classes[pos_clipped] == values
        frame[col] = np.where(seen, pos_clipped, len(classes))
    return frame


def steady_rate(marks, t_end: float, rows: int, batch_size: int, warmup: int,
                marks_are_batch_ends: bool) -> float:
    """Examples/s over the batches after the first `warmup` ones.

    marks: one perf_counter() per batch, either when the batch ended (Keras
    on_train_batch_end) or when its forward pass began (a torch forward pre-hook: the batch
    before it, and the loading of this one, are done by then). t_end: when the loop returned.
    """
    n = len(marks)
    if n <= warmup + 1:
        return float("nan")
    start = marks[warmup - 1] if marks_are_batch_ends else marks[warmup]
    examples = rows - warmup * batch_size
    return examples / (t_end - start)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(out, record: dict) -> None:
    """Write the one JSON result line."""
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
             for k, v in record.items()}
    out.write(json.dumps(clean) + "\n")
    out.flush()

