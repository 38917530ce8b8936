"""The mean signed surface distance (MSSD): its sign, its size in mm on anisotropic grids, its symmetry,
and an independent reference computed with scipy's Euclidean distance transform."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from orbitseg.evaluate.metrics import (mean_signed_surface_distance, signed_surface_distance_per_structure,
                                       surface_distances)

SPACING = (0.4, 0.5, 0.8)  # (sx, sy, sz) along index axes (i, j, k) = array axes (2, 1, 0)


def ball(radius: float, spacing=SPACING, shape=(40, 70, 80), shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A ball of ``radius`` mm on an ``(nz, ny, nx)`` grid, centred (plus ``shift`` (x, y, z) mm)."""
    sx, sy, sz = spacing
    k, j, i = np.indices(shape)
    c = [(n - 1) / 2 for n in shape]
    x, y, z = (i - c[2]) * sx - shift[0], (j - c[1]) * sy - shift[1], (k - c[0]) * sz - shift[2]
    return x * x + y * y + z * z <= radius * radius


def reference(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    """The same definition computed another way: the surface voxels as ``mask ^ binary_erosion(mask)``
    (with the border counting as outside), distances from scipy's exact EDT with the spacing in array order."""
    sp = tuple(spacing)[::-1]

    def edges(m):
        return m & ~ndimage.binary_erosion(np.pad(m, 1))[1:-1, 1:-1, 1:-1]

    ep, et = edges(pred), edges(truth)
    to_true = ndimage.distance_transform_edt(~et, sampling=sp)
    to_pred = ndimage.distance_transform_edt(~ep, sampling=sp)
    signed = np.concatenate([np.where(truth[ep], -1.0, 1.0) * to_true[ep],
                             np.where(pred[et], 1.0, -1.0) * to_pred[et]])
    return float(signed.mean())


def test_ball_one_mm_smaller_is_minus_one_mm_and_larger_plus_one():
    big, small = ball(10.0), ball(9.0)
    inward = mean_signed_surface_distance(small, big, spacing=SPACING)
    outward = mean_signed_surface_distance(big, small, spacing=SPACING)
    assert inward == pytest.approx(-1.0, abs=0.12)  # voxel-centre distances: -0.94 on this grid
    assert outward == pytest.approx(1.0, abs=0.12)
    assert outward == pytest.approx(-inward)
    # the whole boundary lies on one side: |MSSD| equals the (unsigned) average surface distance
    assert abs(inward) == pytest.approx(surface_distances(small, big, spacing=SPACING)[1])


def test_spacing_is_read_along_index_axes():
    """A 2-voxel shrink along z (array axis 0) is 1.6 mm at sz = 0.8, not 0.8 mm (sx)."""
    truth = np.zeros((30, 60, 60), bool)
    truth[5:25, 10:50, 10:50] = True
    pred = truth.copy()
    pred[23:25] = False  # the top 2 slices missing
    d = mean_signed_surface_distance(pred, truth, spacing=SPACING)
    assert d < 0
    assert d == pytest.approx(reference(pred, truth, SPACING))
    swapped = mean_signed_surface_distance(pred, truth, spacing=SPACING[::-1])
    assert swapped != pytest.approx(d)


def test_identical_masks_give_zero():
    b = ball(8.0)
    assert mean_signed_surface_distance(b, b, spacing=SPACING) == 0.0


def test_a_shift_gives_zero_mean_but_a_nonzero_unsigned_distance():
    truth, shifted = ball(9.0), ball(9.0, shift=(1.6, 0.0, 0.0))
    d = mean_signed_surface_distance(shifted, truth, spacing=SPACING)
    asd = surface_distances(shifted, truth, spacing=SPACING)[1]
    assert abs(d) < 0.05
    assert asd > 0.5


def test_a_missed_part_is_inward_and_a_stray_blob_outward():
    truth = ball(9.0)
    missed = truth.copy()
    missed[:, :, :40] = False  # half the ball not found: its cut face lies inside the truth
    assert mean_signed_surface_distance(missed, truth, spacing=SPACING) < -1.0
    blob = truth | ball(3.0, shift=(0.0, 0.0, -11.0))  # a stray blob outside
    assert mean_signed_surface_distance(blob, truth, spacing=SPACING) > 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_an_edt_reference_on_irregular_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (18, 30, 34)
    truth = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.5
    pred = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.5
    pred[0] |= truth[0]  # touch the array's border: surface voxels there too
    spacing = (0.45, 0.7, 1.9)
    d = mean_signed_surface_distance(pred, truth, spacing=spacing)
    assert d == pytest.approx(reference(pred, truth, spacing), abs=1e-9)
    assert abs(d) <= surface_distances(pred, truth, spacing=spacing)[1] + 1e-9


def test_empty_masks_give_nan():
    b = ball(5.0)
    e = np.zeros_like(b)
    assert math.isnan(mean_signed_surface_distance(e, b, spacing=SPACING))
    assert math.isnan(mean_signed_surface_distance(b, e, spacing=SPACING))
    assert math.isnan(mean_signed_surface_distance(e, e, spacing=SPACING))


def test_per_structure_on_label_arrays():
    truth = np.zeros((40, 70, 80), np.uint8)
    truth[ball(10.0)] = 1
    truth[ball(3.0, shift=(12.5, 0.0, 0.0))] = 3  # a nerve beside the globe, no muscles
    pred = np.zeros_like(truth)
    pred[ball(9.0)] = 1
    pred[ball(3.0, shift=(12.5, 0.0, 0.0))] = 3
    out = signed_surface_distance_per_structure(pred, truth, spacing=SPACING)
    assert set(out) == {1, 2, 3}
    assert out[1] == pytest.approx(mean_signed_surface_distance(pred == 1, truth == 1, spacing=SPACING))
    assert out[1] < -0.8
    assert math.isnan(out[2])
    assert out[3] == 0.0
    with pytest.raises(ValueError):
        signed_surface_distance_per_structure(pred + 4, truth, spacing=SPACING)
