"""Segmentation losses on logits ``(B, C, H, W)`` and targets: integer labels ``(B, H, W)``
or soft per-class fractions ``(B, C, H, W)`` (what preprocessing stores: partial-volume
pixels at a structure's border count partly; a one-hot target gives exactly the
hard-label loss).

Written here (a few lines each) rather than taken from MONAI, so the package
does not depend on it.  Both compute Dice over the whole batch per label
("batch Dice"), which is stable when a label is absent from some slices.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["one_hot", "soft_dice_per_label", "paper_dice_loss", "dice_ce_loss", "distillation_loss", "LOSSES",
           "get_loss"]


def one_hot(target: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, H, W)`` integer labels -> ``(B, num_classes, H, W)`` one-hot."""
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    return F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).to(dtype)


def target_probabilities(target: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B, C, H, W)`` per-class target: soft fractions as they are, integer labels one-hot."""
    if target.is_floating_point() and target.dim() == 4 and target.shape[1] == num_classes:
        return target.to(dtype)
    return one_hot(target, num_classes, dtype)


def soft_dice_per_label(probs: torch.Tensor, onehot: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice per channel over batch and pixels: ``(C,)``.

    ``(2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth)``.
    """
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return (2.0 * inter + smooth) / (denom + smooth)


def paper_dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = True,
                    smooth: float = 1.0, normalize_weights: bool = False) -> torch.Tensor:
    """The authors' loss: ``sum_k w_k (1 - softDice_k)`` with sigmoid per label.

    ``w_k = N / (foreground_k + 1)``, ``N`` the number of pixels in the batch and
    ``foreground_k`` the pixels of label ``k`` in ``target`` (so rare labels weigh
    more).  ``normalize_weights=True`` divides by ``sum(w)`` (same gradient
    direction, a scale that does not depend on the batch).
    """
    g = target_probabilities(target, logits.shape[1], logits.dtype)
    p = torch.sigmoid(logits)
    dice = soft_dice_per_label(p, g, smooth)
    n = g.shape[0] * g.shape[2] * g.shape[3]
    w = n / (g.sum((0, 2, 3)) + 1.0)
    if not include_background:
        dice, w = dice[1:], w[1:]
    if normalize_weights:
        w = w / w.sum()
    return (w * (1.0 - dice)).sum()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 include_background: bool = False, smooth: float = 1e-5,
                 class_weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Softmax soft Dice (mean over labels) + cross-entropy (mean over pixels).

    ``class_weights`` (length C) weighs the cross-entropy per class.
    """
    g = target_probabilities(target, logits.shape[1], logits.dtype)
    logp = F.log_softmax(logits, dim=1)
    dice = soft_dice_per_label(logp.exp(), g, smooth)
    if not include_background:
        dice = dice[1:]
    # cross-entropy with (soft) target distributions; class weights normalised as F.cross_entropy does
    w = torch.ones(logits.shape[1], dtype=logits.dtype, device=logits.device) if class_weights is None else \
        torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    wg = g * w[None, :, None, None]
    ce = -(wg * logp).sum() / wg.sum().clamp_min(1e-12)
    return dice_weight * (1.0 - dice.mean()) + ce_weight * ce


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Knowledge distillation: ``KL(softmax(teacher) || softmax(student))`` per pixel, mean over pixels.

    ``logits``, ``teacher_logits``: ``(B, C, H, W)`` of softmax networks.  Zero where the student gives the
    teacher's probabilities; its gradient pulls every class's probability (not only the label's) towards
    the teacher's, so a smaller network also learns where the teacher is unsure (borders, thin structures).
    """
    log_t = F.log_softmax(teacher_logits.detach(), dim=1)
    return (log_t.exp() * (log_t - F.log_softmax(logits, dim=1))).sum(1).mean()


class EnsembleTeacher(nn.Module):
    """Several softmax networks as one teacher (the folds of a model teaching one network trained on every case).

    ``forward(x)`` takes what each member takes (``(B, T, 1, H, W)`` sequences) and returns the log of the
    members' mean probabilities, ``(B, C, H, W)``: as logits they soft-max back to that mean, which is what
    :func:`distillation_loss` compares with (the ensemble ``orbitseg predict`` averages, not its logits' mean).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble teacher needs at least one network")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([F.softmax(m(x).float(), dim=1) for m in self.members]).mean(0)
        return torch.log(p.clamp_min(1e-12))


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"paper_dice": paper_dice_loss, "dice_ce": dice_ce_loss}


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """Loss function by the name a preset records (``TrainingRecipe.loss``)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; choose one of {tuple(LOSSES)}") from None
