"""Connected-component post-processing: per orbit side, chosen on validation cases only."""

import json

import numpy as np
import pytest

from orbitseg.constants import EYEBALL, MUSCLES, NERVE
from orbitseg.errors import InputError
from orbitseg.io.volume import Geometry, Volume
from orbitseg.predict.postprocess import (NO_POSTPROCESSING, apply_postprocessing, choose_postprocessing,
                                          keep_largest_per_orbit, pool_choices, read_postprocessing,
                                          write_postprocessing)
from tests.conftest import DIRECTIONS


def _orbits(direction: str = "identity") -> tuple[Volume, np.ndarray]:
    """(labels with stray islands, the clean truth): two globes, four 'rectus muscles' and a nerve
    per side, on a 20 x 40 x 60 grid; plus a globe speck and a muscle speck on each side."""
    a = np.zeros((20, 40, 60), np.uint8)
    z, y, x = np.ogrid[:20, :40, :60]
    for cx in (15, 45):  # array x index of each globe
        a[(z - 10) ** 2 + (y - 10) ** 2 + (x - cx) ** 2 < 36] = EYEBALL
        for dz, dx in ((-4, 0), (4, 0), (0, -4), (0, 4)):  # four separate muscle bellies behind the globe
            a[10 + dz - 1:10 + dz + 1, 20:32, cx + dx - 1:cx + dx + 1] = MUSCLES
        a[9:11, 20:34, cx:cx + 1] = NERVE
    truth = a.copy()
    for cx in (15, 45):
        a[2, 35, cx - 8] = EYEBALL  # islands far from the structure
        a[17, 37, cx + 8] = MUSCLES
        a[2, 2, cx] = NERVE
    geom = Geometry(size=a.shape[::-1], spacing=(0.5, 0.6, 1.5), origin=(3.0, -2.0, 7.0),
                    direction=DIRECTIONS[direction])
    return Volume(a, geom), truth


@pytest.mark.parametrize("direction", ["identity", "flipped", "oblique"])
def test_largest_keeps_one_component_per_side(direction):
    labels, truth = _orbits(direction)
    out = keep_largest_per_orbit(labels, [EYEBALL, NERVE]).array
    np.testing.assert_array_equal(out == EYEBALL, truth == EYEBALL)  # both globes kept, specks gone
    np.testing.assert_array_equal(out == NERVE, truth == NERVE)
    np.testing.assert_array_equal(out == MUSCLES, labels.array == MUSCLES)  # not asked: untouched
    assert out.shape == labels.shape and labels.array[2, 35, 7] == EYEBALL  # input not modified


def test_islands_rule_keeps_the_separate_muscles():
    labels, truth = _orbits()
    islands = keep_largest_per_orbit(labels, [MUSCLES], min_fraction=0.1).array
    np.testing.assert_array_equal(islands == MUSCLES, truth == MUSCLES)
    largest = keep_largest_per_orbit(labels, [MUSCLES]).array
    assert (largest == MUSCLES).sum() == (truth == MUSCLES).sum() // 4  # one belly per side left


def test_choice_on_validation_and_apply():
    labels, truth = _orbits()
    choice = choose_postprocessing([("a", labels, truth)])
    assert choice["rules"]["eyeball"] in ("largest", "islands")
    assert choice["rules"]["muscles"] == "islands"  # "largest" would lose three muscles per side
    assert choice["validation"]["muscles"]["largest"] < choice["validation"]["muscles"]["none"]
    np.testing.assert_array_equal(apply_postprocessing(labels, choice).array, truth)
    # a clean prediction gives no reason to post-process: nothing is adopted
    clean = choose_postprocessing([("a", labels.like(truth), truth)])
    assert set(clean["rules"].values()) == {"none"}
    np.testing.assert_array_equal(apply_postprocessing(labels, NO_POSTPROCESSING).array, labels.array)


def test_pooled_choice_and_storage(tmp_path):
    labels, truth = _orbits()
    noisy = choose_postprocessing([("a", labels, truth)])
    clean = choose_postprocessing([("b", labels.like(truth), truth), ("c", labels.like(truth), truth)])
    pooled = pool_choices([noisy, clean])
    assert pooled["cases"] == ["a", "b", "c"] and pooled["rules"]["muscles"] == "islands"
    write_postprocessing(tmp_path, pooled)
    assert read_postprocessing(tmp_path)["rules"] == pooled["rules"]
    assert read_postprocessing(tmp_path / "nothing") is None
    (tmp_path / "postprocess.json").write_text(json.dumps({"rules": {"eyeball": "biggest"}}))
    with pytest.raises(InputError, match="postprocess.json"):
        read_postprocessing(tmp_path)


def test_bad_arguments_are_named():
    labels, _ = _orbits()
    with pytest.raises(ValueError, match="structures"):
        keep_largest_per_orbit(labels, [7])
    with pytest.raises(ValueError, match="min_fraction"):
        keep_largest_per_orbit(labels, [MUSCLES], min_fraction=0)
    with pytest.raises(ValueError, match="rules"):
        apply_postprocessing(labels, {"rules": {"lens": "largest"}})
    with pytest.raises(ValueError, match="pairs"):
        choose_postprocessing([])


def test_with_one_globe_the_sides_split_at_the_scan_centre_not_at_the_labels_box_centre():
    """Stored rules run on the labels' bounding box; without two globes the midline is still the whole grid's
    centre (x 49.5 here), as it is for measurements and flags."""
    a = np.zeros((10, 10, 100), np.uint8)
    a[3:7, 3:7, 60:71] = EYEBALL  # one globe: midline_x falls back to the grid's centre
    a[4:6, 4:6, 40:46] = NERVE  # 24 voxels, right of x 49.5
    a[4:6, 4:6, 50:54] = NERVE  # 16 voxels, left of x 49.5 (but right of the box's centre, x 55)
    labels = Volume(a, Geometry(size=(100, 10, 10), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)))
    out = apply_postprocessing(labels, {"rules": {"eyeball": "largest", "muscles": "none", "nerve": "largest"}})
    np.testing.assert_array_equal(out.array, a)  # one nerve piece on each side: both kept
    np.testing.assert_array_equal(keep_largest_per_orbit(labels, [NERVE]).array, a)
    # given a midline at x 55 instead, the smaller piece shares a side with the larger one and goes
    assert (keep_largest_per_orbit(labels, [NERVE], midline=55.0).array[:, :, 50:54] == 0).all()
