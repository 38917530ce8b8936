"""SEQ-UNET and friends: networks, presets, losses, slice-sharing prediction.

This package knows tensors, not files.  Shapes: a batch of sequences is
``(B, T, C, H, W)`` (``T`` consecutive slices, the target is the centre one
``T // 2``); models return centre-slice logits ``(B, num_classes, H, W)``.

>>> from orbitseg.model import build_model, describe
>>> model = build_model("default")          # or "paper", a ModelConfig, or a recorded dict
>>> print(describe(model))                  # doctest: +SKIP
"""

from orbitseg.model.blocks import ConvBlock, Decoder, DoubleConv, Encoder, UpStage, make_act, make_norm
from orbitseg.model.config import (PRESETS, ModelConfig, Preset, TrainingRecipe, build_model, count_parameters,
                                   describe, get_preset, model_config, preset_names)
from orbitseg.model.convlstm import BiConvLSTM, ConvLSTM, ConvLSTMCell
from orbitseg.model.losses import LOSSES, dice_ce_loss, get_loss, paper_dice_loss
from orbitseg.model.slice_inference import (PRECISIONS, build_sequences, native_bfloat16, predict_volume_slices,
                                    resolve_precision, sequence_indices)
from orbitseg.model.seq_unet import SeqUNet, UNet2D, probabilities

__all__ = [
    "ConvBlock", "DoubleConv", "Encoder", "UpStage", "Decoder", "make_norm", "make_act",
    "ConvLSTMCell", "ConvLSTM", "BiConvLSTM", "SeqUNet", "UNet2D", "probabilities",
    "ModelConfig", "TrainingRecipe", "Preset", "PRESETS", "get_preset", "preset_names", "model_config",
    "build_model", "count_parameters", "describe",
    "paper_dice_loss", "dice_ce_loss", "LOSSES", "get_loss",
    "sequence_indices", "build_sequences", "predict_volume_slices", "PRECISIONS", "native_bfloat16",
    "resolve_precision",
]
