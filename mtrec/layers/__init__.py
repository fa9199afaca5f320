"""Reusable Keras 3 layers: the maths of every model lives here, one concept per file."""
from mtrec.layers.aitm import AITMAttention, AITModule
from mtrec.layers.apg import APGDense
from mtrec.layers.cgc import CGC, PLE
from mtrec.layers.cross import Cross
from mtrec.layers.dnn import DNN
from mtrec.layers.dot_interaction import DotInteraction
from mtrec.layers.fm import FM
from mtrec.layers.gate_nu import GateNU
from mtrec.layers.hmoe import HMoE
from mtrec.layers.input_layer import GroupInput
from mtrec.layers.m2m import M2M
from mtrec.layers.masknet import MaskBlock, MaskNet
from mtrec.layers.meta_unit import MetaUnit
from mtrec.layers.mlp import MLP
from mtrec.layers.mmoe import MMoE
from mtrec.layers.pepnet import EPNet, PPNet
from mtrec.layers.senet import SENet
from mtrec.layers.star import STAR, PartitionedNormalization, StarTopologyDense
from mtrec.layers.tower import TaskTower

__all__ = ["AITMAttention", "AITModule", "APGDense", "CGC", "Cross", "DNN", "DotInteraction",
           "EPNet", "FM", "GateNU", "GroupInput", "HMoE", "M2M", "MLP", "MMoE", "MaskBlock",
           "MaskNet", "MetaUnit", "PLE", "PPNet", "PartitionedNormalization", "SENet", "STAR",
           "StarTopologyDense", "TaskTower"]
