#!/usr/bin/env python
"""Peer run: torch-rechub 0.9.0 MMOE / ESMM on the speed workload, one epoch, CPU torch.

Run with the torch peer venv's python (make_venvs.py), e.g.
  /tmp/mtrec_peers/torch/bin/python scripts/bench/peers/run_rechub.py --model mmoe \
      --train /tmp/mtrec_speed/train.csv --test /tmp/mtrec_speed/test.csv \
      --batch_size 2048 --threads 2
Prints one JSON line on stdout (everything else goes to stderr).

torch-rechub 0.9.0 runs unchanged on torch 2.13. Data go in as its docs and examples do:
x = {column: numpy array}, y = numpy label matrix, DataGenerator(x, y).generate_dataloader(
batch_size=...) (a per-row dict Dataset collated by torch's default collate, shuffle=True),
and the library's MTLTrainer(optimizer Adam lr 1e-3, weight_decay 0 -- its default is 1e-5 --
and no regularization).

Training is `MTLTrainer.train_one_epoch(train_dataloader)`: the library's own training loop.
MTLTrainer.fit is that loop plus a validation pass over a required val loader, early stopping
and a torch.save of the model, none of which the other libraries' timed fit does, so the
epoch is called directly.

Models, as the library builds them (differences from the common shape are the library's own,
with no switch to turn them off):
  MMOE(n_expert=4, expert_params={"dims": [256, 128]}, tower_params_list=[{"dims": [64]}] * 2,
       task_types=["classification"] * 2) over the 20 sparse embeddings + 5 dense values.
       torch-rechub's MLP puts a BatchNorm1d after every Linear (experts, towers, and its
       gates, which are Linear(input, 4) + BatchNorm1d + softmax); dropout 0.
  ESMM(user_features=c0..c9, item_features=c10..c19, ctr_params = cvr_params =
       {"dims": [256, 128, 64]}) -- torch-rechub's ESMM takes sparse features only (it
       concatenates per-field embeddings; dense values are not part of its input), so d0..d4
       are not used by this model. The user/item split only orders the concatenation.
       Outputs [pcvr, pctr, pctcvr]; the trainer's loss for ESMM is BCE(pctr, click) +
       BCE(pctcvr, click*conversion) (labels y = [conversion, click, click*conversion]).
       MLP layers again carry BatchNorm1d.
  Embeddings: SparseFeature(vocab_size = ids seen in training + 1, embed_dim=16).

Timing: preprocess_s = read_csv + LabelEncoder on train; build_s = features, model, trainer,
DataGenerator; fit_s = train_one_epoch; end_to_end_s = preprocess_s + build_s + fit_s.
steady_ex_per_s: a forward pre-hook on the model stamps the start of every batch's forward
pass; the window runs from the start of batch --warmup_batches to the return of the epoch.
The per-row Dataset + default collate is the library's data path, so its cost is part of the
fit time and of the steady rate. Evaluation (eval_s): test CSV, PredictDataset +
MTLTrainer.predict, AUCs; not part of end_to_end_s.
"""
import os
import sys
import tempfile
import time

T_START = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402


def main():
    args = pc.parser(__doc__).parse_args()
    out = pc.claim_stdout()

    import numpy as np
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(args.threads)
    import torch_rechub
    from torch.utils.data import DataLoader
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import ESMM, MMOE
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator, PredictDataset

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    import_s = time.perf_counter() - T_START

    t0 = time.perf_counter()
    frame, encoders = pc.read_and_encode(args.train, args.nrows)
    preprocess_s = time.perf_counter() - t0
    rows = len(frame)

    t0 = time.perf_counter()
    vocab = pc.vocabulary_sizes(encoders, args.vocab_size)
    sparse = [SparseFeature(c, vocab_size=vocab[c], embed_dim=pc.EMBEDDING_DIM)
              for c in pc.SPARSE]
    click = frame["click"].values
    conversion = frame["conversion"].values
    if args.model == "mmoe":
        features = sparse + [DenseFeature(d) for d in pc.DENSE]
        task_types = ["classification", "classification"]
        model = MMOE(features, task_types, n_expert=4, expert_params={"dims": [256, 128]},
                     tower_params_list=[{"dims": [64]}, {"dims": [64]}])
        y = np.stack([click, conversion], axis=1)
        used = pc.SPARSE + pc.DENSE
        columns = {"click": 0, "conversion": 1}
    else:
        task_types = ["classification"] * 3
        model = ESMM(sparse[:10], sparse[10:], cvr_params={"dims": [256, 128, 64]},
                     ctr_params={"dims": [256, 128, 64]})
        y = np.stack([conversion, click, click * conversion], axis=1)
        used = pc.SPARSE
        columns = {"click": 1, "conversion": 2}  # pctr, pctcvr
    x = {name: frame[name].values for name in used}
    work = tempfile.mkdtemp(prefix="rechub_")
    trainer = MTLTrainer(model, task_types=task_types, optimizer_fn=torch.optim.Adam,
                         optimizer_params={"lr": pc.LEARNING_RATE, "weight_decay": 0.0},
                         n_epoch=1, device="cpu", model_path=work)
    # the val/test slots are required by the generator's signature; unused here
    train_loader, _, _ = DataGenerator(x, y).generate_dataloader(
        x_val=x, y_val=y, x_test=x, y_test=y, batch_size=args.batch_size)
    build_s = time.perf_counter() - t0

    marks = []
    hook = model.register_forward_pre_hook(lambda module, inputs: marks.append(
        time.perf_counter()))
    t0 = time.perf_counter()
    trainer.train_one_epoch(train_loader)
    t_end = time.perf_counter()
    hook.remove()
    fit_s = t_end - t0
    rss_fit = pc.peak_rss_mb()
    del x, train_loader

    t0 = time.perf_counter()
    test = pc.read_test(args.test, encoders, args.nrows)
    loader = DataLoader(PredictDataset({name: test[name].values for name in used}),
                        batch_size=args.batch_size, shuffle=False)
    pred = np.asarray(trainer.predict(trainer.model, loader))
    auc_click = pc.auc(test["click"].values, pred[:, columns["click"]])
    auc_conv = pc.auc(test["conversion"].values, pred[:, columns["conversion"]])
    eval_s = time.perf_counter() - t0
    os.rmdir(work)

    pc.emit(out, {
        "library": "torch-rechub", "version": torch_rechub.__version__,
        "model": args.model, "backend": f"torch {torch.__version__}", "rows": rows,
        "batch_size": args.batch_size, "batches": len(marks), "import_s": import_s,
        "preprocess_s": preprocess_s, "build_s": build_s, "fit_s": fit_s,
        "end_to_end_s": preprocess_s + build_s + fit_s,
        "steady_ex_per_s": pc.steady_rate(marks, t_end, rows, args.batch_size,
                                          args.warmup_batches, marks_are_batch_ends=False),
        "warmup_batches": args.warmup_batches,
        "peak_rss_mb": rss_fit, "peak_rss_mb_final": pc.peak_rss_mb(), "eval_s": eval_s,
        "auc_click": auc_click, "auc_conversion": auc_conv,
        "auc_note": ("click: pctr; conversion: pctcvr; ESMM input: sparse only"
                     if args.model == "esmm" else "click, conversion: task outputs"),
        "threads": args.threads, "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(), "shuffle": True,
    })


if __name__ == "__main__":
    main()
