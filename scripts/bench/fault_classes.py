#!/usr/bin/env python
"""The fault classes of issue #25, run against the real `mtrec` command line.

Each class is tried N times with randomised inputs; each try runs `python -m mtrec ...` as a
subprocess (and, where something was saved, a separate TensorFlow process that loads it) and
is classified as one of:

  clear      the command failed with exactly one `mtrec: error:` line that names what it
             must, and no traceback; or it succeeded where success is documented
  traceback  a Python traceback in its output
  silent     exit 0 where it should have failed or warned, or a wrong result accepted
  lost       a checkpoint or export that was good before no longer loads, or is gone
  slow       over the class's time limit (memory estimates: 30 s)
  unclear    none of these: a failure without exactly one `mtrec: error:` line, a message
             that does not name the file:line/column/path it must, a "bug in mtrec" line,
             a failure where success is documented, or a temporary file left behind

Usage: python scripts/bench/fault_classes.py [--tries N] [--seed S] [--classes a,b] [--keep]
Classes: concurrent_exports, bad_cells, bucket_ids, symlinks, full_disk, memory, deep_nesting.
The costly classes run N tries (bad_cells, symlinks, full_disk: 2N);
memory and deep_nesting, which take a second or two, run 5N.
full_disk mounts a small tmpfs per try (`mount -t tmpfs`, root only); where that fails the
class is skipped and the reason printed.
"""
import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTCOMES = ["clear", "traceback", "silent", "lost", "slow", "unclear"]
WORST_FIRST = ["lost", "traceback", "silent", "slow", "unclear", "clear"]
MEMORY_LIMIT_SECONDS = 30

# A tiny MMoE over one column of each numeric type (labels clk and buy are INT32).
CONFIG = """\
train_config {
  optimizer_config { adam_optimizer { learning_rate { constant_learning_rate {
    learning_rate: 0.01 } } } }
  num_steps: 10
  save_checkpoints_steps: 5
  log_step_count_steps: 5
}
data_config {
  batch_size: 8
  shuffle: false
  label_fields: "clk"
  label_fields: "buy"
  input_fields { input_name: "clk" input_type: INT32 }
  input_fields { input_name: "buy" input_type: INT32 }
  input_fields { input_name: "user" input_type: STRING }
  input_fields { input_name: "age" input_type: INT32 }
  input_fields { input_name: "cnt" input_type: INT64 }
  input_fields { input_name: "price" input_type: DOUBLE }
  input_fields { input_name: "score" input_type: FLOAT }
}
feature_config {
  features { input_names: "user" hash_bucket_size: 100 embedding_dim: 4 }
  features { input_names: "age" num_buckets: 100 embedding_dim: 4 }
  features { input_names: "cnt" hash_bucket_size: 50 embedding_dim: 4 }
  features { input_names: "price" feature_type: RawFeature }
  features { input_names: "score" feature_type: RawFeature }
}
model_config {
  model_class: "MMoE"
  feature_groups { group_name: "all" feature_names: ["user", "age", "cnt", "price", "score"]
                   wide_deep: DEEP }
  mmoe {
    expert_dnn { hidden_units: [8] use_bn: false }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" dnn { hidden_units: [4] use_bn: false } }
    task_towers { tower_name: "cvr" label_name: "buy" dnn { hidden_units: [4] use_bn: false } }
  }
}
"""
COLUMNS = ["clk", "buy", "user", "age", "cnt", "price", "score"]

# (column, bad CSV cell): out of range for the column's type, not finite, empty labels,
# labels that are not classes, fractions in integer columns.
BAD_CELLS = [
    ("clk", "4294967297"), ("clk", "1e30"), ("clk", ""), ("clk", "2"), ("clk", "-1"),
    ("clk", "0.5"), ("clk", "nan"), ("buy", "4294967297"), ("buy", ""),
    ("age", "3e9"), ("age", "2147483648"), ("age", "-2147483649"), ("age", "3.5"),
    ("age", "nan"), ("age", "inf"),
    ("cnt", "1e19"), ("cnt", "9223372036854775808"), ("cnt", "-9223372036854775809"),
    ("cnt", "inf"), ("cnt", "1e400"),
    ("price", "nan"), ("price", "inf"), ("price", "-inf"), ("price", "1e400"),
    ("price", "-1e400"), ("price", "NaN"), ("price", "Infinity"),
    ("score", "1e39"), ("score", "-3.5e38"), ("score", "nan"), ("score", "1e400"),
]
LINKS = [".train.lock", ".write_test", "eval_result.txt", "pipeline.config", "export"]


# ---------------------------------------------------------------------------
# Classification (pure: tested in tests/test_fault_classes.py)


def classify(code, stdout, stderr, seconds=0.0, *, expect="fail", names=(), lost=None,
             wrong=None, leftover=None, limit=None):
    """(outcome, why) of one command. expect: "fail", "succeed" or "either" (documented
    success or a clear failure); names: texts the error message must contain; lost, wrong,
    leftover: what the caller found on disk afterwards (None when all is well)."""
    text = (stdout or "") + (stderr or "")
    if lost:
        return "lost", lost
    if "Traceback (most recent call last)" in text:
        last = [l for l in text.splitlines() if l.strip()][-1]
        return "traceback", last[:200]
    lines = (stderr or "").splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("mtrec: error:")]
    if code == 0 and expect == "fail":
        return "silent", "exit 0"
    if code == 0 and wrong:
        return "silent", wrong
    if limit is not None and seconds > limit:
        return "slow", f"{seconds:.1f} s > {limit} s"
    if code == 0:
        if errors:
            return "unclear", "exit 0 with an 'mtrec: error:' line"
        if leftover:
            return "unclear", leftover
        return "clear", "succeeded"
    if code is None or code < 0:
        return "unclear", f"killed by signal {-code}" if code else "no exit code"
    if len(errors) != 1:
        return "unclear", f"exit {code} with {len(errors)} 'mtrec: error:' lines"
    message = "\n".join(lines[errors[0]:])
    first = lines[errors[0]]
    if re.search(r"problems?:$", first) and len(lines) > errors[0] + 1:
        first += " " + lines[errors[0] + 1].strip()  # a ConfigError's first problem
    if expect == "succeed":
        return "unclear", f"failed where success is documented: {first[:200]}"
    if "This is a bug in mtrec" in message:
        return "unclear", first[:200]
    missing = [n for n in names  # a name, or a tuple of alternatives
               if not any(a in message for a in ((n,) if isinstance(n, str) else n))]
    if missing:
        return "unclear", f"the message does not name {missing}: {first[:400]}"
    if leftover:
        return "unclear", leftover
    return "clear", first[:160]


def worst(results):
    """The worst of several (outcome, why)."""
    return min(results, key=lambda r: WORST_FIRST.index(r[0]))


def table(counts, skipped):
    """The results table (markdown) of {class: {outcome: n}}."""
    head = "| class | tried | " + " | ".join(OUTCOMES) + " |"
    rows = [head, "|" + "---|" * (len(OUTCOMES) + 2)]
    for name, c in counts.items():
        tried = sum(c.values())
        cells = " | ".join(str(c.get(o, 0)) for o in OUTCOMES)
        rows.append(f"| {name} | {tried} | {cells} |")
    for name, reason in skipped.items():
        rows.append(f"| {name} | skipped: {reason} |" + " |" * len(OUTCOMES))
    return "\n".join(rows)


# ---------------------------------------------------------------------------
# Running mtrec and checking what it saved


def mtrec(*args, timeout=600, limit_memory=False):
    """(exit code, stdout, stderr, seconds) of `python -m mtrec ARGS`."""
    def memory_cap():  # a wrongly accepted giant model must not take the shared machine
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    start = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "mtrec", *args], capture_output=True,
                           text=True, cwd=ROOT, timeout=timeout,
                           preexec_fn=memory_cap if limit_memory else None)
        return r.returncode, r.stdout, r.stderr, time.monotonic() - start
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return -9, out, err, time.monotonic() - start


VERIFY = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
result = {"saved_models": {}, "checkpoints": {}}
request = json.loads(sys.argv[1])
for path in request.get("saved_models", []):
    try:
        model = tf.saved_model.load(path)
        assert "serving_default" in model.signatures, "no serving_default signature"
        result["saved_models"][path] = "ok"
    except Exception as e:
        result["saved_models"][path] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
for directory in request.get("checkpoints", []):
    try:
        prefix = tf.train.latest_checkpoint(directory)
        assert prefix, "no checkpoint"
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
        result["checkpoints"][directory] = int(prefix.rsplit("-", 1)[1])
    except Exception as e:
        result["checkpoints"][directory] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
print(json.dumps(result))
"""


def verify(saved_models=(), checkpoints=()):
    """Load each SavedModel and read each model_dir's latest checkpoint in a separate
    process that never imports mtrec: {"saved_models": {path: "ok" | error},
    "checkpoints": {dir: step | error}}."""
    r = subprocess.run([sys.executable, "-c", VERIFY, json.dumps(
        {"saved_models": list(saved_models), "checkpoints": list(checkpoints)})],
        capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise RuntimeError(f"the verifying process failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def versions(export_dir):
    if not os.path.isdir(export_dir):
        return []
    return sorted((d for d in os.listdir(export_dir) if d.isdigit()), key=int)


def temporaries(*dirs):
    """Temporary files left behind in dirs (not recursive, except export/<type>/)."""
    found = []
    for d in dirs:
        if os.path.isdir(d):
            found += [os.path.join(d, f) for f in os.listdir(d)
                      if f.startswith(".tmp-") or f.endswith("_temp") or ".tmp" in f]
    return found


def write_rows(path, rng, n, bad=None):
    """n good rows (and one bad cell: (line, column, cell)) in CONFIG's column order."""
    with open(path, "w") as f:
        for i in range(1, n + 1):
            row = [str(i % 2), str(int(i % 6 == 0)), f"u{rng.randrange(50)}",
                   str(rng.randrange(100)), str(rng.randrange(-10**15, 10**15)),
                   f"{rng.uniform(-100, 100):.3f}", f"{rng.uniform(-1, 1):.4f}"]
            if bad and bad[0] == i:
                row[COLUMNS.index(bad[1])] = bad[2]
            f.write(",".join(row) + "\n")
    return path


class Work:
    def __init__(self, root, rng):
        self.root, self.rng = root, rng
        self.config = os.path.join(root, "pipeline.config")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        self.train = write_rows(os.path.join(root, "train.csv"), rng, 64)
        self.eval = write_rows(os.path.join(root, "eval.csv"), rng, 24)
        self._base = None
        self.n = 0

    def dir(self, name):
        self.n += 1
        path = os.path.join(self.root, f"{name}-{self.n}")
        os.makedirs(path)
        return path

    def train_args(self, model_dir, *sets, data=None):
        return ["train", "--config", self.config, "--model_dir", model_dir,
                "--set", f"train_input_path={data or self.train}",
                *[a for s in sets for a in ("--set", s)]]

    def base_model(self):
        """A model_dir trained 10 steps (checkpoints 5 and 10, export/final/<v>)."""
        if self._base is None:
            path = os.path.join(self.root, "base-model")
            code, _, err, _ = mtrec(*self.train_args(path))
            if code:
                sys.exit(f"could not train the base model:\n{err[-3000:]}")
            self._base = path
        return self._base


# ---------------------------------------------------------------------------
# The classes: each try returns (outcome, why, input)


def concurrent_exports(work):
    model_dir = work.base_model()
    export_dir = os.path.join(work.root, "concurrent-exports")
    os.makedirs(export_dir, exist_ok=True)

    def one_try():
        rng = work.rng
        k, keep = rng.choice([2, 3]), rng.choice([1, 2, 3, 5])
        delays = sorted(round(rng.uniform(0, 1.5), 2) for _ in range(k))
        before = versions(export_dir)
        args = ["export", "--config", work.config, "--model_dir", model_dir, "--export_dir",
                export_dir, "--set", f"export_config.exports_to_keep={keep}"]
        procs = []
        for i, delay in enumerate(delays):
            time.sleep(delay - (delays[i - 1] if i else 0))
            procs.append(subprocess.Popen([sys.executable, "-m", "mtrec", *args], cwd=ROOT,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        runs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
        after = versions(export_dir)
        printed = [os.path.basename(out.strip().splitlines()[-1]) if out.strip() else None
                   for code, out, _ in runs if code == 0]
        checked = verify(saved_models=[os.path.join(export_dir, v) for v in after])
        bad = {p: e for p, e in checked["saved_models"].items() if e != "ok"}
        # Whatever the order of their prunes, the newest exports_to_keep of the versions
        # before and the new ones remain (each export prunes only what it saw before it).
        must_remain = sorted(set(before) | {v for v in printed if v}, key=int)[-keep:]
        gone = [v for v in must_remain if v not in after]
        lost = None
        if bad:
            lost = f"versions that do not load: {bad}"
        elif gone:
            lost = (f"versions pruned beyond exports_to_keep {keep}: {gone} (before: "
                    f"{before}, new: {printed}, after: {after})")
        elif len(set(printed)) != len(printed):
            lost = f"two exports claimed one version: {printed}"
        wrong = None
        missing = [v for v in printed if v not in after]
        if missing:
            wrong = f"printed versions that are not there: {missing}"
        leftover = temporaries(export_dir) or None
        results = [classify(code, out, err, expect="succeed", lost=lost, wrong=wrong,
                            leftover=leftover and f"left {leftover}")
                   for code, out, err in runs]
        return (*worst(results), f"{k} exports at +{delays} s, exports_to_keep {keep}, "
                f"{len(before)} versions before")
    return one_try


def bad_cells(work):
    def one_try():
        rng = work.rng
        n = rng.randint(16, 64)
        line = rng.randint(1, n)
        column, cell = rng.choice(BAD_CELLS)
        ignore = rng.random() < 0.25
        d = work.dir("cells")
        data = write_rows(os.path.join(d, "data.csv"), rng, n, (line, column, cell))
        sets = ["data_config.ignore_error=true"] if ignore else []
        code, out, err, _ = mtrec(*work.train_args(os.path.join(d, "model"), *sets, data=data))
        what = f"{column}={cell!r} at {data}:{line} of {n}" + (" (ignore_error)" if ignore
                                                              else "")
        if ignore:  # trains, and says it skipped the row
            wrong = None if re.search(r"\b[1-9]\d* (malformed|bad) rows", err) else \
                "ignore_error: no count of skipped rows in the log"
            return (*classify(code, out, err, expect="succeed", wrong=wrong), what)
        return (*classify(code, out, err, names=[f"{data}:{line}:", f"column {column!r}"]),
                what)
    return one_try


def bucket_ids(work):
    """An integer outside [0, num_buckets) (age: num_buckets 100, identity ids) is a bad
    row: one error naming file:line and the column; with ignore_error (a quarter of the
    tries) training goes on and logs the count of skipped rows."""
    def one_try():
        rng = work.rng
        n, value = rng.randint(16, 64), rng.choice(["100", "150", "1000000", "-1", "-7"])
        line = rng.randint(1, n)
        ignore = rng.random() < 0.25
        d = work.dir("buckets")
        data = write_rows(os.path.join(d, "data.csv"), rng, n, (line, "age", value))
        sets = ["data_config.ignore_error=true"] if ignore else []
        code, out, err, _ = mtrec(*work.train_args(os.path.join(d, "model"), *sets, data=data))
        what = f"age={value} (num_buckets 100) at {data}:{line} of {n}" + (
            " (ignore_error)" if ignore else "")
        if ignore:
            wrong = None if re.search(r"\b[1-9]\d* (malformed|bad) rows", err) else \
                "ignore_error: no count of skipped rows in the log"
            return (*classify(code, out, err, expect="succeed", wrong=wrong), what)
        return (*classify(code, out, err, names=[f"{data}:{line}:", "column 'age'",
                                                  "num_buckets"]), what)
    return one_try


def symlinks(work):
    tried = []

    def one_try():
        rng = work.rng
        name = LINKS[len(tried) % len(LINKS)]  # each link in turn, the rest at random
        tried.append(name)
        d = work.dir("links")
        model_dir = os.path.join(d, "model")
        trained = rng.random() < 0.5
        if trained:
            shutil.copytree(work.base_model(), model_dir, symlinks=True)
        else:
            os.makedirs(model_dir)
        link = os.path.join(model_dir, name)
        if os.path.isdir(link):
            shutil.rmtree(link)
        elif os.path.lexists(link):
            os.remove(link)  # the trained model_dir's own lock file or pipeline.config
        dangling = rng.random() < 0.3
        target = os.path.join(d, "outside" + ("-missing" if dangling else ""))
        content = f"precious {rng.random()}\n"
        if not dangling:
            if name == "export":
                os.makedirs(target)
                with open(os.path.join(target, "keep.txt"), "w") as f:
                    f.write(content)
            else:
                with open(target, "w") as f:
                    f.write(content)
        os.symlink(target, link)

        def snapshot():
            if not os.path.lexists(target):
                return None
            if os.path.isdir(target):
                return sorted(os.listdir(target)), open(os.path.join(target, "keep.txt")).read()
            st = os.stat(target)
            return open(target).read(), st.st_mtime_ns, st.st_size
        before = snapshot()
        code, out, err, _ = mtrec(*work.train_args(model_dir, "train_config.num_steps=20",
                                                   f"eval_input_path={work.eval}"))
        lost = None
        if snapshot() != before:
            lost = f"the link's target {target} changed: {before!r} -> {snapshot()!r}"
        elif not os.path.islink(link):
            lost = f"the link {link} was replaced"
        elif trained:
            step = verify(checkpoints=[model_dir])["checkpoints"][model_dir]
            if not isinstance(step, int) or step < 10:
                lost = f"the checkpoint of step 10 no longer restores: {step}"
        return (*classify(code, out, err, names=[link, "symbolic link"], lost=lost),
                f"{name} -> {'missing ' if dangling else ''}{'dir' if name == 'export' else 'file'}"
                f" in a {'trained' if trained else 'new'} model_dir")
    return one_try


def can_mount(root):
    if os.geteuid() != 0:
        return "not root, so `mount -t tmpfs` is not allowed"
    probe = os.path.join(root, "mount-probe")
    os.makedirs(probe, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", probe],
                       capture_output=True, text=True)
    if r.returncode:
        return f"`mount -t tmpfs` failed: {r.stderr.strip() or r.returncode}"
    subprocess.run(["umount", probe], check=True)
    return None


def fill(path, leave, rng):
    """Fill the file system of path but `leave` bytes (in whole pages)."""
    st = os.statvfs(path)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    with open(os.path.join(path, "filler"), "wb") as f:
        while size > 0:
            chunk = min(size, 1 << 20)
            try:
                f.write(os.urandom(chunk) if rng.random() < 0.01 else b"\0" * chunk)
                f.flush()
            except OSError:
                break
            size -= chunk


def full_disk(work):
    tried = []

    def one_try():
        rng = work.rng
        op = ["train", "export", "predict"][len(tried) % 3]  # each in turn
        tried.append(op)
        need = {"train": 260_000, "export": 170_000, "predict": 60_000}[op]
        leave = rng.choice([0, rng.randrange(0, need), rng.randrange(need // 3, need * 3 // 2)])
        d = work.dir("disk")
        mnt = os.path.join(d, "mnt")
        os.makedirs(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", mnt], check=True)
        try:
            model_dir = os.path.join(mnt, "model")
            shutil.copytree(work.base_model(), model_dir, symlinks=True)
            old_export = os.path.join(model_dir, "export", "final")
            old_versions = [os.path.join(old_export, v) for v in versions(old_export)]
            predict_in = write_rows(os.path.join(d, "predict.csv"), rng, 2000)
            fill(mnt, leave, rng)
            export_dir = os.path.join(mnt, "exports")
            out_csv = os.path.join(mnt, "scores.csv")
            if op == "train":
                args = work.train_args(model_dir, "train_config.num_steps=20")
            elif op == "export":
                args = ["export", "--config", work.config, "--model_dir", model_dir,
                        "--export_dir", export_dir]
            else:
                args = ["predict", "--saved_model", old_versions[0], "--input", predict_in,
                        "--output", out_csv, "--reserved_cols", "user", "--batch_size",
                        str(rng.choice([64, 256, 1024]))]
            code, out, err, _ = mtrec(*args)
            os.remove(os.path.join(mnt, "filler"))
            new = [os.path.join(export_dir, v) for v in versions(export_dir)]
            now = [os.path.join(old_export, v) for v in versions(old_export)]
            checked = verify(saved_models=sorted(set(old_versions + now + new)),
                             checkpoints=[model_dir])
            step = checked["checkpoints"][model_dir]
            # An earlier export may be pruned (exports_to_keep 1) once a newer one loads.
            newer = [p for p in now if p not in old_versions
                     and checked["saved_models"][p] == "ok"]
            bad_old = [p for p in old_versions if (checked["saved_models"][p] != "ok"
                                                   and (os.path.exists(p) or not newer))]
            bad_old += [p for p in now if checked["saved_models"][p] != "ok"]
            lost = wrong = None
            if not isinstance(step, int) or step < 10:
                lost = f"the last good checkpoint (step 10) no longer restores: {step}"
            elif bad_old:
                lost = f"earlier exports no longer load: {bad_old}"
            if code == 0:
                if op == "train" and step != 20:
                    wrong = f"train exited 0 with its latest checkpoint at step {step}"
                if op == "export" and (len(new) != 1 or checked["saved_models"][new[0]] != "ok"):
                    wrong = f"export exited 0 but published {new}: {checked['saved_models']}"
                if op == "predict":
                    lines = open(out_csv).read().count("\n") if os.path.exists(out_csv) else 0
                    if lines != 2001:
                        wrong = f"predict exited 0 with {lines} of 2001 lines"
            else:
                if op == "export" and new:
                    wrong = f"a failed export published {new}"
                if op == "predict" and os.path.exists(out_csv):
                    wrong = "a failed predict left its output file"
            left = temporaries(mnt, model_dir, export_dir,
                               *[os.path.join(model_dir, "export", t)
                                 for t in os.listdir(os.path.join(model_dir, "export"))])
            return (*classify(code, out, err, expect="either", lost=lost, wrong=wrong,
                              names=[("disk full", "No space left on device")],
                              leftover=left and f"left {left}"),
                    f"{op} with {leave:,} bytes free")
        finally:
            subprocess.run(["umount", mnt], check=False)
    return one_try


def available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory(work):
    def one_try():
        rng = work.rng
        avail = available_bytes()
        near = rng.uniform(0.3, 1.5)  # one copy of the biggest part, as a share of memory
        kind = rng.choice(["hash absurd", "hash near RAM", "embedding_dim", "hidden absurd",
                           "hidden near RAM", "num_expert", "num_class", "batch_size"])
        text = CONFIG
        old_user = 'input_names: "user" hash_bucket_size: 100 embedding_dim: 4'
        if kind == "hash absurd":
            v = rng.choice([10**12, 10**15, 2**63 - 1, 2**64 - 1, 4294967295])
            text = text.replace(old_user, f'input_names: "user" hash_bucket_size: {v} '
                                          'embedding_dim: 4')
        elif kind == "hash near RAM":
            v = int(avail * near / 16)
            text = text.replace(old_user, f'input_names: "user" hash_bucket_size: {v} '
                                          'embedding_dim: 4')
        elif kind == "embedding_dim":
            v = rng.choice([10**6, 10**8, 4 * 10**9])
            text = text.replace(old_user, f'input_names: "user" hash_bucket_size: 100 '
                                          f'embedding_dim: {v}')
        elif kind == "hidden absurd":
            v = rng.choice(["[2147483647]", "[100000, 100000, 100000]", "[4294967295]"])
            text = text.replace("hidden_units: [8]", f"hidden_units: {v}")
        elif kind == "hidden near RAM":
            a = rng.choice([20000, 40000, 60000])
            b = max(1, int(avail * near / 4 / 2 / a))  # two experts of Dense(a) + Dense(b)
            v = f"[{a}, {b}]"
            text = text.replace("hidden_units: [8]", f"hidden_units: {v}")
        elif kind == "num_expert":
            v = rng.choice([10**5, 10**6, 10**9, 4294967295])
            text = text.replace("num_expert: 2", f"num_expert: {v}")
        elif kind == "num_class":
            v = rng.choice([2**31, 2**32 - 1, int(avail * near / 16)])
            text = text.replace('label_name: "clk" dnn', f'label_name: "clk" num_class: {v} dnn')
        else:
            v = rng.choice([2**31, 4294967295, int(avail * near / 4 / 40)])
            text = text.replace("batch_size: 8", f"batch_size: {v}")
        d = work.dir("memory")
        path = os.path.join(d, "pipeline.config")
        with open(path, "w") as f:
            f.write(text)
        code, out, err, seconds = mtrec("check", "--config", path, timeout=120,
                                        limit_memory=True)
        result = classify(code, out, err, seconds, names=[f"{path}:"],
                          limit=MEMORY_LIMIT_SECONDS)
        if result[0] == "clear" and not re.search(re.escape(path) + r":\d+: \D*\d", err):
            result = ("unclear", f"no line of the config with numbers: {result[1]}")
        return (*result, f"{kind}: {v} ({seconds:.1f} s)")
    return one_try


def deep_nesting(work):
    def one_try():
        rng = work.rng
        depth = rng.randint(1000, 10000)
        kind = rng.choice(["st_params struct", "st_params list", "--set path", "--set value",
                           "--edit_config_json object", "--edit_config_json value",
                           "--edit_config_json number"])
        args, names, path = [], [], work.config
        if kind.startswith("st_params"):
            if kind.endswith("struct"):
                nested = 'fields { key: "a" value { struct_value { ' * depth + "} } }" * depth
            else:
                nested = ('fields { key: "a" value { list_value { values { struct_value { '
                          * depth + "} } } } }" * depth)
            text = CONFIG.replace(
                '  feature_groups { group_name: "all"',
                '  backbone { blocks { name: "b" keras_layer { class_name: "MLP" st_params { '
                + nested + " } } } }\n" + '  feature_groups { group_name: "all"')
            path = os.path.join(work.dir("deep"), "pipeline.config")
            with open(path, "w") as f:
                f.write(text)
            names = [path]
        elif kind == "--set path":
            args = ["--set", "model_config." + "mmoe." * depth + "num_expert=3"]
            names = ["override"]
        elif kind == "--set value":
            args = ["--set", "data_config.batch_size=" + "[" * depth + "]" * depth]
            names = ["data_config.batch_size"]
        elif kind == "--edit_config_json object":
            args = ["--edit_config_json", '{"a": ' * depth + "1" + "}" * depth]
            names = ["--edit_config_json"]
        elif kind == "--edit_config_json number":  # past json's 4300-digit limit
            args = ["--edit_config_json", '{"data_config.batch_size": ' + "9" * depth + "}"]
            names = ["--edit_config_json"]
        else:
            args = ["--edit_config_json", '{"data_config.batch_size": ' + "[" * depth
                    + "]" * depth + "}"]
            names = ["--edit_config_json"]
        code, out, err, seconds = mtrec("check", "--config", path, *args, timeout=120)
        return (*classify(code, out, err, seconds, names=names, limit=MEMORY_LIMIT_SECONDS),
                f"{kind}, depth {depth}")
    return one_try


CLASSES = {  # name: (factory, tries as a function of N)
    "concurrent_exports": (concurrent_exports, lambda n: n),
    "bad_cells": (bad_cells, lambda n: 2 * n),
    "bucket_ids": (bucket_ids, lambda n: n),
    "symlinks": (symlinks, lambda n: 2 * n),
    "full_disk": (full_disk, lambda n: 2 * n),
    "memory": (memory, lambda n: 5 * n),
    "deep_nesting": (deep_nesting, lambda n: 5 * n),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=2, help="N (see the module docstring)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    rng = random.Random(seed)
    names = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = [c for c in names if c not in CLASSES]
    if unknown:
        parser.error(f"unknown classes {unknown}; choose from {list(CLASSES)}")
    root = tempfile.mkdtemp(prefix="mtrec-faults-")
    work = Work(root, rng)
    counts, skipped, odd = {}, {}, []
    start = time.monotonic()
    print(f"fault classes: tries N={args.tries}, seed {seed}, work dir {root}", flush=True)
    try:
        for name in names:
            factory, tries = CLASSES[name]
            if name == "full_disk":
                reason = can_mount(root)
                if reason:
                    skipped[name] = reason
                    print(f"{name}: skipped: {reason}", flush=True)
                    continue
            one_try = factory(work)
            counts[name] = {}
            class_start = time.monotonic()
            for i in range(tries(args.tries)):
                outcome, why, what = one_try()
                counts[name][outcome] = counts[name].get(outcome, 0) + 1
                print(f"  {name} #{i + 1}: {outcome}: {what} -- {why}", flush=True)
                if outcome != "clear":
                    odd.append((name, what, outcome, why))
            print(f"{name}: {counts[name]} in {time.monotonic() - class_start:.0f} s",
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(counts, skipped))
    print(f"\nseed {seed}, {time.monotonic() - start:.0f} s")
    if odd:
        print("\nNot clear:")
        for name, what, outcome, why in odd:
            print(f"  {name}: {outcome}: {what} -- {why}")
    return 1 if odd else 0


if __name__ == "__main__":
    sys.exit(main())
