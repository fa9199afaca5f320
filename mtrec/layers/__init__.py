"""Reusable Keras 3 layers: the maths of every model lives here, one concept per file."""
from mtrec.layers.aitm import AITMAttention, AITModule
from mtrec.layers.apg import APGDense
from mtrec.layers.autoint import InteractingLayer
from mtrec.layers.cgc import CGC, PLE
from mtrec.layers.cin import CIN
from mtrec.layers.cmbf import CMBF, CrossModalBlock
from mtrec.layers.contrastive import AuxiliaryLoss
from mtrec.layers.cross import Cross
from mtrec.layers.dnn import DNN
from mtrec.layers.dot_interaction import DotInteraction
from mtrec.layers.fibinet import Bilinear, FiBiNet
from mtrec.layers.fm import FM
from mtrec.layers.fm_logits import FMLogits
from mtrec.layers.gate_nu import GateNU
from mtrec.layers.highway import Highway
from mtrec.layers.hmoe import HMoE
from mtrec.layers.input_layer import GroupInput
from mtrec.layers.m2m import M2M
from mtrec.layers.masknet import MaskBlock, MaskNet
from mtrec.layers.meta_unit import MetaUnit
from mtrec.layers.mlp import MLP
from mtrec.layers.mmoe import MMoE
from mtrec.layers.numeric_embedding import AutoDisEmbedding, PeriodicEmbedding
from mtrec.layers.pepnet import EPNet, PPNet
from mtrec.layers.rocket_launching import BoosterLightNets
from mtrec.layers.senet import SENet
from mtrec.layers.seq_aug import SeqAugment
from mtrec.layers.star import STAR, PartitionedNormalization, StarTopologyDense
from mtrec.layers.text_cnn import TextCNN
from mtrec.layers.token_embeddings import TokenEmbeddings
from mtrec.layers.tower import TaskTower
from mtrec.layers.uniter import Uniter
from mtrec.layers.weighted_gate import WeightedGate

__all__ = ["AITMAttention", "AITModule", "APGDense", "AutoDisEmbedding", "AuxiliaryLoss",
           "Bilinear", "BoosterLightNets", "CGC", "CIN", "CMBF", "Cross", "CrossModalBlock", "DNN",
           "DotInteraction", "EPNet", "FM", "FMLogits", "FiBiNet", "GateNU", "GroupInput", "HMoE",
           "Highway", "InteractingLayer", "M2M", "MLP", "MMoE", "MaskBlock", "MaskNet", "MetaUnit",
           "PLE", "PPNet", "PartitionedNormalization", "PeriodicEmbedding", "SENet", "STAR",
           "SeqAugment", "StarTopologyDense", "TaskTower", "TextCNN", "TokenEmbeddings", "Uniter",
           "WeightedGate"]
