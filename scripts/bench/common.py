"""Helpers every benchmark script shares: exact AUC, mean ± std, the machine and versions."""
import hashlib
import importlib.metadata
import os
import platform
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def outside_repo_work_dir(path: str) -> str:
    """The absolute work directory, created; a benchmark that writes derived data there
    refuses a path inside the repository (the data's licences forbid committing it)."""
    work_dir = os.path.abspath(path)
    if os.path.commonpath([work_dir, REPO]) == REPO:
        sys.exit(f"--work_dir {work_dir} is inside the repository {REPO}; the data must "
                 "stay outside it.")
    os.makedirs(work_dir, exist_ok=True)
    return work_dir


def auc(labels, scores) -> float:
    """Exact ROC AUC (Mann-Whitney): mean rank of positives, ties get average ranks; nan
    without both classes."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # average 1-based rank of each run of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    run_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(run_rank, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mean_std(values) -> tuple[float, float]:
    """(mean, sample std) of the finite values (nan, nan if none)."""
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def mean_std_text(values, digits=4) -> str:
    mean, std = mean_std(values)
    return "n/a" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def machine_info() -> dict:
    """CPU, core count, versions, and a digest of the mtrec source that ran."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass

    def version(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(os.path.join(REPO, "mtrec"))):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, REPO).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu,
            "mtrec_source_sha256": digest.hexdigest()[:12], "python": platform.python_version(),
            "tensorflow": version("tensorflow"), "keras": version("keras"),
            "mtrec": version("mtrec"),
            "os": platform.platform()}
