"""orbit_measurements: patient's left/right in LPS, independent of the direction matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orbitseg.evaluate.measure import midline_x, orbit_measurements, paired_measurements
from orbitseg.io.volume import Geometry, Volume

SPACING = (2.0, 1.0, 2.0)
SHAPE = (10, 12, 40)  # (nz, ny, nx); x from -39 to +39 mm on the identity grid
X0 = -39.0


def anatomy() -> np.ndarray:
    """Labels on the identity grid: patient's right (x < 0) has the bigger globe and a muscle."""
    a = np.zeros(SHAPE, np.uint8)
    a[2:8, 2:8, 2:10] = 1  # right globe: 6*6*8 = 288 voxels, x -35..-21, centroid -28
    a[3:7, 3:7, 31:37] = 1  # left globe: 4*4*6 = 96 voxels, x +23..+33, centroid +28
    a[2:4, 9:11, 3:8] = 2  # right muscle: 20 voxels
    a[5, 9:11, 18:22] = 3  # nerve across the midline (x -3, -1, +1, +3): 4 right, 4 left
    return a


def by_side(rows):
    return {r["side"]: r for r in rows}


def identity_volume() -> Volume:
    return Volume(anatomy(), Geometry(size=SHAPE[::-1], spacing=SPACING, origin=(X0, 0.0, 0.0)))


def test_identity_grid_assigns_patients_sides():
    rows = by_side(orbit_measurements(identity_volume()))
    vml = 2.0 * 1.0 * 2.0 / 1000
    assert rows["right"]["globe_ml"] == pytest.approx(288 * vml)
    assert rows["left"]["globe_ml"] == pytest.approx(96 * vml)
    assert rows["right"]["muscles_ml"] == pytest.approx(20 * vml) and rows["left"]["muscles_ml"] == 0.0
    assert rows["right"]["nerve_ml"] == pytest.approx(4 * vml) == rows["left"]["nerve_ml"]
    assert rows["left_minus_right_ml"]["globe_ml"] == pytest.approx((96 - 288) * vml)
    assert rows["asymmetry_pct"]["globe_ml"] == pytest.approx(100 * (96 - 288) / 192)
    assert rows["asymmetry_pct"]["muscles_ml"] == pytest.approx(-200.0)
    assert rows["asymmetry_pct"]["nerve_ml"] == pytest.approx(0.0)
    # midline halfway between the globe centroids: (-28 + 28) / 2
    assert rows["right"]["midline_from"] == "eyeballs"
    assert rows["right"]["midline_x_mm"] == pytest.approx(0.0)


def test_flipped_x_direction_gives_same_sides():
    """Same physical anatomy stored with the i axis pointing to the patient's right."""
    ident = identity_volume()
    nx = SHAPE[2]
    x_last = X0 + (nx - 1) * SPACING[0]
    flipped = Volume(
        anatomy()[:, :, ::-1].copy(),
        Geometry(size=SHAPE[::-1], spacing=SPACING, origin=(x_last, 0.0, 0.0), direction=np.diag([-1.0, 1.0, 1.0])),
    )
    # the same voxel sits at the same physical point
    assert np.allclose(flipped.geometry.index_to_physical([nx - 1, 3, 4]), ident.geometry.index_to_physical([0, 3, 4]))
    a, b = orbit_measurements(ident), orbit_measurements(flipped)
    for ra, rb in zip(a, b):
        assert ra["side"] == rb["side"]
        for k in ("globe_ml", "muscles_ml", "nerve_ml", "midline_x_mm"):
            assert ra[k] == pytest.approx(rb[k]), (ra["side"], k)
    assert by_side(b)["right"]["globe_ml"] > by_side(b)["left"]["globe_ml"]


def test_without_eyeballs_midline_is_volume_centre():
    a = np.zeros(SHAPE, np.uint8)
    a[2:4, 2:4, 30:35] = 2  # muscle at x = +21..+29: patient's left
    vol = Volume(a, Geometry(size=SHAPE[::-1], spacing=SPACING, origin=(X0, 0.0, 0.0)))
    assert midline_x(vol) == (pytest.approx(0.0), "volume_centre")
    rows = by_side(orbit_measurements(vol))
    assert rows["left"]["muscles_ml"] > 0 and rows["right"]["muscles_ml"] == 0.0
    assert math.isnan(rows["asymmetry_pct"]["globe_ml"])


def test_one_globe_in_pieces_does_not_set_the_midline():
    a = np.zeros(SHAPE, np.uint8)
    a[2:8, 2:8, 2:6] = 1
    a[2:8, 2:8, 7:11] = 1  # a second piece of the same globe, centroids 10 mm apart
    vol = Volume(a, Geometry(size=SHAPE[::-1], spacing=SPACING, origin=(X0, 0.0, 0.0)))
    assert midline_x(vol)[1] == "volume_centre"
    rows = by_side(orbit_measurements(vol))
    assert rows["left"]["globe_ml"] == 0.0 and rows["right"]["globe_ml"] > 0


def test_paired_measurements_use_the_truths_midline():
    """A prediction that misses the left globe is still split at the truth's midline (x = 0):
    its nerve stays 4 + 4 voxels instead of moving with a volume-centre midline."""
    wide = np.concatenate([anatomy(), np.zeros(SHAPE[:2] + (20,), np.uint8)], axis=2)  # volume centre x = +20
    truth = Volume(wide, Geometry(size=wide.shape[::-1], spacing=SPACING, origin=(X0, 0.0, 0.0)))
    pred_a = wide.copy()
    pred_a[3:7, 3:7, 31:37] = 0  # left globe missed: alone, the prediction would be split at x = +20
    pred = truth.like(pred_a)
    assert midline_x(pred)[1] == "volume_centre"
    rows = by_side(paired_measurements(pred, truth, "c1"))
    vml = 2.0 * 1.0 * 2.0 / 1000
    assert rows["left"]["case"] == "c1"
    assert rows["left"]["globe_ml_pred"] == 0.0 and rows["left"]["globe_ml_true"] == pytest.approx(96 * vml)
    assert rows["right"]["globe_ml_pred"] == rows["right"]["globe_ml_true"] == pytest.approx(288 * vml)
    assert rows["right"]["nerve_ml_pred"] == pytest.approx(4 * vml) == rows["left"]["nerve_ml_pred"]
    assert rows["asymmetry_pct"]["globe_ml_pred"] == pytest.approx(-200.0)
    with pytest.raises(ValueError, match="shape"):
        paired_measurements(pred, Volume(np.zeros((2, 2, 2), np.uint8), Geometry(size=(2, 2, 2), spacing=(1, 1, 1), origin=(0, 0, 0))), "c2")

