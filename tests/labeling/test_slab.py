"""SmartFill and AutoCorrection on a slab of slices as the labeling page sends it (labeling/slab.py)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

import orbitseg.labeling.slab as slab_mod
from orbitseg.labeling import (BACKGROUND_STROKE, NoStrokesError, auto_correct, auto_correct_slab, smart_fill,
                               smart_fill_slab)
from orbitseg.labeling.slab import NO_STROKES_MESSAGE
from orbitseg.synth.phantom import globe_slice, orbit_slice

#: anisotropic in y and x, so a swapped spacing axis changes the result
SP_ORBIT = (0.9, 0.8)
SZ = 2.0


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only copy, as the server's request bodies are (np.frombuffer)."""
    a = np.array(a)
    a.setflags(write=False)
    return a


@pytest.fixture(scope="module")
def orbits():
    img, gt = orbit_slice((256, 256), SP_ORBIT, seed=4)
    lab, n = ndi.label(gt == 1)
    assert n == 2
    clicks = np.zeros(gt.shape, np.uint8)
    for i in (1, 2):  # a 3 x 3 click in the middle of each globe: two groups of strokes
        r, c = (int(v) for v in ndi.center_of_mass(lab == i))
        clicks[r - 1:r + 2, c - 1:c + 2] = 1
    return img, gt, clicks


def _dots(gt: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` single-pixel label-1 strokes inside the globes, far enough apart to be ``n`` groups."""
    pts = np.argwhere(ndi.binary_erosion(gt == 1, iterations=3))
    chosen: list[np.ndarray] = []
    for p in pts[np.random.default_rng(seed).permutation(len(pts))]:
        if all(np.abs(p - q).max() > 6 for q in chosen):
            chosen.append(p)
        if len(chosen) == n:
            break
    s = np.zeros(gt.shape, np.uint8)
    for y, x in chosen:
        s[y, x] = 1
    assert ndi.label(ndi.binary_dilation(s != 0, iterations=2))[1] == n
    return s


def _fill_per_group(img, strokes, spacing, mask=None, labels=(1,)):
    groups, n = ndi.label(ndi.binary_dilation(strokes != 0, iterations=2))
    cur = np.zeros(img.shape, np.uint8) if mask is None else mask
    for g in range(1, n + 1):
        cur = smart_fill(img, strokes, spacing=spacing, labels=labels, mask=cur, focus=(groups == g) & (strokes != 0))
    return cur


# ---------------------------------------------------------------- SmartFill


def test_smart_fill_slab_of_one_slice_is_the_2d_fill():
    img, gt = globe_slice((160, 160), (0.5, 0.6), seed=0)
    s = np.zeros(img.shape, np.uint8)
    s[78:83, 70:90] = 1
    out = smart_fill_slab(_ro(img[None]), _ro(np.zeros((1,) + img.shape, np.uint8)), _ro(s[None]),
                          spacing=(SZ, 0.5, 0.6), labels=(1,))
    assert out.dtype == np.uint8 and out.shape == (1,) + img.shape
    np.testing.assert_array_equal(out[0], smart_fill(img, s, spacing=(0.5, 0.6), labels=(1,)))


def test_one_fill_per_group_of_strokes(orbits):
    img, gt, clicks = orbits
    out = smart_fill_slab(img[None], np.zeros((1,) + img.shape, np.uint8), clicks[None],
                          spacing=(SZ,) + SP_ORBIT, labels=(1,))[0]
    per_group = _fill_per_group(img, clicks, SP_ORBIT)
    one_cut = smart_fill(img, clicks, spacing=SP_ORBIT, labels=(1,))
    assert not np.array_equal(per_group, one_cut)  # the test can tell the two apart
    np.testing.assert_array_equal(out, per_group)
    lab, _ = ndi.label(gt == 1)
    for i in (1, 2):  # both globes filled
        assert (out[lab == i] == 1).mean() > 0.8


@pytest.mark.parametrize("gap, groups", [(4, 1), (6, 2)])
def test_strokes_up_to_5_pixels_apart_are_one_group(orbits, gap, groups):
    img, gt, _ = orbits
    lab, _ = ndi.label(gt == 1)
    r, c = (int(v) for v in ndi.center_of_mass(lab == 1))
    s = np.zeros(img.shape, np.uint8)
    s[r, c - 3] = s[r, c - 3 + gap] = 1  # two dots in one globe, ``gap`` columns apart
    out = smart_fill_slab(img[None], np.zeros((1,) + img.shape, np.uint8), s[None],
                          spacing=(SZ,) + SP_ORBIT, labels=(1,))[0]
    one_cut = smart_fill(img, s, spacing=SP_ORBIT, labels=(1,))
    two_cuts = _fill_per_group(img, s, SP_ORBIT) if groups == 2 else None
    if groups == 1:
        np.testing.assert_array_equal(out, one_cut)
        # a fill per dot would differ here
        cur = np.zeros(img.shape, np.uint8)
        for dot in np.argwhere(s):
            focus = np.zeros(img.shape, bool)
            focus[tuple(dot)] = True
            cur = smart_fill(img, s, spacing=SP_ORBIT, labels=(1,), mask=cur, focus=focus)
        assert not np.array_equal(cur, one_cut)
    else:
        assert not np.array_equal(two_cuts, one_cut)
        np.testing.assert_array_equal(out, two_cuts)


def test_eight_groups_are_eight_fills_nine_are_one(orbits):
    img, gt, _ = orbits
    zero = np.zeros((1,) + img.shape, np.uint8)
    s8, s9 = _dots(gt, 8), _dots(gt, 9)
    out8 = smart_fill_slab(img[None], zero, s8[None], spacing=(SZ,) + SP_ORBIT, labels=(1,))[0]
    np.testing.assert_array_equal(out8, _fill_per_group(img, s8, SP_ORBIT))
    out9 = smart_fill_slab(img[None], zero, s9[None], spacing=(SZ,) + SP_ORBIT, labels=(1,))[0]
    one_cut = smart_fill(img, s9, spacing=SP_ORBIT, labels=(1,))
    assert not np.array_equal(one_cut, _fill_per_group(img, s9, SP_ORBIT))
    np.testing.assert_array_equal(out9, one_cut)


def test_empty_strokes_grow_from_the_labels_drawn(orbits):
    img, gt, _ = orbits
    drawn = np.where(ndi.binary_erosion(gt == 1, iterations=6), 1, 0).astype(np.uint8)
    drawn[gt == 2] = 2  # another structure, not filled: stays as it is and seeds nothing
    out = smart_fill_slab(_ro(img[None]), _ro(drawn[None]), _ro(np.zeros((1,) + img.shape, np.uint8)),
                          spacing=(SZ,) + SP_ORBIT, labels=(1,))[0]
    seeds = np.where(drawn == 1, 1, 0).astype(np.uint8)
    np.testing.assert_array_equal(out, _fill_per_group(img, seeds, SP_ORBIT, mask=drawn))
    assert (out == 1).sum() > 1.5 * (drawn == 1).sum()
    assert np.all(out[gt == 2] == 2)


def test_background_strokes_alone_correct_the_labels_drawn():
    img, gt = globe_slice((160, 160), (0.5, 0.5), seed=0)
    grown = ndi.binary_dilation(gt == 1, iterations=3)
    y, x = np.argwhere(grown & (gt == 0))[0]
    s = np.zeros(img.shape, np.uint8)
    s[y, x] = BACKGROUND_STROKE
    out = smart_fill_slab(img[None], grown[None].astype(np.uint8), s[None], spacing=(SZ, 0.5, 0.5), labels=(1,))[0]
    assert out[y, x] == 0 and ((out == 1) & (gt == 0)).sum() < (grown & (gt == 0)).sum()


@pytest.mark.parametrize("case", ["nothing", "background_only", "other_structure_only"])
def test_nothing_to_grow_from_raises(orbits, case):
    img, gt, _ = orbits
    mask = np.zeros((1,) + img.shape, np.uint8)
    strokes = np.zeros_like(mask)
    if case == "background_only":
        strokes[0, 5:8, 5:30] = BACKGROUND_STROKE
    if case == "other_structure_only":
        mask[0][gt == 2] = 2
    with pytest.raises(NoStrokesError, match="SmartFill needs strokes") as info:
        smart_fill_slab(img[None], mask, strokes, spacing=(SZ,) + SP_ORBIT, labels=(1,))
    assert isinstance(info.value, ValueError) and str(info.value) == NO_STROKES_MESSAGE


def test_3d_slab_is_one_3d_fill_and_uses_the_prior():
    img2, gt2 = globe_slice((120, 120), (0.6, 0.5), seed=2, radius_mm=10.0)
    img = np.stack([img2 + np.random.default_rng(k).normal(0, 5, img2.shape) for k in range(3)]).astype(np.float32)
    gt = np.stack([gt2] * 3)
    s = np.zeros(img.shape, np.uint8)
    s[1, 58:62, 55:65] = 1
    zero = np.zeros(img.shape, np.uint8)
    out = smart_fill_slab(img, zero, s, spacing=(SZ, 0.6, 0.5), labels=(1,))
    assert out.shape == img.shape
    np.testing.assert_array_equal(out, smart_fill(img, s, spacing=(SZ, 0.6, 0.5), labels=(1,)))
    assert (out[[0, 2]] == 1).sum() > 0.8 * (gt[[0, 2]] == 1).sum()  # grown into the other slices
    prior = np.stack([(gt == c) * 0.9 + 0.025 for c in range(4)]).astype(np.float32)
    with_prior = smart_fill_slab(img, zero, s, spacing=(SZ, 0.6, 0.5), labels=(1,), probabilities=prior)
    np.testing.assert_array_equal(with_prior, smart_fill(img, s, spacing=(SZ, 0.6, 0.5), labels=(1,),
                                                         probabilities=prior))
    # one slice: the prior's slice goes with it
    out1 = smart_fill_slab(img[1:2], zero[1:2], s[1:2], spacing=(SZ, 0.6, 0.5), labels=(1,),
                           probabilities=prior[:, 1:2])
    np.testing.assert_array_equal(out1[0], smart_fill(img[1], s[1], spacing=(0.6, 0.5), labels=(1,),
                                                      probabilities=prior[:, 1]))


def test_smart_fill_slab_refuses_mismatched_inputs(orbits):
    img, gt, clicks = orbits
    with pytest.raises(ValueError, match="3-D slab"):
        smart_fill_slab(img, np.zeros_like(clicks), clicks, spacing=(SZ,) + SP_ORBIT, labels=(1,))
    with pytest.raises(ValueError, match="strokes shape"):
        smart_fill_slab(img[None], np.zeros((1,) + img.shape, np.uint8), clicks, spacing=(SZ,) + SP_ORBIT, labels=(1,))
    with pytest.raises(ValueError, match="probabilities"):
        smart_fill_slab(img[None], np.zeros((1,) + img.shape, np.uint8), clicks[None], spacing=(SZ,) + SP_ORBIT,
                        labels=(1,), probabilities=np.zeros((4,) + img.shape))


# ---------------------------------------------------------------- AutoCorrection


class _Spy:
    """Stands in for ``auto_correct`` in slab.py: records what it gets, returns the mask as it is."""

    def __init__(self):
        self.calls = []

    def __call__(self, image, mask, *, spacing, labels, probabilities):
        self.calls.append(dict(image=image, mask=mask, spacing=tuple(float(v) for v in spacing), labels=labels,
                               probabilities=probabilities))
        return mask


@pytest.mark.parametrize("nz", [1, 3])
def test_auto_correct_slab_works_on_the_bounding_box_plus_10_mm(monkeypatch, nz):
    spy = _Spy()
    monkeypatch.setattr(slab_mod, "auto_correct", spy)
    sy, sx = 0.5, 0.8  # 10 mm = 20 rows, 13 columns (12.5 rounded up)
    img = np.zeros((nz, 160, 160), np.int16)
    mask = np.zeros(img.shape, np.uint8)
    mask[nz // 2, 50:61, 40:71] = 1
    mask[0, 55, 75] = 3  # another structure widens the box too
    prior = np.random.default_rng(0).random((4,) + img.shape).astype(np.float32)
    out = auto_correct_slab(img, mask, spacing=(SZ, sy, sx), labels=(1,), probabilities=prior)
    np.testing.assert_array_equal(out, mask)
    (call,) = spy.calls
    box = (slice(30, 81), slice(27, 89))
    if nz == 1:
        np.testing.assert_array_equal(call["mask"], mask[0][box])
        assert call["spacing"] == (sy, sx)
        np.testing.assert_array_equal(call["probabilities"], prior[:, 0][(slice(None),) + box])
    else:
        np.testing.assert_array_equal(call["mask"], mask[(slice(None),) + box])
        assert call["spacing"] == (SZ, sy, sx)
        np.testing.assert_array_equal(call["probabilities"], prior[(slice(None), slice(None)) + box])
    assert call["labels"] == (1,)


def test_auto_correct_slab_box_stops_at_the_edges(monkeypatch):
    spy = _Spy()
    monkeypatch.setattr(slab_mod, "auto_correct", spy)
    mask = np.zeros((1, 100, 90), np.uint8)
    mask[0, 2:5, 80:88] = 2
    auto_correct_slab(np.zeros(mask.shape), mask, spacing=(SZ, 1.0, 1.0), labels=(2,))
    assert spy.calls[0]["mask"].shape == (5 + 10, 90 - 70) and spy.calls[0]["probabilities"] is None


def test_auto_correct_slab_is_auto_correct_of_the_whole_slice():
    # the box is only a speed-up: the mask grows past it (into the margin) as on the whole slice
    img, gt = globe_slice((160, 160), (0.5, 0.5), seed=0)
    small = ndi.binary_erosion(gt, iterations=2).astype(np.uint8)
    whole = auto_correct(img, small, spacing=(0.5, 0.5))
    assert (whole == 1).any(axis=0).sum() > (small == 1).any(axis=0).sum()
    out = auto_correct_slab(_ro(img[None]), _ro(small[None]), spacing=(SZ, 0.5, 0.5), labels=(1, 2, 3))
    assert out.dtype == np.uint8 and out.shape == (1, 160, 160)
    np.testing.assert_array_equal(out[0], whole)
    stack = np.stack([img] * 3)
    out3 = auto_correct_slab(stack, np.stack([small] * 3), spacing=(SZ, 0.5, 0.5), labels=(1,))
    np.testing.assert_array_equal(out3, auto_correct(stack, np.stack([small] * 3), spacing=(SZ, 0.5, 0.5), labels=(1,)))


def test_auto_correct_slab_without_the_labels_returns_a_copy(monkeypatch):
    spy = _Spy()
    monkeypatch.setattr(slab_mod, "auto_correct", spy)
    mask = np.zeros((2, 40, 40), np.uint8)
    mask[0, 10:20, 10:20] = 2
    out = auto_correct_slab(np.zeros(mask.shape), _ro(mask), spacing=(SZ, 1.0, 1.0), labels=(1, 3))
    assert not spy.calls and out is not mask and out.flags.writeable
    np.testing.assert_array_equal(out, mask)
