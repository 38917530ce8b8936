"""Loss functions: perfect predictions give ~0, gradients are finite, weights follow the paper."""

from __future__ import annotations

import torch

from orbitseg.model import dice_ce_loss, get_loss, paper_dice_loss
from orbitseg.model.losses import one_hot


def _target():
    t = torch.zeros(2, 16, 16, dtype=torch.long)
    t[:, 2:10, 2:10] = 1
    t[:, 11:14, 3:12] = 2
    t[0, 5, 12:15] = 3
    return t


def test_perfect_prediction_is_near_zero():
    t = _target()
    logits = (one_hot(t, 4) * 2 - 1) * 30.0
    assert paper_dice_loss(logits, t).item() < 1e-2 * paper_dice_loss(torch.zeros_like(logits), t).item()
    assert dice_ce_loss(logits, t).item() < 1e-3


def test_losses_have_finite_gradients():
    t = _target()
    for name in ("paper_dice", "dice_ce"):
        logits = torch.randn(2, 4, 16, 16, requires_grad=True)
        loss = get_loss(name)(logits, t)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_paper_weights_favour_rare_labels():
    # w_k = N / (foreground_k + 1): an error on the rare nerve costs more than one on the eyeball
    t = _target()
    base = (one_hot(t, 4) * 2 - 1) * 30.0
    bad_nerve, bad_eye = base.clone(), base.clone()
    bad_nerve[:, 3] = -30.0
    bad_eye[:, 1, 2:4, 2:10] = -30.0  # loses 16 eyeball pixels of 64 per slice
    assert paper_dice_loss(bad_nerve, t) > paper_dice_loss(bad_eye, t)
    normed = paper_dice_loss(bad_nerve, t, normalize_weights=True)
    assert 0 < normed.item() <= 1.0


def test_distillation_loss_is_the_kl_divergence_to_the_teacher():
    """Zero where the student gives the teacher's probabilities, the KL divergence (checked against torch's)
    elsewhere, and a gradient step brings the student's probabilities towards the teacher's, the teacher
    untouched."""
    from orbitseg.model.losses import distillation_loss

    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 8, 8)
    assert distillation_loss(teacher + 3.0, teacher).abs() < 1e-6  # a constant shift is the same softmax
    student = torch.randn(2, 4, 8, 8, requires_grad=True)
    kd = distillation_loss(student, teacher)
    ref = torch.nn.functional.kl_div(torch.log_softmax(student, 1), torch.log_softmax(teacher, 1), log_target=True,
                                     reduction="none").sum(1).mean()
    torch.testing.assert_close(kd, ref)
    kd.backward()
    moved = (student - 0.5 * student.grad).detach()
    far = lambda s: (torch.softmax(s, 1) - torch.softmax(teacher, 1)).abs().mean()  # noqa: E731
    assert far(moved) < far(student.detach())


def test_an_ensemble_teacher_gives_the_mean_of_its_members_probabilities():
    """The folds teaching one network: as logits, the ensemble's output soft-maxes to the members' mean
    probabilities (what orbitseg predict averages), not to a mean of their logits."""
    from orbitseg.model.losses import EnsembleTeacher

    torch.manual_seed(0)
    members = [torch.nn.Conv2d(1, 4, 3, padding=1) for _ in range(3)]
    x = torch.randn(2, 1, 8, 8)
    mean = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
    out = EnsembleTeacher(members)(x)
    torch.testing.assert_close(torch.softmax(out, 1), mean)
    logit_mean = torch.softmax(torch.stack([m(x) for m in members]).mean(0), 1)
    assert (logit_mean - mean).abs().max() > 1e-3  # the two differ, so the check above can fail
