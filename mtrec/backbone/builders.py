"""Builders of the catalogue's layers with typed params (mtrec.backbone.catalogue names
them): (params message, l2_regularization, name, input spec) -> Keras layer, or None for
the identity. The input spec is the block's validated input (mtrec.backbone.specs)."""
from mtrec.backbone.shapes import bst_options, numeric_output_form, ppnet_options
from mtrec.layers.aitm import AITModule
from mtrec.layers.bst import BST
from mtrec.layers.cgc import CGC, PLE
from mtrec.layers.cin import CIN
from mtrec.layers.cross import Cross
from mtrec.layers.dnn import dnn_args
from mtrec.layers.dot_interaction import DotInteraction
from mtrec.layers.fibinet import Bilinear, FiBiNet
from mtrec.layers.fm import FM
from mtrec.layers.gate_nu import GateNU
from mtrec.layers.highway import Highway
from mtrec.layers.masknet import MaskBlock, MaskNet
from mtrec.layers.mlp import MLP
from mtrec.layers.mmoe import MMoE
from mtrec.layers.numeric_embedding import AutoDisEmbedding, PeriodicEmbedding
from mtrec.layers.pepnet import PPNet
from mtrec.layers.senet import SENet
from mtrec.layers.sequence import DIN
from mtrec.layers.text_cnn import TextCNN
from mtrec.layers.weighted_gate import WeightedGate


def mlp(p, l2, name, x):
    return MLP.from_config_proto(p, l2, name=name)


def senet(p, l2, name, x):
    return SENet(p.reduction_ratio, p.num_squeeze_group, p.use_skip_connection,
                 p.use_output_layer_norm, l2, name=name)


def fm(p, l2, name, x):
    return FM(p.use_variant, name=name)


def dot_interaction(p, l2, name, x):
    return DotInteraction(p.self_interaction, p.skip_gather, name=name)


def cross(p, l2, name, x):
    return Cross(p.projection_dim, p.diag_scale, p.use_bias, p.preactivation or None, l2,
                 name=name)


def mmoe(p, l2, name, x):
    # Without expert_mlp the experts are the block's inputs.
    expert = p.expert_mlp if p.HasField("expert_mlp") else None
    return MMoE.from_config_proto(expert, p.num_task, p.num_expert, l2, name=name)


def cgc(p, l2, name, x):
    share = dnn_args(p.share_expert_net) if p.HasField("share_expert_net") else None
    return CGC(p.num_task, p.expert_num_per_task, p.share_num, dnn_args(p.task_expert_net),
               share, p.shared_gate, l2, name=name)


def ple(p, l2, name, x):
    levels = [{"expert_num_per_task": n.expert_num_per_task, "share_num": n.share_num,
               "task_expert_net": dnn_args(n.task_expert_net),
               "share_expert_net": dnn_args(n.share_expert_net)}
              for n in p.extraction_networks]
    return PLE(p.num_task, levels, l2, name=name)


def ppnet(p, l2, name, x):
    """One task of mtrec's PPNet (its output: a list of one tensor)."""
    return PPNet(**ppnet_options(p), l2_regularization=l2, name=name)


def gate_nu(p, l2, name, x):
    return GateNU(p.hidden_dim, p.output_dim or x.width, p.gamma, l2, name=name)


def aitm(p, l2, name, x):
    if not isinstance(x, list):  # a single input: nothing to transfer, the input itself
        return None
    transfer = dnn_args(p.transfer_mlp) if p.HasField("transfer_mlp") else None
    return AITModule(len(x) - 1, p.project_dim, query="own", stop_gradient=p.stop_gradient,
                     l2_regularization=l2, use_transfer=transfer is not None,
                     transfer_kwargs=transfer, name=name)


def _mask_block_args(p) -> dict:
    return {"output_size": p.output_size, "aggregation_size": p.aggregation_size,
            "reduction_factor": p.reduction_factor if p.HasField("reduction_factor") else 0.0,
            "input_layer_norm": p.input_layer_norm, "projection_dim": p.projection_dim}


def mask_block(p, l2, name, x):
    return MaskBlock(**_mask_block_args(p), l2_regularization=l2, name=name)


def masknet(p, l2, name, x):
    return MaskNet([_mask_block_args(b) for b in p.mask_blocks], p.use_parallel,
                   dnn_args(p.mlp) if p.HasField("mlp") else None, p.input_layer_norm, l2,
                   name=name)


def din(p, l2, name, x):
    attention = {}
    if p.HasField("attention_dnn"):
        mlp = p.attention_dnn
        rates = list(mlp.dropout_ratio)
        attention = {"hidden_units": list(mlp.hidden_units), "activation": mlp.activation,
                     "use_bn": mlp.use_bn, "use_bias": mlp.use_bias,
                     "kernel_initializer": mlp.initializer,
                     # EasyRec: missing trailing dropout values mean none.
                     "dropout_rate": rates + [0.0] * (len(mlp.hidden_units) - len(rates))}
        if not attention["hidden_units"]:
            attention.pop("hidden_units")
            attention["dropout_rate"] = 0.0
    return DIN({**attention, "attention_normalizer": p.attention_normalizer,
                "l2_regularization": l2}, p.need_target_feature, name=name)


def bst(p, l2, name, x):
    return BST(**bst_options(p), l2_regularization=l2, name=name)


def _mlp(p, field="mlp"):
    return dnn_args(getattr(p, field)) if p.HasField(field) else None


def _senet_args(p) -> dict:
    return {"reduction_ratio": p.reduction_ratio, "num_squeeze_group": p.num_squeeze_group,
            "use_skip_connection": p.use_skip_connection,
            "use_output_layer_norm": p.use_output_layer_norm}


def _bilinear_args(p) -> dict:
    return {"num_output_units": p.num_output_units, "bilinear_type": p.type,
            "use_plus": p.use_plus}


def bilinear(p, l2, name, x):
    return Bilinear(**_bilinear_args(p), l2_regularization=l2, name=name)


def fibinet(p, l2, name, x):
    return FiBiNet(_senet_args(p.senet),
                   _bilinear_args(p.bilinear) if p.HasField("bilinear") else None,
                   _mlp(p), l2, name=name)


def cin(p, l2, name, x):
    return CIN(list(p.hidden_feature_sizes), l2, name=name)


def auto_dis_embedding(p, l2, name, x):
    return AutoDisEmbedding(p.embedding_dim, p.num_bins, p.temperature, p.keep_prob,
                            numeric_output_form(p), name=name)


def periodic_embedding(p, l2, name, x):
    return PeriodicEmbedding(p.embedding_dim, p.sigma, p.add_linear_layer,
                             p.linear_activation, numeric_output_form(p), name=name)


def text_cnn(p, l2, name, x):
    return TextCNN.from_combiner(p, l2_regularization=l2, name=name)


def highway(p, l2, name, x):
    return Highway(p.emb_size, p.num_layers, p.activation, p.dropout_rate, p.init_gate_bias,
                   l2, name=name)


def gate(p, l2, name, x):
    return WeightedGate(p.weight_index, _mlp(p), l2, name=name)
