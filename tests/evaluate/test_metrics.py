"""Metrics against values computed by hand on small arrays, with anisotropic spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orbitseg.evaluate.metrics import (Confusion, case_metrics, confusion, dice, metric_names, summarise,
                                      surface_distances, volume_similarity)


def line(values) -> np.ndarray:
    """A (1, 1, n) label array from a list."""
    return np.asarray(values, dtype=np.uint8)[None, None, :]


# ---------------------------------------------------------------------------
# overlap
# ---------------------------------------------------------------------------
def test_dice_and_vs_for_known_counts():
    truth = line([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])  # x 0..5
    pred = line([0, 0, 1, 1, 1, 1, 1, 1, 1, 0])  # x 2..8
    assert confusion(pred, truth, 1) == Confusion(tp=4, fp=3, fn=2)
    assert dice(pred, truth, 1) == pytest.approx(8 / 13)
    assert volume_similarity(pred, truth, 1) == pytest.approx(1 - 1 / 13)
    m = case_metrics(pred, truth, spacing=(1, 1, 1), surface=False)
    assert m["dice_eyeball"] == pytest.approx(8 / 13)
    assert m["vs_eyeball"] == pytest.approx(12 / 13)


def test_vs_differs_from_dice():
    # same volume, shifted: VS is 1 although Dice is not
    truth = line([1, 1, 1, 1, 0, 0])
    pred = line([0, 0, 1, 1, 1, 1])
    assert dice(pred, truth, 1) == pytest.approx(0.5)
    assert volume_similarity(pred, truth, 1) == 1.0


def test_pooled_all_differs_from_mean_of_structures():
    # eyeball and muscle swapped: each structure is wrong, the pooled foreground is right
    truth = line([1, 1, 2, 2, 0, 0])
    pred = line([2, 2, 1, 1, 0, 0])
    m = case_metrics(pred, truth, spacing=(1, 1, 1), surface=False)
    assert m["dice_eyeball"] == 0.0 and m["dice_muscles"] == 0.0
    assert m["dice_all"] == 1.0 and m["vs_all"] == 1.0
    assert math.isnan(m["dice_nerve"])  # absent in both
    # a background error counts against 'all' once, pooled over structures
    truth = line([1, 1, 1, 2, 0, 0, 0, 0])
    pred = line([1, 1, 1, 0, 0, 0, 0, 2])
    m = case_metrics(pred, truth, spacing=(1, 1, 1), surface=False)
    assert m["dice_eyeball"] == 1.0 and m["dice_muscles"] == 0.0
    assert m["dice_all"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert m["vs_all"] == 1.0
    assert confusion(pred, truth, "all") == Confusion(3, 1, 1) == confusion(pred, truth, None)


def test_empty_vs_empty_is_nan_for_every_metric():
    truth = np.zeros((3, 4, 5), np.uint8)
    truth[1, 1, 1:3] = 1
    pred = truth.copy()
    m = case_metrics(pred, truth, spacing=(0.5, 0.5, 2.0))
    for key in ("dice", "vs", "hd95", "asd"):
        for s in ("muscles", "nerve"):
            assert math.isnan(m[f"{key}_{s}"]), f"{key}_{s}"
    assert m["vol_pred_ml_nerve"] == 0.0 and m["vol_true_ml_nerve"] == 0.0
    assert m["dice_eyeball"] == 1.0 and m["hd95_eyeball"] == 0.0 and m["asd_eyeball"] == 0.0
    empty = np.zeros_like(truth)
    m = case_metrics(empty, empty, spacing=(1, 1, 1))
    assert all(math.isnan(m[k]) for k in m if not k.startswith("vol_"))
    assert list(m) == metric_names()


def test_one_side_empty_gives_dice_zero_vs_zero_and_nan_distances():
    truth = np.zeros((3, 4, 5), np.uint8)
    truth[1, 1:3, 1:3] = 3
    m = case_metrics(np.zeros_like(truth), truth, spacing=(1, 1, 1))
    assert m["dice_nerve"] == 0.0 and m["vs_nerve"] == 0.0
    assert math.isnan(m["hd95_nerve"]) and math.isnan(m["asd_nerve"])
    m = case_metrics(truth, np.zeros_like(truth), spacing=(1, 1, 1))  # false positive only
    assert m["dice_nerve"] == 0.0 and m["vs_nerve"] == 0.0 and math.isnan(m["hd95_nerve"])


def test_bad_input_is_refused():
    a = np.zeros((2, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        case_metrics(a, np.zeros((2, 2, 3), np.uint8), spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="labels 0..3"):
        case_metrics(a + 4, a, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(a, a, spacing=(1, 0, 1))


# ---------------------------------------------------------------------------
# volumes
# ---------------------------------------------------------------------------
def test_volumes_in_ml():
    truth = np.zeros((4, 10, 10), np.uint8)
    truth[0, :, :] = 1  # 100 voxels
    truth[1, 0, :5] = 3  # 5 voxels
    pred = np.zeros_like(truth)
    pred[0, :5, :] = 1  # 50 voxels
    spacing = (2.0, 2.0, 2.5)  # 10 mm^3 = 0.01 mL per voxel
    m = case_metrics(pred, truth, spacing=spacing, surface=False)
    assert m["vol_true_ml_eyeball"] == pytest.approx(1.0)
    assert m["vol_pred_ml_eyeball"] == pytest.approx(0.5)
    assert m["vol_true_ml_nerve"] == pytest.approx(0.05)
    assert m["vol_true_ml_all"] == pytest.approx(1.05)
    assert m["vol_pred_ml_muscles"] == 0.0


# ---------------------------------------------------------------------------
# surface distances (mm, anisotropic spacing)
# ---------------------------------------------------------------------------
SPACING = (0.5, 0.7, 3.0)  # (sx, sy, sz) along i, j, k = array axes 2, 1, 0


@pytest.mark.parametrize(
    "axis, shift, expected",
    [(0, 1, 3.0), (1, 2, 1.4), (2, 1, 0.5), (2, 3, 1.5)],
    ids=["z_by_1", "y_by_2", "x_by_1", "x_by_3"],
)
def test_offset_planes(axis, shift, expected):
    """Two parallel one-voxel-thick planes: every surface distance is the gap."""
    shape = (8, 9, 10)
    truth = np.zeros(shape, bool)
    idx = [slice(1, 7)] * 3
    idx[axis] = 2
    truth[tuple(idx)] = True
    pred = np.roll(truth, shift, axis=axis)
    hd95, asd = surface_distances(pred, truth, spacing=SPACING)
    assert hd95 == pytest.approx(expected, abs=1e-5)
    assert asd == pytest.approx(expected, abs=1e-5)
    m = case_metrics(pred.astype(np.uint8) * 2, truth.astype(np.uint8) * 2, spacing=SPACING)
    assert m["hd95_muscles"] == pytest.approx(expected, abs=1e-5)
    assert m["hd95_all"] == pytest.approx(expected, abs=1e-5)


def test_cubes_shifted_along_z_by_hand():
    """4x4x4 cube vs the same cube one slice up; spacing (0.5, 0.8, 3.0).

    Surface (shell) of each cube: 16 + 12 + 12 + 16 = 56 voxels.  From the truth
    shell to the prediction's: the bottom face (16) is 3 mm from the
    prediction's bottom face; the rings at k=1..3 (36) lie on the prediction's
    surface (0 mm); the 4 inner voxels of the top face are inside the
    prediction, 0.5 mm (one voxel along x) from its ring.  The other direction
    is the mirror image.  Sorted: 36 x 0, 4 x 0.5, 16 x 3 -> the 95th
    percentile (index 52.25 of 0..55) is 3 mm; ASD = (4*0.5 + 16*3) / 56.
    """
    truth = np.zeros((7, 6, 6), np.uint8)
    truth[1:5, 1:5, 1:5] = 1
    pred = np.roll(truth, 1, axis=0)
    m = case_metrics(pred, truth, spacing=(0.5, 0.8, 3.0))
    assert m["hd95_eyeball"] == pytest.approx(3.0, abs=1e-5)
    assert m["asd_eyeball"] == pytest.approx((4 * 0.5 + 16 * 3.0) / 56, abs=1e-5)
    assert m["dice_eyeball"] == pytest.approx(2 * 48 / 128)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cropping_does_not_change_results_and_matches_monai_api():
    """Our crop-then-MONAI path equals MONAI's public functions on the whole array."""
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    from scipy import ndimage

    rng = np.random.default_rng(3)
    truth = ndimage.gaussian_filter(rng.random((12, 20, 18)), 1.5) > 0.52
    pred = ndimage.gaussian_filter(rng.random((12, 20, 18)), 1.5) > 0.52
    big_t = np.zeros((30, 40, 50), bool)
    big_p = np.zeros_like(big_t)
    big_t[5:17, 10:30, 20:38] = truth
    big_p[5:17, 10:30, 20:38] = pred
    hd95, asd = surface_distances(big_p, big_t, spacing=SPACING)
    assert (hd95, asd) == pytest.approx(surface_distances(pred, truth, spacing=SPACING), abs=1e-6)
    sp = SPACING[::-1]
    p = torch.from_numpy(big_p)[None, None].float()
    t = torch.from_numpy(big_t)[None, None].float()
    ref_hd = float(compute_hausdorff_distance(p, t, percentile=95, spacing=sp))
    ref_asd = float(compute_average_surface_distance(p, t, symmetric=True, spacing=sp))
    assert hd95 == pytest.approx(ref_hd, rel=1e-5)
    assert asd == pytest.approx(ref_asd, rel=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_surface_distances_equal_monai_with_stray_voxels_and_borders(seed):
    """Masks touching the array border, holes, and a few far-away stray voxels."""
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (9, 23, 17)
    truth = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.5
    pred = ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.5
    pred[tuple(rng.integers(0, n, 4) for n in shape)] = True  # stray voxels
    truth[0, 0, 0] = truth[-1, -1, -1] = True  # corners
    sp = (0.45, 0.9, 2.5)
    fast = surface_distances(pred, truth, spacing=sp)
    assert fast == pytest.approx(surface_distances(pred, truth, spacing=sp, method="monai"), rel=1e-6)
    p = torch.from_numpy(pred)[None, None].float()
    t = torch.from_numpy(truth)[None, None].float()
    ref_hd = float(compute_hausdorff_distance(p, t, percentile=95, spacing=sp[::-1]))
    ref_asd = float(compute_average_surface_distance(p, t, symmetric=True, spacing=sp[::-1]))
    assert fast == pytest.approx((ref_hd, ref_asd), rel=1e-5)
    # and through case_metrics, with labels
    lab_p, lab_t = pred.astype(np.uint8) * 3, truth.astype(np.uint8) * 3
    m = case_metrics(lab_p, lab_t, spacing=sp)
    assert (m["hd95_nerve"], m["asd_nerve"]) == pytest.approx((ref_hd, ref_asd), rel=1e-5)


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------
def test_summarise_excludes_nan_and_groups():
    rows = [
        {"case": "a", "fold": 0, "dice_nerve": 0.5, "dice_eyeball": 0.9},
        {"case": "b", "fold": 0, "dice_nerve": math.nan, "dice_eyeball": 0.7},
        {"case": "c", "fold": 1, "dice_nerve": 0.7, "dice_eyeball": 0.8},
    ]
    s = summarise(rows, by="fold")
    get = {(r["group"], r["metric"]): r for r in s}
    assert {r["metric"] for r in s} == {"dice_nerve", "dice_eyeball"}  # 'fold' and 'case' are not metrics
    nerve = get[("all", "dice_nerve")]
    assert nerve["n"] == 2 and nerve["n_cases"] == 3
    assert nerve["mean"] == pytest.approx(0.6)
    assert nerve["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert get[("all", "dice_eyeball")]["mean"] == pytest.approx(0.8)
    f0 = get[("0", "dice_nerve")]
    assert f0["n"] == 1 and f0["mean"] == 0.5 and math.isnan(f0["sd"])
    assert get[("1", "dice_eyeball")]["mean"] == pytest.approx(0.8)
    assert [r["group"] for r in s][:2] == ["all", "all"]
    only_nan = summarise([{"x": math.nan}])
    assert only_nan[0]["n"] == 0 and math.isnan(only_nan[0]["mean"])


def test_dice_per_structure_is_dice_of_each_label():
    from orbitseg.evaluate.metrics import dice_per_structure

    rng = np.random.default_rng(3)
    pred = rng.integers(0, 3, (4, 5, 6))  # label 3 absent from the prediction...
    truth = rng.integers(0, 3, (4, 5, 6))  # ...and from the truth: NaN, as dice() says
    out = dice_per_structure(pred, truth)
    assert set(out) == {1, 2, 3}
    for s in (1, 2):
        assert out[s] == dice(pred, truth, s)
    assert np.isnan(out[3]) and np.isnan(dice(pred, truth, 3))
    with pytest.raises(ValueError, match="shape"):
        dice_per_structure(pred, truth[:2])
