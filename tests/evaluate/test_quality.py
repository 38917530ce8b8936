"""Quality flags: each fires on a label volume built to deserve it, and none on a normal synthetic patient."""

import math
import numpy as np
import pytest
from scipy import ndimage

from orbitseg.constants import EYEBALL, MUSCLES, NERVE
from orbitseg.evaluate.measure import midline_x, orbit_measurements
from orbitseg.evaluate.quality import (ASYMMETRY_LIMITS_PCT, EDGE_AREA_MM2, FOLD_AGREEMENT_MIN, REFERENCE_RANGES_ML,
                                       THICK_SLICE_MM, acquisition_of, flag_codes, flags_summary, fold_agreement,
                                       fold_agreement_by_side, quality_flags)
from orbitseg.io.orient import to_canonical
from orbitseg.io.volume import Volume
from orbitseg.preprocess.pipeline import BoxProbabilities
from orbitseg.synth import render_patient, sample_patient

#: a small synthetic patient without thyroid eye disease whose true labels deserve no flag
SEED = 14


@pytest.fixture(scope="module")
def patient():
    ct, lab = render_patient(sample_patient(np.random.default_rng(SEED), small=True))
    return ct, lab


def side_mask(lab: Volume, side: str) -> np.ndarray:
    mid, _ = midline_x(lab)
    kji = np.indices(lab.shape).reshape(3, -1).T
    x = lab.geometry.index_to_physical(kji[:, ::-1].astype(float))[:, 0].reshape(lab.shape)
    return x < mid if side == "right" else x >= mid


def edited(lab: Volume, fn) -> Volume:
    a = lab.array.copy()
    fn(a)
    return lab.like(a)


def codes(flags) -> set[str]:
    return {f"{f['code']}@{f['side']}" for f in flags}


def own_range(ct, lab) -> dict:
    """A training record whose every range is exactly this scan's own acquisition."""
    acq = acquisition_of(ct, lab)
    return {k: [v, v] for k, v in acq.items() if v is not None} | {"source": "the test's own scan"}


def test_normal_patient_has_no_flag(patient):
    ct, lab = patient
    vols = orbit_measurements(lab)
    assert all(REFERENCE_RANGES_ML[s][0] <= vols[i][k] <= REFERENCE_RANGES_ML[s][1]
               for i in (0, 1) for s, k in ((EYEBALL, "globe_ml"), (MUSCLES, "muscles_ml"), (NERVE, "nerve_ml")))
    flags = quality_flags(lab, ct, fold_labels=[lab.array] * 3, training_acquisition=own_range(ct, lab))
    assert flags == []
    assert flags_summary(flags) == "ok"


def test_nerve_removed_on_one_side_is_missing_there_only(patient):
    ct, lab = patient
    left = side_mask(lab, "left")
    flags = quality_flags(edited(lab, lambda a: a.__setitem__((a == NERVE) & left, 0)), ct)
    assert codes(flags) == {"nerve_missing@left"}  # no asymmetry or range flag on top of it
    f = flags[0]
    assert f["value"] == 0.0 and "left orbit" in f["message"] and f["message"].endswith(".")
    assert flags_summary(flags) == "1 flag: nerve missing (left)"
    both = quality_flags(edited(lab, lambda a: a.__setitem__(a == NERVE, 0)), ct)
    assert codes(both) == {"nerve_missing@both"}


def test_enlarged_globe_is_above_range_and_asymmetric(patient):
    ct, lab = patient
    right = side_mask(lab, "right")

    def grow(a):
        eye = (a == EYEBALL) & right
        for _ in range(30):
            eye = ndimage.binary_dilation(eye) & right
            ml = eye.sum() * lab.geometry.voxel_volume_ml
            if ml > REFERENCE_RANGES_ML[EYEBALL][1] + 0.3:
                break
        a[eye] = EYEBALL

    flags = quality_flags(edited(lab, grow), ct)
    assert {"eyeball_volume_high@right", "eyeball_asymmetry@both"} <= codes(flags)
    assert not any(c.startswith("eyeball") and c.endswith("@left") for c in codes(flags))
    high = next(f for f in flags if f["code"] == "eyeball_volume_high")
    assert high["value"] > REFERENCE_RANGES_ML[EYEBALL][1] and "above range (right)" in flags_summary(flags)


def test_shrunken_globe_is_below_range(patient):
    ct, lab = patient
    right = side_mask(lab, "right")

    def shrink(a):
        eye = (a == EYEBALL) & right
        while eye.sum() * lab.geometry.voxel_volume_ml >= REFERENCE_RANGES_ML[EYEBALL][0] - 0.3:
            eye = ndimage.binary_erosion(eye)
        a[((a == EYEBALL) & right) & ~eye] = 0

    assert "eyeball_volume_low@right" in codes(quality_flags(edited(lab, shrink), ct))


def test_muscles_halved_on_one_side_are_asymmetric_but_in_range(patient):
    ct, lab = patient
    left = side_mask(lab, "left")

    def halve(a):
        sel = (a == MUSCLES) & left
        sel[::2] = False  # every other slice keeps its muscles
        a[sel] = 0

    lab2 = edited(lab, halve)
    asym = abs(orbit_measurements(lab2)[3]["muscles_ml"])
    assert asym > ASYMMETRY_LIMITS_PCT[MUSCLES]
    flags = quality_flags(lab2, ct)
    assert codes(flags) == {"muscles_asymmetry@both"}
    assert flags[0]["value"] == pytest.approx(asym)
    # just inside the limit: nothing
    assert quality_flags(lab, ct) == []


def test_orbit_cut_by_the_field_of_view(patient):
    ct, lab = patient
    c = to_canonical(lab)
    kji = np.argwhere(c.array == EYEBALL)
    mid, _ = midline_x(c)
    x = c.geometry.index_to_physical(kji[:, ::-1].astype(float))[:, 0]
    i_cut = int(kji[x < mid, 2].mean())
    g = c.geometry
    cut = Volume(np.ascontiguousarray(c.array[:, :, i_cut:]),
                 g.with_(size=(g.size[0] - i_cut, g.size[1], g.size[2]),
                         origin=tuple(g.index_to_physical(np.array([i_cut, 0, 0], dtype=float)))))
    flags = quality_flags(cut)
    assert "cut_by_scan_edge@right" in codes(flags)
    assert "cut_by_scan_edge@left" not in codes(flags)
    assert "cut_by_scan_edge" not in flag_codes(quality_flags(c))


def test_muscle_tips_on_the_top_slice_are_not_a_cut_orbit_but_a_muscle_section_is(patient):
    _, lab = patient
    c = to_canonical(lab)
    right = side_mask(c, "right")
    px = c.geometry.spacing[0] * c.geometry.spacing[1]
    top = c.shape[0] - 1

    def patch(mm2):
        a = c.array.copy()
        a[top] = 0  # nothing of the orbit on the top slice but the patch
        inner = np.zeros_like(right[top])
        inner[1:-1, 1:-1] = True  # on the top face only, not on its edges (which are other faces too)
        ys, xs = np.nonzero(right[top] & inner)
        n = int(mm2 / px)
        a[top, ys[:n], xs[:n]] = MUSCLES
        return c.like(a)

    assert "cut_by_scan_edge" not in flag_codes(quality_flags(patch(EDGE_AREA_MM2[MUSCLES] - 20)))
    flags = quality_flags(patch(EDGE_AREA_MM2[MUSCLES] + 20))
    assert "cut_by_scan_edge@right" in codes(flags) and "cut_by_scan_edge@left" not in codes(flags)


def test_fold_disagreement_from_label_maps_and_from_box_probabilities(patient):
    ct, lab = patient
    left = side_mask(lab, "left")
    no_left_muscles = edited(lab, lambda a: a.__setitem__((a == MUSCLES) & left, 0)).array
    agree = fold_agreement(lab, fold_labels=[lab.array, lab.array, no_left_muscles])
    assert agree[("left", MUSCLES)] == pytest.approx(1 / 3)
    assert agree[("right", MUSCLES)] == 1.0 and agree[("left", NERVE)] == 1.0
    flags = quality_flags(lab, ct, fold_labels=[lab.array, lab.array, no_left_muscles])
    assert codes(flags) == {"muscles_fold_disagreement@left"}
    assert flags[0]["value"] == pytest.approx(1 / 3) and flags[0]["limit"] == f">= {FOLD_AGREEMENT_MIN[MUSCLES]:g}"
    # a model's own limits (model.json fold_agreement_min) replace the default for the structures they name
    own = quality_flags(lab, ct, fold_labels=[lab.array, lab.array, no_left_muscles], fold_limits={"muscles": 0.3})
    assert not codes(own)
    own = quality_flags(lab, ct, fold_labels=[lab.array] * 3, fold_limits={"nerve": 1.01, "how": "a note"})
    assert codes(own) == {"nerve_fold_disagreement@right", "nerve_fold_disagreement@left"}
    assert {f["limit"] for f in own} == {">= 1.01"}
    # the same folds as the Segmenter gives them: probabilities on the canonical grid, over a box
    boxes = []
    z = np.flatnonzero(to_canonical(lab).array.any(axis=(1, 2)))
    for a in (lab.array, lab.array, no_left_muscles):
        canon = to_canonical(lab.like(a)).array
        sub = canon[z[0]: z[-1] + 1]
        boxes.append(BoxProbabilities(canon.shape, (int(z[0]), 0, 0),
                                      np.stack([sub == k for k in range(4)]).astype(np.float32)))
    assert fold_agreement(lab, fold_probabilities=boxes) == pytest.approx(agree, nan_ok=True)
    assert codes(quality_flags(lab, ct, fold_probabilities=boxes)) == {"muscles_fold_disagreement@left"}
    # the sides of the box split in mm: the same anatomy on 0.3 mm columns (origin far from the midline) agrees
    g = lab.geometry
    narrow = Volume(lab.array, g.with_(spacing=(0.3, g.spacing[1], g.spacing[2]), origin=(-40.0, *g.origin[1:])))
    for how in ({"fold_probabilities": boxes}, {"fold_labels": [lab.array, lab.array, no_left_muscles]}):
        narrow_agree = fold_agreement(narrow, **how)
        assert narrow_agree[("left", MUSCLES)] == pytest.approx(1 / 3) and narrow_agree[("right", MUSCLES)] == 1.0


def test_acquisition_outside_the_training_range(patient):
    ct, lab = patient
    train = own_range(ct, lab)
    assert quality_flags(lab, ct, training_acquisition=train) == []
    thin = train | {"slice_mm": [0.5, 1.0], "pixel_mm": [0.3, 0.5]}
    assert codes(quality_flags(lab, ct, training_acquisition=thin)) == {"acquisition_slice@both",
                                                                         "acquisition_pixel@both"}
    # contrast medium: the muscles 100 HU brighter than the training scans' muscles
    bright = ct.like(np.where(lab.array == MUSCLES, ct.array + 100, ct.array).astype(ct.array.dtype))
    assert codes(quality_flags(lab, bright, training_acquisition=train)) == {"acquisition_contrast_muscle@both"}
    # a gantry tilt the reader resampled away, against the tilted grids of training
    tilted = Volume(ct.array, ct.geometry, None, {"resampled": {"gantry_tilt_deg": 30.0}})
    train_tilt = train | {"obliquity_deg": [0.0, 20.0]}
    assert codes(quality_flags(lab, tilted, training_acquisition=train_tilt)) == {"acquisition_gantry_tilt@both"}
    mild = Volume(ct.array, ct.geometry, None, {"resampled": {"gantry_tilt_deg": 18.5}})
    assert quality_flags(lab, mild, training_acquisition=train_tilt) == []
    # a field of view smaller than training's
    assert codes(quality_flags(lab, ct, training_acquisition=train | {"fov_mm": [300.0, 400.0]})) == {
        "acquisition_fov@both"}


def test_every_flag_is_a_complete_record(patient):
    ct, lab = patient
    left = side_mask(lab, "left")
    lab2 = edited(lab, lambda a: a.__setitem__((a == NERVE) & left, 0))
    flags = quality_flags(lab2, ct, fold_labels=[lab.array, lab2.array],
                          training_acquisition=own_range(ct, lab) | {"slice_mm": [0.5, 1.0]})
    assert len(flags) >= 2
    for f in flags:
        assert set(f) == {"side", "code", "message", "value", "limit"}
        assert f["side"] in ("right", "left", "both") and f["code"].replace("_", "").isalpha()
        assert f["message"][0].isupper() and f["message"].endswith(".") and isinstance(f["limit"], str)
        assert f["value"] is None or isinstance(f["value"], float)
    s = flags_summary(flags)
    assert s.startswith(f"{len(flags)} flags: ") and "nerve missing (left)" in s
    assert flag_codes(flags, "right") == ";".join(f["code"] for f in flags if f["side"] in ("right", "both"))


def test_measurements_given_by_the_caller_are_used_not_measured_again(patient):
    """predict measures once (with the clinical columns) and hands the rows to the flags: the same flags as
    measuring inside, and it is those rows (volumes, midline) the flags read."""
    ct, lab = patient
    left = side_mask(lab, "left")
    lab2 = edited(lab, lambda a: a.__setitem__((a == NERVE) & left, 0))
    folds = [lab.array, lab.array, edited(lab, lambda a: a.__setitem__((a == MUSCLES) & left, 0)).array]
    train = own_range(ct, lab)
    rows = orbit_measurements(lab2, ct, clinical=True)
    inside = quality_flags(lab2, ct, fold_labels=folds, training_acquisition=train)
    assert quality_flags(lab2, ct, fold_labels=folds, training_acquisition=train, measurements=rows) == inside
    assert "nerve_missing@left" in codes(inside)
    # rows that say the right globe is gone: the flag follows the rows, not the labels
    rows = [dict(r) for r in rows]
    rows[0]["globe_ml"] = 0.0
    assert "eyeball_missing@right" in codes(quality_flags(lab2, ct, measurements=rows))
    # their midline splits the sides: moved far to the left, every voxel is the right orbit's
    far = [dict(r, midline_x_mm=r["midline_x_mm"] + 500.0) for r in orbit_measurements(lab, ct)]
    assert fold_agreement(lab, fold_labels=folds, midline=far[0]["midline_x_mm"])[("left", MUSCLES)] != \
        fold_agreement(lab, fold_labels=folds)[("left", MUSCLES)]
    assert "muscles_fold_disagreement@left" not in codes(quality_flags(lab, ct, fold_labels=folds, measurements=far))


def test_fold_agreement_given_per_side_on_its_own_grid(patient):
    ct, lab = patient
    a = np.zeros((4, 8, 8), np.uint8)
    a[1:3, 2:6, 2:6] = MUSCLES
    half = a.copy()
    half[:, :, 4:] = 0  # half the muscle voxels
    agree = fold_agreement_by_side({"right": [a, a, a], "left": [a, a, half]})
    assert agree[("right", MUSCLES)] == 1.0 and math.isnan(agree[("right", NERVE)])
    # pairs (a, a) 1, (a, half) and (a, half) 2 * 16 / (32 + 16) = 2/3
    assert agree[("left", MUSCLES)] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    flags = quality_flags(lab, ct, agreement=agree)
    assert codes(flags) == {"muscles_fold_disagreement@left"}
    with pytest.raises(ValueError, match="side"):
        fold_agreement_by_side({"middle": [a, a]})
    with pytest.raises(ValueError, match="one of"):
        quality_flags(lab, ct, agreement=agree, fold_labels=[lab.array, lab.array])


def test_thick_slices_inside_the_training_range_are_flagged_for_the_nerve(patient):
    ct, lab = patient
    assert ct.geometry.spacing[2] < THICK_SLICE_MM
    train = own_range(ct, lab) | {"slice_mm": [0.5, 5.0]}
    assert "thick_slices@both" not in codes(quality_flags(lab, ct, training_acquisition=train))

    def sliced(mm):  # the same arrays on slices of ``mm``: only the thickness matters to this check
        g = ct.geometry.with_(spacing=(*ct.geometry.spacing[:2], mm))
        return Volume(lab.array, g), Volume(ct.array, g)

    lab4, ct4 = sliced(4.0)
    flags = quality_flags(lab4, ct4, training_acquisition=train)
    assert "thick_slices@both" in codes(flags) and "acquisition_slice@both" not in codes(flags)
    thick = next(f for f in flags if f["code"] == "thick_slices")
    assert thick["value"] == pytest.approx(4.0) and "nerve" in thick["message"]
    assert "slices 4 mm: nerve less reliable (both)" in flags_summary(flags)
    assert "thick_slices@both" not in codes(quality_flags(*sliced(3.7), training_acquisition=train))
    # thicker than training: the acquisition flag says so, not both
    narrow = codes(quality_flags(lab4, ct4, training_acquisition=train | {"slice_mm": [0.5, 2.0]}))
    assert "acquisition_slice@both" in narrow and "thick_slices@both" not in narrow
