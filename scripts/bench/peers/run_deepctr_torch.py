#!/usr/bin/env python
"""Peer run: DeepCTR-Torch 0.3.0 MMOE / ESMM on the speed workload, one epoch, CPU torch.

Run with the torch peer venv's python (make_venvs.py), e.g.
  /tmp/mtrec_peers/torch/bin/python scripts/bench/peers/run_deepctr_torch.py --model esmm \
      --train /tmp/mtrec_speed/train.csv --test /tmp/mtrec_speed/test.csv \
      --batch_size 2048 --threads 2
Prints one JSON line on stdout (everything else goes to stderr).

DeepCTR-Torch 0.3.0 has both models (deepctr_torch.models.multitask.MMOE and ESMM) and runs
unchanged on torch 2.13. Like DeepCTR, `import deepctr_torch` starts a PyPI version-check
thread; it is pointed at a closed local port (HTTPS_PROXY=http://127.0.0.1:9, this process
only) so it fails at once and makes no outbound call.

Models, as the library builds them:
  MMOE(num_experts=4, expert_dnn_hidden_units=(256, 128), gate_dnn_hidden_units=() -- one
       bias-free softmax Linear per task over the input, tower_dnn_hidden_units=(64,), then a
       Linear(64, 1) + the library's PredictionLayer (bias + sigmoid)), tasks click, conversion.
  ESMM(tower_dnn_hidden_units=(256, 128, 64)) for the CTR and CVR towers; outputs pctr and
       pctcvr = pctr * pcvr; losses on click and click*conversion.
  Embeddings: SparseFeat(vocabulary_size = ids seen in training + 1, embedding_dim=16),
  DenseFeat(1) for d0..d4; l2_reg_linear = l2_reg_embedding = l2_reg_dnn = 0, dropout 0,
  no BN. compile(torch.optim.Adam(lr=1e-3), ["binary_crossentropy"] * 2) -- note the
  library sums each task's log loss over the batch (reduction='sum') instead of averaging;
  that is its own loop, kept as is. model.fit(x, y, batch_size, epochs=1, verbose=2), whose
  DataLoader shuffles (shuffle=True, the default).

Timing: preprocess_s = read_csv + LabelEncoder on train; build_s = model construction and
compile; fit_s = model.fit (it also concatenates the columns into one tensor first);
end_to_end_s = preprocess_s + build_s + fit_s. steady_ex_per_s: the fit loop has no
per-batch callback, so a forward pre-hook on the model stamps the start of every batch's
forward pass; the window runs from the start of batch --warmup_batches to the return of
fit (so it holds the training steps of every later batch and the loading of all but the
first of them). The hook is removed before predicting. Evaluation (eval_s) reads the test
CSV and calls model.predict; it is not part of end_to_end_s.
"""
import os
import sys
import time

T_START = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402


def main():
    args = pc.parser(__doc__).parse_args()
    out = pc.claim_stdout()
    os.environ["HTTPS_PROXY"] = os.environ["https_proxy"] = "http://127.0.0.1:9"

    import numpy as np
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(args.threads)
    import deepctr_torch
    from deepctr_torch.inputs import DenseFeat, SparseFeat, get_feature_names
    from deepctr_torch.models.multitask import ESMM, MMOE

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    import_s = time.perf_counter() - T_START

    t0 = time.perf_counter()
    frame, encoders = pc.read_and_encode(args.train, args.nrows)
    preprocess_s = time.perf_counter() - t0
    rows = len(frame)

    t0 = time.perf_counter()
    vocab = pc.vocabulary_sizes(encoders, args.vocab_size)
    columns = ([SparseFeat(c, vocabulary_size=vocab[c], embedding_dim=pc.EMBEDDING_DIM)
                for c in pc.SPARSE] + [DenseFeat(d, 1) for d in pc.DENSE])
    common = dict(l2_reg_linear=0.0, l2_reg_embedding=0.0, l2_reg_dnn=0.0, seed=args.seed,
                  dnn_dropout=0.0, dnn_use_bn=False, task_types=("binary", "binary"),
                  device="cpu")
    if args.model == "mmoe":
        model = MMOE(columns, num_experts=4, expert_dnn_hidden_units=(256, 128),
                     gate_dnn_hidden_units=(), tower_dnn_hidden_units=(64,),
                     task_names=("click", "conversion"), **common)
    else:
        model = ESMM(columns, tower_dnn_hidden_units=(256, 128, 64),
                     task_names=("ctr", "ctcvr"), **common)
    model.compile(torch.optim.Adam(model.parameters(), lr=pc.LEARNING_RATE),
                  loss=["binary_crossentropy", "binary_crossentropy"])
    names = get_feature_names(columns)
    x = {name: frame[name].values for name in names}
    second = frame["conversion"].values if args.model == "mmoe" else (
        frame["click"].values * frame["conversion"].values)
    y = np.stack([frame["click"].values, second], axis=1)
    build_s = time.perf_counter() - t0

    marks = []
    hook = model.register_forward_pre_hook(lambda module, inputs: marks.append(
        time.perf_counter()))
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=2)
    t_end = time.perf_counter()
    hook.remove()
    fit_s = t_end - t0
    rss_fit = pc.peak_rss_mb()
    del x

    t0 = time.perf_counter()
    test = pc.read_test(args.test, encoders, args.nrows)
    pred = model.predict({name: test[name].values for name in names},
                         batch_size=args.batch_size)
    auc_click = pc.auc(test["click"].values, pred[:, 0])
    auc_conv = pc.auc(test["conversion"].values, pred[:, 1])
    eval_s = time.perf_counter() - t0

    pc.emit(out, {
        "library": "deepctr-torch", "version": deepctr_torch.__version__,
        "model": args.model, "backend": f"torch {torch.__version__}", "rows": rows,
        "batch_size": args.batch_size, "batches": len(marks), "import_s": import_s,
        "preprocess_s": preprocess_s, "build_s": build_s, "fit_s": fit_s,
        "end_to_end_s": preprocess_s + build_s + fit_s,
        "steady_ex_per_s": pc.steady_rate(marks, t_end, rows, args.batch_size,
                                          args.warmup_batches, marks_are_batch_ends=False),
        "warmup_batches": args.warmup_batches,
        "peak_rss_mb": rss_fit, "peak_rss_mb_final": pc.peak_rss_mb(), "eval_s": eval_s,
        "auc_click": auc_click, "auc_conversion": auc_conv,
        "auc_note": ("click: pctr; conversion: pctcvr" if args.model == "esmm"
                     else "click, conversion: task outputs"),
        "threads": args.threads, "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(), "shuffle": True,
    })


if __name__ == "__main__":
    main()
