import numpy as np
import pytest
from scipy import ndimage as ndi

from orbitseg.labeling import auto_correct
from orbitseg.labeling.autocorrect import border_distance, supported_changes
from orbitseg.synth.phantom import globe_slice, orbit_slice

SP = np.array([0.5, 0.5])


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def noisy_dilated(gt, seed=1):
    rng = np.random.default_rng(seed)
    bad = ndi.binary_dilation(gt, iterations=2)
    near = border_distance(bad.astype(np.uint8), SP) < 1.0
    bad ^= (rng.random(gt.shape) < 0.05) & near  # jagged edge
    return bad.astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_raises_dice_of_noisy_dilated_mask(seed):
    img, gt = globe_slice((160, 160), tuple(SP), seed=seed)
    bad = noisy_dilated(gt, seed)
    out = auto_correct(img, bad, spacing=SP)
    before, after = dice(bad == 1, gt == 1), dice(out == 1, gt == 1)
    assert after > before + 0.02 and after >= 0.95, (before, after)


@pytest.mark.parametrize("radius", [12.0, 11.37, 11.74])
def test_clean_mask_exactly_unchanged(radius):
    # a mask on the image edges is a fixed point; at radius 12 mm the digitised disk has one-pixel
    # bumps at its four poles (partial-volume pixels) that the boundary term alone used to shave off
    img, gt = globe_slice((160, 160), tuple(SP), seed=0, noise_hu=0.0, radius_mm=radius)
    assert np.array_equal(auto_correct(img, gt, spacing=SP), gt)
    slab = np.stack([img] * 3)
    assert np.array_equal(auto_correct(slab, np.stack([gt] * 3), spacing=(2.0, 0.5, 0.5)), np.stack([gt] * 3))


def test_clean_noisy_mask_nearly_unchanged():
    # with 12 HU noise a border pixel may look like the other tissue by more than the stay cost
    img, gt = globe_slice((160, 160), tuple(SP), seed=1)
    out = auto_correct(img, gt, spacing=SP)
    assert (out != gt).sum() <= 3
    assert np.all(border_distance(gt, SP)[out != gt] <= 1.0)


def test_supported_changes_reverts_unpaid_pieces():
    # a 1-D row of 6 pixels; pairs (i, i+1)
    cur = np.zeros(6, np.int64)
    new = np.array([1, 1, 0, 0, 1, 0])
    P, Q = np.arange(5), np.arange(1, 6)
    ev = np.zeros((2, 6))
    ev[0, :2] = 5.0  # pixels 0-1 look like label 1 by 5 per pixel, more than the stay cost 3
    ev[0, 4] = 2.0   # pixel 4 only by 2: the boundary term alone moved it
    flat = (P, Q, np.zeros(5))
    assert supported_changes(cur, new, ev, flat, 3.0, (6,)).tolist() == [1, 1, 0, 0, 0, 0]
    assert supported_changes(cur, new, ev, flat, 0.0, (6,)).tolist() == new.tolist()
    # an image edge where pixel 4's new border lies (pair 4-5; pair 3-4 is cut too) pays the rest
    edge = (P, Q, np.array([0, 0, 0, 0, 1.5]))
    assert supported_changes(cur, new, ev, edge, 3.0, (6,)).tolist() == new.tolist()


def test_never_changes_beyond_band_and_keeps_protected():
    img, gt = globe_slice((160, 160), tuple(SP), seed=3)
    bad = ndi.binary_dilation(gt, iterations=5).astype(np.uint8)  # 2.5 mm too big
    prot = np.zeros(gt.shape, bool)
    rr, cc = np.nonzero((bad == 1) & (gt == 0))
    prot[rr[:30], cc[:30]] = True
    prot[5:8, 5:8] = True  # a protected background pixel block
    for band in (0.5, 1.5):
        out = auto_correct(img, bad, spacing=SP, band_mm=band, protected=prot)
        d = border_distance(bad, SP)
        assert np.all(d[out != bad] <= band + 1e-9)
        assert np.all(out[prot] == bad[prot])
    # 1.5 mm too big: the band reaches the true edge, and the border snaps to it
    bad3 = ndi.binary_dilation(gt, iterations=3).astype(np.uint8)
    out = auto_correct(img, bad3, spacing=SP, protected=prot & (bad3 == 1))
    assert dice(out == 1, gt == 1) > dice(bad3 == 1, gt == 1) + 0.04


def test_islands_removed_and_holes_filled():
    img, gt = globe_slice((160, 160), tuple(SP), seed=0)
    m = gt.copy()
    m[20:22, 20:22] = 1  # 1 mm^2 island
    m[80:82, 80:82] = 0  # 1 mm^2 hole
    out = auto_correct(img, m, spacing=SP, band_mm=0.0)
    assert out[20:22, 20:22].max() == 0 and out[80:82, 80:82].min() == 1
    prot = np.zeros(gt.shape, bool)
    prot[20, 20] = True
    out = auto_correct(img, m, spacing=SP, band_mm=0.0, protected=prot)
    assert out[20, 20] == 1


def test_multilabel_and_probabilities():
    img, gt = orbit_slice((256, 256), (0.9, 0.9), seed=5)
    out = auto_correct(img, gt, spacing=(0.9, 0.9))
    for lab in (1, 2, 3):
        assert dice(out == lab, gt == lab) >= 0.85
    # perfect probabilities pull a shifted mask back to the truth
    prob = np.stack([(gt == c).astype(float) * 0.9 + 0.025 for c in range(4)])
    shifted = np.roll(gt, 1, axis=1)
    out = auto_correct(img, shifted, spacing=(0.9, 0.9), probabilities=prob)
    for lab in (1, 2, 3):
        assert dice(out == lab, gt == lab) > dice(shifted == lab, gt == lab)


def test_slab_3d():
    img2, gt2 = globe_slice((80, 80), tuple(SP), seed=5)
    img = np.stack([img2] * 3)
    bad = np.stack([noisy_dilated(gt2, k) for k in range(3)])
    out = auto_correct(img, bad, spacing=(2.0, 0.5, 0.5))
    assert dice(out == 1, np.stack([gt2] * 3) == 1) > dice(bad == 1, np.stack([gt2] * 3) == 1)


def test_bad_inputs():
    img, gt = globe_slice((40, 40), tuple(SP))
    with pytest.raises(ValueError, match="mask shape"):
        auto_correct(img, gt[:-1], spacing=SP)
    with pytest.raises(ValueError, match="mask holds unknown"):
        auto_correct(img, gt * 4, spacing=SP)
    with pytest.raises(ValueError, match="mask must be an integer"):
        auto_correct(img, gt.astype(float), spacing=SP)
    with pytest.raises(ValueError, match="protected shape"):
        auto_correct(img, gt, spacing=SP, protected=np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="probabilities"):
        auto_correct(img, gt, spacing=SP, probabilities=np.ones((3, 40, 40)))
    with pytest.raises(ValueError, match="band_mm"):
        auto_correct(img, gt, spacing=SP, band_mm=-1)
    with pytest.raises(ValueError, match="image"):
        auto_correct(img.astype(complex), gt, spacing=SP)


def test_eyeball_holes_filled_whole_muscle_holes_only_small():
    img, gt = globe_slice((160, 160), tuple(SP), seed=0)
    m = gt.copy()
    m[70:80, 75:85] = 0  # a 25 mm^2 "lens" left out of the globe
    out = auto_correct(img, m, spacing=SP, band_mm=0.0)
    assert out[70:80, 75:85].min() == 1
    m2 = np.where(m == 1, 2, 0).astype(np.uint8)  # the same shape as "muscle": the hole is kept
    out2 = auto_correct(img, m2, spacing=SP, band_mm=0.0)
    assert out2[72:78, 77:83].max() == 0
    with pytest.raises(ValueError, match="max_hole_mm2"):
        auto_correct(img, m, spacing=SP, max_hole_mm2=-1)


def test_edge_weights_geometric_part_is_the_weight_without_contrast():
    """AutoCorrection's edge evidence is G - W; G must be exactly the contrast-free weight."""
    from orbitseg.labeling._graphcut import edge_weights

    rng = np.random.default_rng(0)
    for shape, sp in (((20, 25), (0.45, 0.45)), ((4, 15, 20), (2.0, 0.45, 0.5))):
        img = rng.random(shape)
        P, Q, W, G = edge_weights(img, np.asarray(sp), 1.3, geometric=True)
        np.testing.assert_array_equal(G, edge_weights(img, np.asarray(sp), 1.3, sigma=np.inf)[2])
        assert np.all(W <= G) and np.all(W > 0)
