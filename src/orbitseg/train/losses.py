"""The presets' losses on SOFT targets ``(B, C, H, W)`` (fractions, background included).

Same maths as :mod:`orbitseg.model.losses` (which takes hard integer labels),
with the one-hot target replaced by the label fractions the preprocessing
stores: partial-volume pixels at a structure's border count partly.  A one-hot
target gives exactly the hard-label losses.

* ``dice_ce`` (default preset): softmax; ``1 - mean soft Dice`` over the
  foreground labels (batch Dice) + soft cross-entropy ``-sum_c g_c log p_c``.
* ``paper_dice`` (paper preset): sigmoid per label;
  ``sum_k w_k (1 - softDice_k)``, ``w_k = N / (sum g_k + 1)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from orbitseg.model.losses import soft_dice_per_label

__all__ = ["soft_dice_ce_loss", "soft_paper_dice_loss", "SOFT_LOSSES", "get_soft_loss"]


def soft_dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, ce_weight: float = 1.0,
                      include_background: bool = False, smooth: float = 1e-5) -> torch.Tensor:
    g = target.to(logits.dtype)
    logp = F.log_softmax(logits, dim=1)
    dice = soft_dice_per_label(logp.exp(), g, smooth)
    if not include_background:
        dice = dice[1:]
    ce = -(g * logp).sum(1).mean()
    return dice_weight * (1.0 - dice.mean()) + ce_weight * ce


def soft_paper_dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = True,
                         smooth: float = 1.0, normalize_weights: bool = False) -> torch.Tensor:
    g = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    dice = soft_dice_per_label(p, g, smooth)
    n = g.shape[0] * g.shape[2] * g.shape[3]
    w = n / (g.sum((0, 2, 3)) + 1.0)
    if not include_background:
        dice, w = dice[1:], w[1:]
    if normalize_weights:
        w = w / w.sum()
    return (w * (1.0 - dice)).sum()


SOFT_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"dice_ce": soft_dice_ce_loss,
                                                        "paper_dice": soft_paper_dice_loss}


def get_soft_loss(name: str) -> Callable[..., torch.Tensor]:
    try:
        return SOFT_LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; choose one of {tuple(SOFT_LOSSES)}") from None
