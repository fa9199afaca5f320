#!/usr/bin/env python
"""Tables for docs/benchmarks.md from the runs scripts/bench/tabular.py wrote.

Reads every <work_dir>/<dataset>_<tag>_runs.json given (test-split runs only) and the tuned
logistic regression of <dataset>_lr.json in the first work_dir that has one; prints, per
data set, best-of-run and last-evaluation AUC (mean ± sample std over seeds) per model and
setting against the logistic regression, then the mean curve at every whole epoch.

Usage:
  python scripts/bench/tabular_report.py /tmp/mtrec_bench_tabular /tmp/mtrec_bench_tabular_x1 ...
"""
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import mean_std, mean_std_text  # noqa: E402

TASKS = {"kuairand": ["is_click", "long_view", "label"], "ml100k": ["label_like", "label_five"]}


def main(work_dirs):
    for dataset, tasks in TASKS.items():
        lr, runs, meta = None, {}, {}
        for d in work_dirs:
            path = os.path.join(d, f"{dataset}_lr.json")
            if lr is None and os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    lr = json.load(f)
            for path in sorted(glob.glob(os.path.join(d, f"{dataset}_*_runs.json"))):
                if "_valid_" in os.path.basename(path):
                    continue
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                runs.update(data["runs"])
                meta = data
        if not runs:
            continue
        spe = meta["steps_per_epoch"]
        print(f"\n#### {dataset}: train {meta['rows'][0]:,} rows, test {meta['rows'][1]:,}\n")
        head = "| model (setting) | " + " | ".join(f"{t} best | {t} last" for t in tasks)
        print(head + " | best at epoch | s/run |")
        print("|---|" + "---|---|" * len(tasks) + "---|---|")
        for name, rs in runs.items():
            cells, at = [], []
            for t in tasks:
                key = f"auc_{t}"
                best = [max(r[key] for r in run["curve"]) for run in rs]
                last = [run["curve"][-1][key] for run in rs]
                steps = [max(run["curve"], key=lambda r: r[key])["global_step"] for run in rs]
                mark = ""
                if lr:
                    mark = " ✗" if mean_std(best)[0] < lr[t]["auc"] else " ✓"
                cells += [mean_std_text(best) + mark, mean_std_text(last)]
                at.append(f"{np.mean(steps) / spe:.1f}")
            print(f"| {name} | " + " | ".join(cells) + f" | {', '.join(at)} | "
                  f"{np.mean([r['seconds'] for r in rs]):.0f} |")
        if lr:
            print("| logistic regression, tuned (test) | "
                  + " | ".join(f"{lr[t]['auc']:.4f} | " for t in tasks) + " | | |")
            print("\nLR chosen on the validation split: " + "; ".join(
                f"{t}: L2 {lr[t]['l2']:g}, Adam {lr[t]['rate']:g}, {lr[t]['epochs']} epochs "
                f"(valid {lr[t]['valid_auc']:.4f}; test exact {lr[t]['auc_exact']:.4f})"
                for t in tasks))
        print("\nMean AUC over seeds at each whole epoch (first row: epoch):\n")
        for name, rs in runs.items():
            curve = rs[0]["curve"]
            idx = [i for i, r in enumerate(curve)
                   if abs(r["global_step"] / spe - round(r["global_step"] / spe)) < 0.05]
            print(f"{name}: epochs " + " ".join(
                f"{curve[i]['global_step'] / spe:.0f}" for i in idx))
            for t in tasks:
                values = np.mean([[run["curve"][i][f"auc_{t}"] for i in idx] for run in rs],
                                 axis=0)
                print(f"  {t}: " + " ".join(f"{v:.4f}" for v in values))


if __name__ == "__main__":
    main(sys.argv[1:] or ["/tmp/mtrec_bench_tabular"])
