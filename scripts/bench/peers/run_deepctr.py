#!/usr/bin/env python
"""Peer run: DeepCTR 0.9.4 (TensorFlow) MMOE / ESMM on the speed workload, one epoch.

Run with the TF peer venv's python (make_venvs.py), e.g.
  /tmp/mtrec_peers/tf/bin/python scripts/bench/peers/run_deepctr.py --model mmoe \
      --train /tmp/mtrec_speed/train.csv --test /tmp/mtrec_speed/test.csv \
      --batch_size 2048 --threads 2
Prints one JSON line on stdout (everything else goes to stderr).

How it runs on TensorFlow 2.21: DeepCTR is written against tf.keras 2 (`tensorflow.keras`
imports, Keras-2 layer internals). TF 2.21's own Keras is Keras 3. The venv therefore also
has `tf_keras` 2.21.0 (the Keras 2 line, published for this) and this script sets
TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, so `tensorflow.keras` *is* tf_keras and
DeepCTR runs as it was written. No DeepCTR source is changed. (`--keras 3` leaves the variable
unset, i.e. DeepCTR on Keras 3; it happens to build and train too, but that is not the
configuration DeepCTR supports, so the benchmark uses the default `--keras legacy`.)

DeepCTR's `import deepctr` starts a thread that asks PyPI for the newest release (requests,
no timeout) and prints a notice. The script points that one request at a closed local port
(HTTPS_PROXY=http://127.0.0.1:9, set only in this process) so it fails at once and makes no
outbound call; nothing else in the run uses the network.

Models, as DeepCTR's own functions build them (deepctr.models.multitask):
  MMOE(num_experts=4, expert_dnn_hidden_units=(256, 128), gate_dnn_hidden_units=() -- i.e.
       one softmax Dense per task over the input, tower_dnn_hidden_units=(64,), 1-unit
       sigmoid output), tasks click and conversion.
  ESMM(tower_dnn_hidden_units=(256, 128, 64)) for the CTR and the CVR tower, outputs pctr
       and pctcvr = pctr * pcvr, losses on click and click*conversion.
  Embeddings: SparseFeat(vocabulary_size = ids seen in training + 1, embedding_dim=16),
  DenseFeat(1) for d0..d4; l2_reg_embedding=0, l2_reg_dnn=0, dropout 0, no BN;
  Adam(lr=1e-3), binary_crossentropy per output; model.fit(batch_size, epochs=1,
  shuffle=True -- Keras' default) on the numpy columns, as DeepCTR's examples do.

Timing: preprocess_s = read_csv + LabelEncoder on train; build_s = model construction and
compile; fit_s = model.fit; end_to_end_s = preprocess_s + build_s + fit_s (CSV -> trained
model). steady_ex_per_s from a Keras Callback's on_train_batch_end timestamps, after the
first --warmup_batches batches. The test CSV is read and predicted afterwards (eval_s, not in
end_to_end_s). peak_rss_mb is ru_maxrss right after the fit; peak_rss_mb_final after eval.
"""
import os
import sys
import time

T_START = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402


def main():
    p = pc.parser(__doc__)
    p.add_argument("--keras", choices=["legacy", "3"], default="legacy",
                   help="legacy: tf_keras via TF_USE_LEGACY_KERAS=1 (default); 3: Keras 3")
    args = p.parse_args()
    out = pc.claim_stdout()

    if args.keras == "legacy":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    else:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["HTTPS_PROXY"] = os.environ["https_proxy"] = "http://127.0.0.1:9"

    import numpy as np
    import tensorflow as tf

    if args.threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import deepctr
    from deepctr.feature_column import DenseFeat, SparseFeat, get_feature_names
    from deepctr.models.multitask import ESMM, MMOE

    keras = tf.keras
    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)
    import_s = time.perf_counter() - T_START

    # --- CSV -> encoded frame
    t0 = time.perf_counter()
    frame, encoders = pc.read_and_encode(args.train, args.nrows)
    preprocess_s = time.perf_counter() - t0
    rows = len(frame)

    # --- model
    t0 = time.perf_counter()
    vocab = pc.vocabulary_sizes(encoders, args.vocab_size)
    columns = ([SparseFeat(c, vocabulary_size=vocab[c], embedding_dim=pc.EMBEDDING_DIM)
                for c in pc.SPARSE] + [DenseFeat(d, 1) for d in pc.DENSE])
    if args.model == "mmoe":
        model = MMOE(columns, num_experts=4, expert_dnn_hidden_units=(256, 128),
                     tower_dnn_hidden_units=(64,), gate_dnn_hidden_units=(),
                     l2_reg_embedding=0.0, l2_reg_dnn=0.0, seed=args.seed, dnn_dropout=0.0,
                     dnn_use_bn=False, task_types=("binary", "binary"),
                     task_names=("click", "conversion"))
    else:
        model = ESMM(columns, tower_dnn_hidden_units=(256, 128, 64), l2_reg_embedding=0.0,
                     l2_reg_dnn=0.0, seed=args.seed, dnn_dropout=0.0, dnn_use_bn=False,
                     task_types=("binary", "binary"), task_names=("ctr", "ctcvr"))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=pc.LEARNING_RATE),
                  loss=["binary_crossentropy", "binary_crossentropy"])
    names = get_feature_names(columns)
    x = {name: frame[name].values for name in names}
    click = frame["click"].values
    second = frame["conversion"].values if args.model == "mmoe" else (
        frame["click"].values * frame["conversion"].values)
    build_s = time.perf_counter() - t0

    class BatchTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.marks = []

        def on_train_batch_end(self, batch, logs=None):
            self.marks.append(time.perf_counter())

    timer = BatchTimer()
    t0 = time.perf_counter()
    model.fit(x, [click, second], batch_size=args.batch_size, epochs=1, verbose=2,
              callbacks=[timer])
    t_end = time.perf_counter()
    fit_s = t_end - t0
    rss_fit = pc.peak_rss_mb()
    del x

    # --- evaluation on the test CSV (not part of end_to_end_s)
    t0 = time.perf_counter()
    test = pc.read_test(args.test, encoders, args.nrows)
    pred = model.predict({name: test[name].values for name in names},
                         batch_size=args.batch_size, verbose=0)
    p_first, p_second = (np.asarray(a).reshape(-1) for a in pred)
    auc_click = pc.auc(test["click"].values, p_first)
    auc_conv = pc.auc(test["conversion"].values, p_second)
    eval_s = time.perf_counter() - t0

    import importlib.metadata as md
    keras_impl = (f"tf_keras {md.version('tf_keras')}" if args.keras == "legacy"
                  else f"keras {md.version('keras')}")
    pc.emit(out, {
        "library": "deepctr", "version": deepctr.__version__, "model": args.model,
        "backend": f"tensorflow {tf.__version__}, {keras_impl}",
        "keras_mode": args.keras, "rows": rows, "batch_size": args.batch_size,
        "batches": len(timer.marks), "import_s": import_s, "preprocess_s": preprocess_s,
        "build_s": build_s, "fit_s": fit_s, "end_to_end_s": preprocess_s + build_s + fit_s,
        "steady_ex_per_s": pc.steady_rate(timer.marks, t_end, rows, args.batch_size,
                                          args.warmup_batches, marks_are_batch_ends=True),
        "warmup_batches": args.warmup_batches,
        "peak_rss_mb": rss_fit, "peak_rss_mb_final": pc.peak_rss_mb(), "eval_s": eval_s,
        "auc_click": auc_click, "auc_conversion": auc_conv,
        "auc_note": ("click: pctr; conversion: pctcvr" if args.model == "esmm"
                     else "click, conversion: task outputs"),
        "threads": args.threads,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "shuffle": True,
    })


if __name__ == "__main__":
    main()
