"""Where the labeling page looks: orbit frames from the finder's boxes or from labels, and where borders help."""

from __future__ import annotations

import numpy as np
import pytest

from orbitseg.labeling.orbit_view import (AIR_HU, BONE_HU, GLOBE_BALL_MM, NEAR_FAT_MM, OrbitExtent, extents_from_labels,
                                          orbit_frame, soft_tissue, visible_borders)

SHAPE = (40, 120, 160)  # (nz, ny, nx)
SPACING = (2.0, 1.0, 0.5)  # (sz, sy, sx) mm: anisotropic so that axis mix-ups show


def _two_orbits():
    right = OrbitExtent("right", (20.0, 30.0, 50.0), (10, 15, 20), (30, 80, 75))
    left = OrbitExtent("left", (22.0, 34.0, 110.0), (12, 18, 85), (32, 84, 140))
    return right, left


def test_frame_opens_through_both_globes_and_holds_both_boxes():
    right, left = _two_orbits()
    f = orbit_frame([left, right], SHAPE, SPACING, margin_mm=4.0)
    assert [o.side for o in f.orbits] == ["right", "left"]  # right first, whatever the input order
    # axial and coronal slices halfway between the globe centres, sagittal through the right globe
    assert f.centre == (21, 32, 50)
    # the union of both boxes grown by 4 mm on every side: 2 slices, 4 rows, 8 columns
    assert f.lo == (8, 11, 12) and f.hi == (34, 88, 148)
    assert f.orbits[0].lo == (8, 11, 12) and f.orbits[1].hi == (34, 88, 148)
    d = f.to_dict()
    assert d["centre"] == [21, 32, 50] and [o["side"] for o in d["orbits"]] == ["right", "left"]


def test_frame_is_clipped_to_the_scan():
    o = OrbitExtent("right", (1.0, 2.0, 3.0), (0, 0, 0), (5, 10, 20))
    f = orbit_frame([o], SHAPE, SPACING, margin_mm=30.0)
    assert f.lo == (0, 0, 0) and f.hi == (20, 40, 80)
    f = orbit_frame([OrbitExtent("left", (39.0, 119.0, 159.0), (35, 110, 150), (40, 120, 160))], SHAPE, SPACING)
    assert f.hi == SHAPE and f.centre == (39, 119, 159)


def test_frame_refuses_nothing_and_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        orbit_frame([], SHAPE, SPACING)
    with pytest.raises(ValueError, match="spacing"):
        orbit_frame(list(_two_orbits()), SHAPE, (1.0, 1.0))


def _labels():
    lab = np.zeros(SHAPE, np.uint8)
    lab[15:25, 20:40, 30:70] = 1  # right eyeball (small columns: the patient's right in LPS)
    lab[18:22, 40:70, 40:50] = 2
    lab[16:26, 22:42, 95:135] = 1  # left
    lab[19:21, 42:75, 120:126] = 3
    return lab


def test_extents_from_labels_split_the_sides_at_the_midline_gap():
    right, left = extents_from_labels(_labels(), SPACING)
    assert (right.side, left.side) == ("right", "left")
    assert right.lo == (15, 20, 30) and right.hi == (25, 70, 70)
    assert left.lo == (16, 22, 95) and left.hi == (26, 75, 135)
    # the centre is the eyeball's centroid, not that of every label of the side
    np.testing.assert_allclose(right.centre, (19.5, 29.5, 49.5))


def test_extents_from_one_labelled_orbit_and_from_nothing():
    lab = _labels()
    lab[:, :, 80:] = 0
    (only,) = extents_from_labels(lab, SPACING)
    assert only.side == "right"
    lab = _labels()
    lab[:, :, :80] = 0
    assert [e.side for e in extents_from_labels(lab, SPACING)] == ["left"]
    assert extents_from_labels(np.zeros(SHAPE, np.uint8), SPACING) == []
    # a gap narrower than the side gap does not split one orbit in two
    lab = np.zeros(SHAPE, np.uint8)
    lab[10:20, 10:20, 30:40] = 1
    lab[10:20, 10:20, 45:55] = 2  # 5 columns x 0.5 mm = 2.5 mm apart
    assert len(extents_from_labels(lab, SPACING)) == 1


def _slice():
    """An axial slice: air in front, a fat-filled orbit with a globe on the right, brain behind, bone."""
    img = np.full(SHAPE[1:], 35, np.int16)  # brain-like soft tissue everywhere
    img[:15] = -1000  # air in front of the face
    img[20:60, 25:75] = -100  # orbital fat
    img[22:42, 35:65] = 10  # globe inside it
    img[60:64, :] = 1200  # a bone plate
    return img


def test_border_region_is_the_orbit_not_air_bone_or_brain():
    right, left = _two_orbits()
    f = orbit_frame([right, left], SHAPE, SPACING, margin_mm=0.0)
    img = _slice()
    reg = f.border_region(img, 20, SPACING)
    assert reg[30, 50] and reg[50, 30]  # globe, fat
    assert not reg[:15].any()  # air
    assert not reg[60:64].any()  # bone
    assert not reg[:, 76:85].any()  # between the boxes
    # brain inside the right box but far from fat and from the globe ball: no borders
    assert not reg[75:80, 25:70].any()
    # brain just behind the fat (within NEAR_FAT_MM) keeps them
    assert reg[64, 50] and not reg[66, 50]  # 5 and 7 mm from the fat's last row (59)
    assert NEAR_FAT_MM == 6.0
    # no orbit on slice 5: nowhere
    assert not f.border_region(img, 5, SPACING).any()
    assert soft_tissue(np.array([AIR_HU - 1, AIR_HU, BONE_HU, BONE_HU + 1])).tolist() == [False, True, True, False]


def test_border_region_keeps_the_globe_ball_without_fat():
    o = OrbitExtent("right", (10.0, 50.0, 80.0), (0, 0, 0), (20, 120, 160))
    f = orbit_frame([o], SHAPE, SPACING, margin_mm=0.0)
    img = np.full(SHAPE[1:], 20, np.int16)  # no fat at all
    reg = f.border_region(img, 10, SPACING)
    rr, cc = np.nonzero(reg)
    d = np.hypot((rr - 50) * SPACING[1], (cc - 80) * SPACING[2])
    assert d.max() <= GLOBE_BALL_MM and reg[50, 80] and reg[50, 80 + int(GLOBE_BALL_MM / SPACING[2]) - 1]


def test_visible_borders_keep_only_the_region():
    b = np.ones((4, 5), np.uint8)
    reg = np.zeros((4, 5), bool)
    reg[1:3, 2:4] = True
    out = visible_borders(b, reg)
    assert out.dtype == np.uint8 and out.sum() == 4 and out[1:3, 2:4].all()
    with pytest.raises(ValueError, match="same 2-D shape"):
        visible_borders(b, reg[:3])
