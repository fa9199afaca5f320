"""PNG plots of benchmark results (the `bench` extra: matplotlib).

    python scripts/bench/plots.py curves --out curves.png --metric auc_ctr DIR [DIR ...]
        held-out metric against training step, one line per model_dir (its eval_result.txt)
    python scripts/bench/plots.py domains --out domains.png --metric auc_ctr results.json
        per-domain metric of every model (mean over seeds, bar = one std), from the
        results.json of scripts/bench/multidomain.py

The benchmark scripts call these functions themselves when given --plot.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plots need matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def curves(model_dirs: dict, metric: str, out: str, title: str = "") -> None:
    """{label: model_dir} -> a PNG of `metric` at each evaluation's global_step."""
    from mtrec.training.best import eval_history
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    plotted = 0
    for label, model_dir in model_dirs.items():
        points = [(r["global_step"], r[metric]) for r in eval_history(model_dir) if metric in r]
        if not points:
            continue
        steps, values = zip(*points)
        axes.plot(steps, values, marker="o", markersize=3, label=label)
        plotted += 1
    if not plotted:
        raise SystemExit(f"no evaluation in {list(model_dirs.values())} has {metric!r}")
    axes.set_xlabel("training step")
    axes.set_ylabel(f"held-out {metric}")
    axes.set_title(title or f"held-out {metric} during training")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def domains(results: dict, metric: str, out: str, title: str = "") -> None:
    """{model: [run results {"<metric>/<domain>": value, ...}]} -> a PNG of grouped bars:
    one group per domain, one bar per model (mean over runs, error bar one std)."""
    plt = _pyplot()
    keys = sorted({k for runs in results.values() for r in runs for k in r
                   if k.startswith(metric + "/")})
    if not keys:
        raise SystemExit(f"the results have no per-domain {metric!r}")
    models = list(results)
    width = 0.8 / len(models)
    figure, axes = plt.subplots(figsize=(max(6.4, 1.2 * len(keys) + 2), 4.0))
    positions = np.arange(len(keys))
    for i, model in enumerate(models):
        values = np.array([[r.get(k, np.nan) for k in keys] for r in results[model]], float)
        axes.bar(positions + (i - (len(models) - 1) / 2) * width, np.nanmean(values, axis=0),
                 width, yerr=np.nanstd(values, axis=0), capsize=2, label=model)
    axes.set_xticks(positions, [k.split("/", 1)[1] for k in keys])
    axes.set_ylabel(metric)
    finite = [v for runs in results.values() for r in runs for k in keys
              if np.isfinite(v := r.get(k, np.nan))]
    low, high = min(finite), max(finite)
    axes.set_ylim(low - 0.1 * (high - low + 1e-3), high + 0.1 * (high - low + 1e-3))
    axes.set_title(title or f"{metric} per domain")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, ncol=min(len(models), 4))
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("curves")
    p.add_argument("model_dirs", nargs="+")
    p.add_argument("--metric", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("domains")
    p.add_argument("results")
    p.add_argument("--metric", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.kind == "curves":
        curves({os.path.basename(os.path.normpath(d)): d for d in args.model_dirs},
               args.metric, args.out)
    else:
        with open(args.results) as f:
            domains(json.load(f), args.metric, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
