"""Augmentation keeps image and soft target aligned; the flip mirrors."""

from __future__ import annotations

import torch

from orbitseg.train.augment import AugmentParams, augment

S, T = 32, 3


def _batch(b: int = 6):
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    imgs = []
    for i in range(b):  # an off-centre disk per sequence, so flips and rotations show
        cy, cx, r = 10 + i, 8 + 2 * i, 5 + i % 3
        imgs.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).float())
    img = torch.stack(imgs)  # (B, S, S), binary
    x = img[:, None, None].repeat(1, T, 1, 1, 1)  # (B, T, 1, S, S)
    target = torch.stack([1 - img, img, torch.zeros_like(img), torch.zeros_like(img)], 1)
    return x, target


def test_geometry_keeps_alignment():
    x, y = _batch()
    p = AugmentParams(intensity_scale=(1, 1), intensity_shift=0, noise=0)
    xa, ya = augment(x, y, torch.Generator().manual_seed(0), p)
    assert xa.shape == x.shape and ya.shape == y.shape
    assert not torch.equal(xa, x)  # something moved
    for t in range(T):  # the target (thresholded image) equals the transformed image on every slice
        torch.testing.assert_close(ya[:, 1], xa[:, t, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(ya.sum(1), torch.ones(x.shape[0], S, S), atol=1e-5, rtol=0)
    assert float(ya.min()) >= 0


def test_flip_mirrors_image_and_target():
    x, y = _batch()
    p = AugmentParams.none()
    p = AugmentParams(**{**p.to_dict(), "flip": 1.0})
    xa, ya = augment(x, y, torch.Generator().manual_seed(0), p)
    assert torch.equal(xa, x.flip(-1)) and torch.equal(ya, y.flip(-1))
    xn, yn = augment(x, y, torch.Generator().manual_seed(0), AugmentParams.none())
    assert torch.equal(xn, x) and torch.equal(yn, y)


def test_intensity_only_touches_image_and_is_reproducible():
    x, y = _batch()
    p = AugmentParams(rotate=0, scale=(1, 1), flip=0)
    xa, ya = augment(x, y, torch.Generator().manual_seed(5), p)
    assert torch.equal(ya, y) and not torch.equal(xa, x)
    xb, yb = augment(x, y, torch.Generator().manual_seed(5), p)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xc, _ = augment(x, y, torch.Generator().manual_seed(6), p)
    assert not torch.equal(xa, xc)
