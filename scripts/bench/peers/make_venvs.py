#!/usr/bin/env python
"""Create the peer libraries' virtualenvs for the speed benchmark (idempotent).

  python scripts/bench/peers/make_venvs.py --root /tmp/mtrec_peers

makes
  ROOT/tf     tensorflow 2.21.0 + tf_keras 2.21.0 + deepctr 0.9.4      (run_deepctr.py)
  ROOT/torch  torch 2.13.0 (CPU) + torch-rechub 0.9.0 + deepctr-torch 0.3.0
                                                     (run_rechub.py, run_deepctr_torch.py)
with the python running this script (`-m venv`), and writes ROOT/NAME/freeze.txt. The peers
are never installed into mtrec's own environment.

Recipe and why:
  * tf: tf_keras is the Keras 2 line for TF 2.21; run_deepctr.py sets TF_USE_LEGACY_KERAS=1
    so DeepCTR (written for tf.keras 2) gets it. deepctr's own requirements (h5py, requests)
    come with it.
  * torch: `pip install torch==2.13.0` first, alone (this machine's pip finds a CPU wheel of
    exactly that version on local disk; any other version or an unpinned torch would fetch a
    multi-GB CUDA build), then the peers with torch==2.13.0 repeated in the same command so
    pip cannot move it. deepctr-torch 0.3.0 imports `requests` (its PyPI version check) but
    does not declare it, so requests is installed explicitly. The script stops if torch is
    anything but 2.13.0 afterwards.
  * numpy / pandas / scikit-learn are pinned to the versions the peers were validated with.
A venv whose pinned packages are already at the right versions is left as it is.
"""
import argparse
import json
import os
import subprocess
import sys

TORCH = "torch==2.13.0"
COMMON = ["numpy==2.4.6", "pandas==3.1.1", "scikit-learn==1.9.1"]
VENVS = {
    "tf": [["tensorflow==2.21.0", "tf_keras==2.21.0", "deepctr==0.9.4"] + COMMON],
    "torch": [[TORCH], [TORCH, "torch-rechub==0.9.0", "deepctr-torch==0.3.0", "requests==2.34.2"]
              + COMMON],
}


def pinned(steps):
    return {spec.split("==")[0].lower().replace("_", "-"): spec.split("==")[1]
            for step in steps for spec in step if "==" in spec}


def installed(python, names):
    """{name: version or None} as the venv's importlib.metadata sees them."""
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: out[n] = None\n"
            "print(json.dumps(out))")
    result = subprocess.run([python, "-c", code] + list(names), capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


def up_to_date(python, steps) -> bool:
    want = pinned(steps)
    have = installed(python, want)
    return all(have[n] is not None and have[n].split("+")[0] == v for n, v in want.items())


def make(root: str, name: str, steps) -> str:
    path = os.path.join(root, name)
    python = os.path.join(path, "bin", "python")
    if not os.path.exists(python):
        print(f"[{name}] creating {path}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
    if up_to_date(python, steps):
        print(f"[{name}] up to date", file=sys.stderr)
    else:
        for step in steps:
            print(f"[{name}] pip install {' '.join(step)}", file=sys.stderr)
            subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check"]
                           + step, check=True)
        if not up_to_date(python, steps):
            have = installed(python, pinned(steps))
            raise SystemExit(f"[{name}] versions after install differ from the pins: {have}")
    if name == "torch":
        torch_version = installed(python, ["torch"])["torch"]
        if not torch_version or torch_version.split("+")[0] != TORCH.split("==")[1]:
            raise SystemExit(f"[torch] torch is {torch_version}, expected {TORCH}")
    freeze = subprocess.run([python, "-m", "pip", "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    with open(os.path.join(path, "freeze.txt"), "w", encoding="utf-8") as f:
        f.write(freeze)
    return python


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/mtrec_peers")
    parser.add_argument("--only", default="tf,torch", help="which venvs: tf,torch")
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    for name in args.only.split(","):
        python = make(args.root, name, VENVS[name])
        print(f"{name}: {python}")


if __name__ == "__main__":
    main()
