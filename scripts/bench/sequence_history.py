#!/usr/bin/env python
"""Behaviour sequences on KuaiRand-27K (issue #17): MMoE without history, with the history
mean-pooled, and with DIN target attention over it.

Steps (every derived file goes to --work_dir, never into the repository):
  1. read the TSV (--data, kuairand27k_likehate_kcore15.tsv) and give every row the
     column `hist_video_ids`: the video ids of the same user's rows that are strictly
     earlier in time (time_ms smaller; rows of one user with the same time_ms are one
     page of a feed, none of them is in another's history), the --max_len most recent,
     newest first (a SequenceFeature keeps the first max_seq_len positions), joined by
     "|". The order is (time_ms, line of the file), so equal times are ordered the same
     on every run. A training row never sees a test row in its
     history (a few rows near midnight have a test date but an earlier time_ms than
     a training row; they are left out of the training rows' histories). --history_rows
     click / like keeps only earlier rows with is_click = 1 / label = 1 (past labels only).
  2. split by date as scripts/bench/mmoe_video_logs.py does (train date <= 20220418,
     test date >= 20220419) and write train / test TSVs with the extra column;
  3. per variant, write an mtrec config: mmoe_video_logs.py's MMoE (its features user_id,
     video_id (vocabulary of the train ids), hour, duration_ms; its settings: 4 experts
     [64, 32], towers [32], batch 256, 3 epochs, Adam 0.002 + Adagrad 0.2 on the tables)
     plus, by variant:
       none  no history (the same model as mmoe_video_logs.py's mmoe);
       mean  hist_video_ids as a SequenceFeature, `sequence_combiner { mean {} }`, in the
             DEEP group "all";
       din   hist_video_ids in the group's `sequence_features` (EasyRec's
             SeqAttGroupConfig): DIN target attention with key video_id;
     (sum / max also accepted: the mean variant with that combiner.) video_id and
     hist_video_ids share one table (embedding_name "video") in mean and din;
  4. run `mtrec train` per seed (--seeds, default 1,2,3), score the test rows with the
     exported SavedModel and compute each task's AUC exactly (rank formula);
  5. print the data statistics (history lengths, how often the target video is in its
     own history, out-of-vocabulary history items) and a markdown table of the AUCs,
     mean ± sample std over seeds; write them and results.json to --work_dir.

Usage:
  python scripts/bench/sequence_history.py \\
      --data /work/shared/data/kuairand/kuairand27k_likehate_kcore15.tsv
  # the data statistics only
  python scripts/bench/sequence_history.py --stats_only --data ...
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import mmoe_video_logs as mvl  # noqa: E402
from common import outside_repo_work_dir, REPO, auc, machine_info, mean_std_text  # noqa: E402

HIST = "hist_video_ids"
VARIANTS = ["none", "mean", "din", "sum", "max"]
HISTORY_ROWS = {"all": None, "click": "is_click", "like": "label"}


# ---------------------------------------------------------------------------------------
# data


def add_history(df, max_len, train_mask, history_rows="all", separator="|"):
    """The `hist_video_ids` column: per row, the video ids of the same user's rows with a
    strictly smaller time_ms (and, for a training row, only training rows; with
    history_rows click / like only rows whose is_click / label is 1), the max_len most
    recent, newest first, joined by separator. df's index order is the file's line order."""
    keep_col = HISTORY_ROWS[history_rows]
    order = np.lexsort((np.arange(len(df)), df["time_ms"].to_numpy(np.int64),
                        df["user_id"].to_numpy()))
    users = df["user_id"].to_numpy()[order]
    times = df["time_ms"].to_numpy(np.int64)[order]
    videos = df["video_id"].to_numpy()[order]
    in_train = np.asarray(train_mask)[order]
    usable = (np.ones(len(df), bool) if keep_col is None
              else df[keep_col].astype(int).to_numpy()[order] == 1)
    history = np.empty(len(df), dtype=object)
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:]):
        t = times[start:end]
        earlier = np.searchsorted(t, t, side="left")  # rows [0, earlier) are strictly earlier
        for i in range(end - start):
            picks = np.arange(earlier[i])
            picks = picks[usable[start + picks]]
            if in_train[start + i]:
                picks = picks[in_train[start + picks]]
            # newest first: a SequenceFeature keeps the first max_seq_len positions
            history[order[start + i]] = separator.join(videos[start + picks[-max_len:][::-1]])
    return pd.Series(history, index=df.index, name=HIST)


def history_stats(part, train_videos, separator="|"):
    """Lengths, target-in-history rate and out-of-vocabulary share of one split."""
    seqs = [s.split(separator) if s else [] for s in part[HIST]]
    lengths = np.array([len(s) for s in seqs])
    target_in = np.array([v in set(s) for v, s in zip(part["video_id"], seqs)])
    items = [x for s in seqs for x in s]
    oov_items = np.mean([x not in train_videos for x in items]) if items else float("nan")
    return {"rows": len(part), "empty": float(np.mean(lengths == 0)),
            "len_mean": float(lengths.mean()), "len_median": float(np.median(lengths)),
            "len_p10": float(np.percentile(lengths, 10)),
            "len_p90": float(np.percentile(lengths, 90)),
            "full": float(np.mean(lengths == lengths.max())) if len(lengths) else 0.0,
            "max_len_seen": int(lengths.max()),
            "target_in_history": float(target_in.mean()),
            "history_items_oov": float(oov_items),
            "target_oov": float(np.mean([v not in train_videos for v in part["video_id"]]))}


def prepare(args, work_dir):
    df = pd.read_csv(args.data, sep="\t", dtype=str, keep_default_na=False)
    missing = [name for name, _ in mvl.INPUT_FIELDS if name not in df.columns]
    if missing:
        sys.exit(f"{args.data}: missing columns {missing}")
    date = df["date"].astype(int)
    test_max = args.test_max_date or int(date.max())
    train_mask = (date <= args.train_max_date).to_numpy()
    test_mask = ((date >= args.test_min_date) & (date <= test_max)).to_numpy()
    df[HIST] = add_history(df, args.max_len, train_mask, args.history_rows)
    train, test = df[train_mask], df[test_mask]
    tag = (f"n{args.max_len}_{args.history_rows}_to{args.train_max_date}_"
           f"{args.test_min_date}_{test_max}")
    paths = {"train": os.path.join(work_dir, f"train_{tag}.tsv"),
             "test": os.path.join(work_dir, f"test_{tag}.tsv")}
    for name, part in (("train", train), ("test", test)):
        # atomically: a run reading the same file (same content) never sees it half-written
        part.to_csv(paths[name] + ".tmp", sep="\t", index=False, lineterminator="\n")
        os.replace(paths[name] + ".tmp", paths[name])
    train_videos = set(train["video_id"])
    stats = {name: history_stats(part, train_videos)
             for name, part in (("train", train), ("test", test))}
    return paths, train, test, stats


def stats_text(stats, max_len, history_rows):
    lines = [f"History: the user's previous {max_len} rows ({history_rows} rows), strictly "
             "earlier time_ms.", "",
             "| split | rows | empty history | mean length | median | p10 / p90 | "
             f"at {max_len} | target video in its history | history items out of the train "
             "vocabulary | target video out of the train vocabulary |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in stats.items():
        lines.append(
            f"| {name} | {s['rows']:,} | {s['empty']:.1%} | {s['len_mean']:.1f} | "
            f"{s['len_median']:.0f} | {s['len_p10']:.0f} / {s['len_p90']:.0f} | "
            f"{s['full']:.1%} | {s['target_in_history']:.2%} | {s['history_items_oov']:.1%} | "
            f"{s['target_oov']:.1%} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# configs


def _replace_once(text, old, new):
    if text.count(old) != 1:
        raise ValueError(f"config template changed: {old!r} found {text.count(old)} times")
    return text.replace(old, new)


def sequence_variant(text, variant, max_len, vocab_path, embedding_dim):
    """Add the history to mmoe_video_logs.py's MMoE config text for one variant."""
    if variant == "none":
        return text
    text = _replace_once(text, '    input_name: "timestamp"\n    input_type: STRING\n  }',
                         '    input_name: "timestamp"\n    input_type: STRING\n  }\n'
                         f'  input_fields {{\n    input_name: "{HIST}"\n'
                         '    input_type: STRING\n  }')
    # video_id and the history share one table.
    text = _replace_once(text, '    input_names: "video_id"\n    feature_type: IdFeature\n',
                         '    input_names: "video_id"\n    feature_type: IdFeature\n'
                         '    embedding_name: "video"\n')
    combiner = "" if variant == "din" else (
        f"    sequence_combiner {{\n      {variant} {{}}\n    }}\n")
    feature = (f'  features {{\n    input_names: "{HIST}"\n    feature_type: SequenceFeature\n'
               f'    separator: "|"\n    max_seq_len: {max_len}\n'
               f'    vocab_file: "{vocab_path}"\n    embedding_dim: {embedding_dim}\n'
               f'    embedding_name: "video"\n{combiner}  }}\n')
    text = _replace_once(text, "}\n\nmodel_config {", feature + "}\n\nmodel_config {")
    if variant == "din":
        group = ('    sequence_features {\n      group_name: "seq"\n      seq_att_map {\n'
                 f'        key: "video_id"\n        hist_seq: "{HIST}"\n      }}\n    }}\n')
    else:
        group = f'    feature_names: "{HIST}"\n'
    return _replace_once(text, '    feature_names: "duration_ms"\n    wide_deep: DEEP\n',
                         '    feature_names: "duration_ms"\n' + group + "    wide_deep: DEEP\n")


def write_config(path, variant, s, paths, train, num_steps, seed, max_len):
    ids = mvl.write_config(path, "mmoe", s, paths, train, num_steps, num_steps, seed)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    vocab = os.path.join(os.path.dirname(path), "vocab_video_id.txt")
    text = sequence_variant(text, variant, max_len, vocab, s["embedding_dim"])
    text = text.replace("# mmoe on KuaiRand", f"# mmoe ({variant} history) on KuaiRand", 1)
    text = text.replace("scripts/bench/mmoe_video_logs.py", "scripts/bench/sequence_history.py",
                        1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return ids


# ---------------------------------------------------------------------------------------
# report


def test_probs(model_dir, test):
    """{task: probabilities} of the exported SavedModel (serving_default) on the test rows."""
    import tensorflow as tf
    root = os.path.join(model_dir, "export", "final")
    version = sorted(d for d in os.listdir(root) if d.isdigit())[-1]
    serve = tf.saved_model.load(os.path.join(root, version)).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    probs = {t: [] for t in mvl.TASKS}
    for start in range(0, len(test), 4096):
        chunk = test.iloc[start:start + 4096]
        inputs = {name: (tf.constant(chunk[name].to_numpy().astype(str))
                         if spec.dtype == tf.string else
                         tf.cast(tf.constant(chunk[name].to_numpy().astype(np.float64)),
                                 spec.dtype)) for name, spec in specs.items()}
        out = serve(**inputs)
        for t in mvl.TASKS:
            probs[t].append(out[f"probs_{t}"].numpy().reshape(-1))
    return {t: np.concatenate(v) for t, v in probs.items()}


def subset_table(results, test, train_videos):
    """AUC per variant on the test rows whose target video is in / out of the train
    vocabulary (DIN's query is the shared out-of-vocabulary row for the latter)."""
    known = test["video_id"].isin(train_videos).to_numpy()
    lines = ["| MMoE, history | test rows | " + " | ".join(mvl.TASKS) + " |",
             "|---|---|" + "---|" * len(mvl.TASKS)]
    for variant, runs in results.items():
        probs = [test_probs(os.path.join(os.path.dirname(r["config"]), f"model_seed{r['seed']}"),
                            test) for r in runs]
        for name, mask in (("target video in the train vocabulary", known),
                           ("target video new (out of vocabulary)", ~known)):
            cells = [mean_std_text([auc(test[t].astype(int).to_numpy()[mask], p[t][mask])
                                    for p in probs]) for t in mvl.TASKS]
            lines.append(f"| {variant} | {name} ({mask.sum():,}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results):
    lines = ["| MMoE, history | " + " | ".join(mvl.TASKS)
             + " | mean of the tasks | wall time per run (s) |",
             "|---|" + "---|" * (len(mvl.TASKS) + 2)]
    for variant, runs in results.items():
        cells = [mean_std_text([r["exact"][t] for r in runs]) for t in mvl.TASKS]
        mean = mean_std_text([np.mean([r["exact"][t] for t in mvl.TASKS]) for r in runs])
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean} | "
                     + mean_std_text([r["seconds"] for r in runs], 1) + " |")
    lines += ["", "Per seed (is_click / long_view / label):", "",
              "| history | " + " | ".join(f"seed {r['seed']}" for r in
                                           next(iter(results.values()))) + " |",
              "|---|" + "---|" * len(next(iter(results.values())))]
    for variant, runs in results.items():
        lines.append(f"| {variant} | " + " | ".join(
            " / ".join(f"{r['exact'][t]:.4f}" for t in mvl.TASKS) for r in runs) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="kuairand27k_likehate_kcore15.tsv")
    p.add_argument("--work_dir", default="/tmp/mtrec_bench_seq_history")
    p.add_argument("--variants", default="none,mean,din",
                   help=f"comma-separated, from {VARIANTS}")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--max_len", type=int, default=50, help="history length N")
    p.add_argument("--history_rows", choices=sorted(HISTORY_ROWS), default="all",
                   help="which earlier rows make the history: all, or only is_click = 1 / "
                        "label = 1 ones")
    p.add_argument("--train_max_date", type=int, default=20220418)
    p.add_argument("--test_min_date", type=int, default=20220419)
    p.add_argument("--test_max_date", type=int, default=None)
    p.add_argument("--epochs", type=float, help="default: mmoe_video_logs.py's (3)")
    p.add_argument("--tag", default="", help="suffix of the per-variant directories")
    p.add_argument("--stats_only", action="store_true",
                   help="write the splits and print the history statistics, train nothing")
    p.add_argument("--subsets_of", metavar="RESULTS_JSON",
                   help="train nothing: the AUCs of a finished run's models (its results.json) "
                        "on the test rows whose target video is / is not in the train "
                        "vocabulary")
    args = p.parse_args(argv)

    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown --variants {unknown}; choose from {VARIANTS}")
    seeds = [int(x) for x in args.seeds.split(",")]
    if not seeds or min(seeds) < 1:
        p.error("--seeds must be positive integers")
    if args.max_len < 1:
        p.error("--max_len must be at least 1")
    work_dir = outside_repo_work_dir(args.work_dir)
    load_start = os.getloadavg()[0]
    source_start = machine_info()["mtrec_source_sha256"]

    paths, train, test, stats = prepare(args, work_dir)
    print(f"train {len(train)} rows -> {paths['train']}; test {len(test)} rows -> "
          f"{paths['test']}", flush=True)
    stats_md = stats_text(stats, args.max_len, args.history_rows)
    print(stats_md, flush=True)
    if args.stats_only:
        return
    if args.subsets_of:
        with open(args.subsets_of, encoding="utf-8") as f:
            results = json.load(f)["results"]
        print(subset_table(results, test, set(train["video_id"])), flush=True)
        return

    s = dict(mvl.DEFAULTS, **mvl.MODEL_SETTINGS["mmoe"])
    if args.epochs is not None:
        s["epochs"] = args.epochs
    num_steps = max(1, math.ceil(s["epochs"] * len(train) / s["batch_size"]))
    results = {}
    for variant in variants:
        run_dir = os.path.join(work_dir, variant + (f"_{args.tag}" if args.tag else ""))
        os.makedirs(run_dir, exist_ok=True)
        runs = []
        for seed in seeds:
            config = os.path.join(run_dir, f"mmoe_{variant}_seed{seed}.config")
            write_config(config, variant, s, paths, train, num_steps, seed, args.max_len)
            model_dir = os.path.join(run_dir, f"model_seed{seed}")
            records, seconds = mvl.run_mtrec_train(config, model_dir,
                                                   os.path.join(run_dir, f"train_seed{seed}.log"))
            exact = mvl.exact_mtrec_auc("mmoe", model_dir, test)
            runs.append({"seed": seed, "eval": records[-1], "exact": exact, "seconds": seconds,
                         "config": config})
            print(f"{variant} seed {seed}: " + " ".join(f"{t}={exact[t]:.4f}" for t in mvl.TASKS)
                  + " | mtrec " + " ".join(f"{t}={records[-1]['auc_' + t]:.4f}"
                                           for t in mvl.TASKS)
                  + f" | {seconds:.1f} s", flush=True)
        results[variant] = runs

    info = machine_info()
    info["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    info["load_start"], info["load_end"] = load_start, os.getloadavg()[0]
    if info["mtrec_source_sha256"] != source_start:
        print(f"WARNING: mtrec's source changed during the benchmark ({source_start} -> "
              f"{info['mtrec_source_sha256']}); rerun it.", flush=True)
        info["mtrec_source_sha256"] = f"{source_start} -> {info['mtrec_source_sha256']} (CHANGED)"
    subsets = subset_table(results, test, set(train["video_id"]))
    text = (table(results) + "\n\n" + subsets + "\n\n" + stats_md + "\n\n"
            + f"Settings: {', '.join(f'{k}={v}' for k, v in s.items())}; {num_steps} steps; "
            f"rows train {len(train):,}, test {len(test):,}.\n" + mvl.machine_text(info))
    print("\n" + text, flush=True)
    suffix = f"_{args.tag}" if args.tag else ""
    with open(os.path.join(work_dir, f"results{suffix}.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(os.path.join(work_dir, f"results{suffix}.json"), "w", encoding="utf-8") as f:
        json.dump({"settings": s, "stats": stats, "machine": info, "results": results,
                   "command": " ".join(sys.argv)}, f, indent=2)


if __name__ == "__main__":
    main()
