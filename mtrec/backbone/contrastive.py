"""Shape rules and builders of the contrastive-learning blocks (CL4SRec): SeqAugment /
SeqAugmentOps (mtrec.layers.seq_aug) and AuxiliaryLoss (mtrec.layers.contrastive). No
TensorFlow at import: the builders import their layers when called."""
from mtrec.backbone.shapes import sequence_input
from mtrec.backbone.specs import Tensor, describe, is_list

LOSS_TYPES = ("nce_loss", "info_nce", "l2_loss")


def infer_seq_aug(p, x):
    """The input's structure, unchanged: [history, mask] or [history, mask, target]."""
    sequence_input(x, "SeqAugment", need_target=False)
    for field in ("mask_rate", "crop_rate", "reorder_rate"):
        if not 0.0 <= getattr(p, field) <= 1.0:
            raise ValueError(f"SeqAugment {field} must be in [0, 1], got {getattr(p, field)}.")
    return list(x)


def infer_auxiliary_loss(p, x):
    """Two (batch, h) tensors of one width -> (batch, 1)."""
    if p.loss_type not in LOSS_TYPES:
        raise ValueError(f"AuxiliaryLoss needs loss_type {', '.join(LOSS_TYPES)}; got "
                         f"{p.loss_type!r}.")
    if p.temperature <= 0:
        raise ValueError(f"AuxiliaryLoss temperature must be > 0, got {p.temperature}.")
    ok = (is_list(x) and len(x) == 2 and all(isinstance(s, Tensor) and len(s.shape) == 1
                                             for s in x))
    if not ok:
        raise ValueError("AuxiliaryLoss takes a list of two (batch, h) tensors (set "
                         f"merge_inputs_into_list: true), got {describe(x)}.")
    if None not in (x[0].width, x[1].width) and x[0].width != x[1].width:
        raise ValueError(f"AuxiliaryLoss compares two encodings of one width, got widths "
                         f"{x[0].width} and {x[1].width}.")
    return Tensor((1,))


def seq_aug(p, l2, name, x):
    from mtrec.layers.seq_aug import SeqAugment
    return SeqAugment(p.mask_rate, p.crop_rate, p.reorder_rate, name=name)


def auxiliary_loss(p, l2, name, x):
    from mtrec.layers.contrastive import AuxiliaryLoss
    return AuxiliaryLoss(p.loss_type, p.loss_weight, p.temperature, name=name)
