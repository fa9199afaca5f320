#!/usr/bin/env python
"""Write the speed benchmark's fixed workload (issue: speed suite).

Columns (header line, comma-separated):
  click, conversion      binary labels; conversion is 1 only on clicked rows (ESMM-shaped)
  d0..d4                 dense floats, N(0, 1)
  c0..c19                sparse ids, integers in [0, vocab) written as text

Planted signal: every id of column j has a fixed weight a_j[id] ~ N(0, 0.35) for the click
logit and b_j[id] for the conversion logit; dense columns add w·d. With the default seed
9.1% of rows are clicks and 2.1% conversions (23% of clicks). A logistic model
on one-hot ids can reach a clearly-above-chance AUC, so a model that learns shows it.

With --seq_len N (the sequence speed mode of speed.py, issue #17) two more columns:
  item                   one id in [0, vocab) (the target item)
  hist                   N ids in [0, vocab), "|"-joined (the behaviour sequence)
Planted signal: item i belongs to cluster i % 20; each row has a taste cluster k; half
of its history and, independently, half of its items are drawn from cluster k, the rest
uniformly; the click logit gets +1.0 when the item's cluster is k (the conversion logit
+0.5). A pooled history tells k; an attention keyed by the item can match it. The other
columns are drawn as without --seq_len (the rows differ: the random stream differs).

Files: <out>/train.csv (--rows rows) and <out>/test.csv (--test_rows rows, same
distribution); with --parquet also train.parquet / test.parquet (needs pyarrow).
Usage:
  python scripts/bench/speed_data.py --out /tmp/mtrec_speed --rows 1000000
  python scripts/bench/speed_data.py --out /tmp/mtrec_speed_seq --rows 600000 \
      --test_rows 50000 --seq_len 50
"""
import argparse
import os

import numpy as np

NUM_SPARSE = 20
NUM_DENSE = 5
COLUMNS = (["click", "conversion"] + [f"d{i}" for i in range(NUM_DENSE)]
           + [f"c{j}" for j in range(NUM_SPARSE)])


NUM_CLUSTERS = 20


def cluster_ids(clusters: np.ndarray, shape, vocab: int, rng: np.random.Generator):
    """Ids of the given clusters (id % NUM_CLUSTERS == cluster), uniform within them."""
    return clusters + NUM_CLUSTERS * rng.integers(0, vocab // NUM_CLUSTERS, size=shape)


def generate(rows: int, vocab: int, rng: np.random.Generator, weights: dict,
             seq_len: int = 0) -> dict:
    ids = rng.integers(0, vocab, size=(rows, NUM_SPARSE))
    dense = rng.standard_normal((rows, NUM_DENSE)).astype(np.float32)
    cols = np.arange(NUM_SPARSE)
    click_logit = weights["a"][cols, ids].sum(1) + dense @ weights["wa"] + weights["ca"]
    conv_logit = weights["b"][cols, ids].sum(1) + dense @ weights["wb"] + weights["cb"]
    extra = {}
    if seq_len:
        taste = rng.integers(0, NUM_CLUSTERS, size=rows)
        hist = np.where(rng.random((rows, seq_len)) < 0.5,
                        cluster_ids(taste[:, None], (rows, seq_len), vocab, rng),
                        rng.integers(0, vocab, size=(rows, seq_len)))
        item = np.where(rng.random(rows) < 0.5, cluster_ids(taste, rows, vocab, rng),
                        rng.integers(0, vocab, size=rows))
        match = (item % NUM_CLUSTERS) == taste
        click_logit = click_logit + 1.0 * match
        conv_logit = conv_logit + 0.5 * match
        extra = {"item": item, "hist": hist}
    click = rng.random(rows) < 1 / (1 + np.exp(-click_logit))
    conversion = click & (rng.random(rows) < 1 / (1 + np.exp(-conv_logit)))
    return {"click": click.astype(np.int8), "conversion": conversion.astype(np.int8),
            "dense": dense, "ids": ids, **extra}


def write_csv(path: str, data: dict, chunk: int = 200_000) -> None:
    tmp = path + ".tmp"
    sequence = "hist" in data
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(",".join(COLUMNS + (["item", "hist"] if sequence else [])) + "\n")
        n = len(data["click"])
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            parts = [data["click"][start:end].astype(str), data["conversion"][start:end].astype(str)]
            parts += [np.char.mod("%.5f", data["dense"][start:end, i]) for i in range(NUM_DENSE)]
            parts += [data["ids"][start:end, j].astype(str) for j in range(NUM_SPARSE)]
            if sequence:
                parts.append(data["item"][start:end].astype(str))
                parts.append(np.array(["|".join(row) for row in
                                       data["hist"][start:end].astype(str).tolist()]))
            lines = parts[0]
            for p in parts[1:]:
                lines = np.char.add(np.char.add(lines, ","), p)
            f.write("\n".join(lines.tolist()) + "\n")
    os.replace(tmp, path)


def write_parquet(path: str, data: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = {"click": data["click"].astype(np.int32), "conversion": data["conversion"].astype(np.int32)}
    table.update({f"d{i}": data["dense"][:, i] for i in range(NUM_DENSE)})
    # ids as int64 columns, as the integer ids a Parquet file holds (speed.py's default ids
    # identity reads them as numbers; ids hash reads their text, the same strings the CSV
    # holds). Ids stored as text for INT64 fields cost ~3x the input CPU of int64 columns.
    table.update({f"c{j}": data["ids"][:, j].astype(np.int64) for j in range(NUM_SPARSE)})
    pq.write_table(pa.table(table), path + ".tmp")
    os.replace(path + ".tmp", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--test_rows", type=int, default=100_000)
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parquet", action="store_true")
    parser.add_argument("--seq_len", type=int, default=0,
                        help="also write the columns item and hist (this many ids); CSV only")
    args = parser.parse_args()
    if args.seq_len < 0 or (args.seq_len and args.parquet):
        parser.error("--seq_len must be >= 0 and writes CSV only (no --parquet)")
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    weights = {"a": rng.normal(0, 0.35, (NUM_SPARSE, args.vocab)),
               "b": rng.normal(0, 0.35, (NUM_SPARSE, args.vocab)),
               "wa": rng.normal(0, 0.3, NUM_DENSE), "wb": rng.normal(0, 0.3, NUM_DENSE),
               "ca": -3.2, "cb": -1.9}
    for name, rows in (("train", args.rows), ("test", args.test_rows)):
        data = generate(rows, args.vocab, rng, weights, args.seq_len)
        write_csv(os.path.join(args.out, f"{name}.csv"), data)
        if args.parquet:
            write_parquet(os.path.join(args.out, f"{name}.parquet"), data)
        print(f"{name}: {rows} rows, click {data['click'].mean():.3f}, "
              f"conversion {data['conversion'].mean():.3f}")


if __name__ == "__main__":
    main()
