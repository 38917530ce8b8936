"""The clinical variant of the synthetic cohort (issue 20), and the default cohort left unchanged."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest

from orbitseg.synth import render_patient, sample_patient
from orbitseg.synth.cohort import plan_cohort

#: sha256 of (ct bytes + label bytes) of ``render_patient(sample_patient(default_rng(seed), small=True))``,
#: computed at commit 3779e16, before the clinical variant existed
DEFAULT_RENDER_SHA256 = {
    0: "bd476571b7a156e09d9fd386aa7c96ebc4f517ac7ad1edba27c13b8b9a6895cb",
    1: "58385f076d8f9b9294514241b578fab2225fe34aea51234220bc5e1ececd2da3",
    2: "7f65b52f59d777c5754b9f157c612c59bd922a982fda0678a7625f55adb2793e",
}
#: sha256 of every drawn parameter of ``plan_cohort(12, seed=3)`` (full-size scans), same commit
DEFAULT_PLAN_SHA256 = "d4d01ad48a89015a584652621d115b4bba85f6627e4f7e4bf8ee0c0c71b9ac87"
#: sha256 of every drawn parameter of ``plan_cohort(8, seed=46, variety="clinical")`` computed at commit a4fece6,
#: when 1.0-clinical2 was the clinical variety's only version (the shipped model's clinical scans are its seed 46)
CLINICAL2_PLAN_SHA256 = "54e76c8e4347e37fe0576c01bf4309cd5da593f193fe4468d48365eee096bba5"


@pytest.mark.parametrize("seed", sorted(DEFAULT_RENDER_SHA256))
def test_default_generator_renders_the_same_bytes_as_before(seed):
    ct, lab = render_patient(sample_patient(np.random.default_rng(seed), small=True))
    assert hashlib.sha256(ct.array.tobytes() + lab.array.tobytes()).hexdigest() == DEFAULT_RENDER_SHA256[seed]


def test_default_cohort_plan_draws_the_same_parameters_as_before():
    h = hashlib.sha256()
    for c, pid, prm, fmt in plan_cohort(12, seed=3):
        h.update(json.dumps([c, pid, fmt, prm.version, prm.small, asdict(prm.anatomy), asdict(prm.scan)],
                            sort_keys=True).encode())
    assert h.hexdigest() == DEFAULT_PLAN_SHA256


# ---------------------------------------------------------------------------
# the clinical variant: what it draws (cheap: no rendering)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def draws():
    from orbitseg.synth.params import sample_clinical_patient

    return [sample_clinical_patient(np.random.default_rng(s)) for s in range(200)]


def test_clinical_parameters_span_the_ranges_of_clinical_ct(draws):
    sc = [p.scan for p in draws]
    cl = [p.clinical for p in draws]
    yaw, pitch, roll = np.array([s.head_rotation for s in sc]).T
    assert pitch.min() >= -25 and pitch.max() <= 25 and pitch.min() < -22 and pitch.max() > 22
    for a in (yaw, roll):
        assert np.abs(a).max() <= 10 and a.min() < -8 and a.max() > 8
    th = np.array([s.slice_thickness for s in sc])
    assert th.min() == 0.5 and th.max() == 5.0 and (th >= 3.0).mean() > 0.15
    px = np.array([s.spacing_xy for s in sc])
    assert px.min() >= 0.25 and px.max() <= 1.0 and px.min() < 0.3 and px.max() > 0.9
    noise = np.array([s.noise_sigma for s in sc])
    assert noise.min() >= 5 and noise.max() <= 40 and noise.min() < 7 and noise.max() > 35
    assert {c.kernel for c in cl} == {"soft", "standard", "sharp", "bone"}
    over = {k: np.mean([c.overshoot for c in cl if c.kernel == k]) for k in ("soft", "bone")}
    assert over["soft"] == 0 and over["bone"] > 0.3
    contrast = np.array([c.contrast for c in cl])
    assert 0.2 < contrast.mean() < 0.5
    enh = np.array([c.enhance_muscle for c in cl])
    assert np.all(enh[~contrast] == 0) and enh[contrast].min() >= 20 and enh[contrast].max() <= 40
    assert all(c.enhance_vessel > c.enhance_muscle for c in cl if c.contrast)
    assert sum(len(c.metal) > 0 for c in cl) > 30
    assert {c.fov_cut for c in cl} == {-1, 0, 1}
    assert {c.age_group for c in cl} == {"child", "adult", "elderly"}
    ted = np.array([p.anatomy.left.ted for p in draws])
    assert ((ted > 1) & (ted < 1.6)).sum() >= 5 and ted.max() > 3.0
    assert sum(any(c.iol) for c in cl) >= 5 and sum(any(c.silicone) for c in cl) >= 3
    assert sum(c.fracture != 0 for c in cl) >= 5
    tilt = np.array([c.gantry_tilt for c in cl])
    assert (tilt != 0).mean() > 0.2 and np.abs(tilt).max() <= 30


def test_children_are_smaller_and_the_elderly_have_wider_csf(draws):
    by = {g: [p for p in draws if p.clinical.age_group == g] for g in ("child", "adult", "elderly")}
    mean = lambda ps, f: float(np.mean([f(p) for p in ps]))  # noqa: E731
    assert mean(by["child"], lambda p: p.anatomy.head_scale) < mean(by["adult"], lambda p: p.anatomy.head_scale) - 0.1
    assert mean(by["child"], lambda p: p.anatomy.left.orbit_length) < 0.9 * mean(
        by["adult"], lambda p: p.anatomy.left.orbit_length)
    assert mean(by["elderly"], lambda p: p.clinical.csf_rim) > mean(by["adult"], lambda p: p.clinical.csf_rim) + 1.0


def test_fov_cut_puts_the_edge_of_the_field_at_an_orbit(draws):
    for p in draws:
        c, s = p.clinical, p.scan
        if not c.fov_cut:
            continue
        rim = p.anatomy.globe_half_distance + (p.anatomy.left if c.fov_cut > 0 else p.anatomy.right).rim_halfwidth
        edge = s.head_offset[0] + c.fov_cut * s.matrix[0] * s.spacing_xy / 2  # head-frame x of that edge
        assert abs(edge - c.fov_cut * rim) <= 6.0


def test_variety_reaches_the_cohort_and_the_command_line():
    from orbitseg.cli import build_parser

    plan = plan_cohort(3, seed=1, small=True, variety="clinical")
    assert all(prm.clinical is not None and prm.version.endswith("clinical4") for _, _, prm, _ in plan)
    assert all(prm.clinical is None for _, _, prm, _ in plan_cohort(3, seed=1, small=True))
    with pytest.raises(ValueError, match="variety"):
        plan_cohort(1, variety="exotic")
    assert build_parser().parse_args(["synth", "out", "--variety", "clinical"]).variety == "clinical"
    assert build_parser().parse_args(["synth", "out"]).variety == "default"
    assert build_parser().parse_args(["synth", "out"]).generator_version == "1.0-clinical4"
    assert build_parser().parse_args(["synth", "out", "--generator-version", "1.0-clinical2"]
                                     ).generator_version == "1.0-clinical2"


def _plan_sha256(plan) -> str:
    h = hashlib.sha256()
    for c, pid, prm, fmt in plan:
        cl = asdict(prm.clinical)
        if cl.get("slice_tail_fwhm") == 0.0:  # a field clinical4 added; 0 (a plain box) before it, as pinned
            del cl["slice_tail_fwhm"]
        h.update(json.dumps([c, pid, fmt, prm.version, prm.small, asdict(prm.anatomy), asdict(prm.scan),
                             cl], sort_keys=True).encode())
    return h.hexdigest()


def test_an_earlier_clinical_version_is_drawn_as_it_was():
    """``clinical_version="1.0-clinical2"`` (``synth --generator-version``) re-makes the cohort the shipped model's
    clinical scans came from, parameter for parameter."""
    assert _plan_sha256(plan_cohort(8, seed=46, variety="clinical", clinical_version="1.0-clinical2")
                        ) == CLINICAL2_PLAN_SHA256
    from orbitseg.synth.params import sample_clinical_patient

    with pytest.raises(ValueError, match="version"):
        sample_clinical_patient(np.random.default_rng(0), version="1.0-clinical9")


def test_clinical3_draws_the_nerve_denser_or_lighter_than_its_muscles_and_changes_nothing_else():
    """clinical2 always made the optic nerve darker than its muscles (a real CT's nerve can be 17 HU denser);
    clinical3 draws nerve minus muscle over CLINICAL3_NERVE_VS_MUSCLE, and the same seed gives clinical2's
    patients, scans, follow-ups and file formats in every other respect (paired cohorts)."""
    from orbitseg.synth.params import CLINICAL3_NERVE_VS_MUSCLE

    old = plan_cohort(120, seed=46, variety="clinical", clinical_version="1.0-clinical2")
    new = plan_cohort(120, seed=46, variety="clinical", clinical_version="1.0-clinical3")
    assert [(c, p, f) for c, p, _, f in old] == [(c, p, f) for c, p, _, f in new]
    for (_, _, a, _), (_, _, b, _) in zip(old, new):
        assert a.scan == b.scan and a.clinical == b.clinical and b.version == "1.0-clinical3"
        assert asdict(a.anatomy) | {"hu": None} == asdict(b.anatomy) | {"hu": None}
        assert asdict(a.anatomy.hu) | {"nerve_offset": 0} == asdict(b.anatomy.hu) | {"nerve_offset": 0}
    d_old = np.array([p.anatomy.hu.nerve_offset - p.anatomy.hu.muscle_offset for _, _, p, _ in old])
    d_new = np.array([p.anatomy.hu.nerve_offset - p.anatomy.hu.muscle_offset for _, _, p, _ in new])
    lo, hi = CLINICAL3_NERVE_VS_MUSCLE
    assert d_old.max() <= 4.0  # the old draw: never denser than the muscles by more than 4 HU
    assert d_new.min() >= lo and d_new.max() <= hi
    assert d_new.min() < lo + 4 and d_new.max() > hi - 4 and (d_new > 10).mean() > 0.2


def test_a_followup_keeps_the_patient_and_draws_a_new_scan(draws):
    from orbitseg.synth import sample_followup

    p = next(p for p in draws if p.clinical.fracture and p.clinical.metal)
    f = sample_followup(p, np.random.default_rng(9))
    assert f.anatomy == p.anatomy and f.clinical.fracture == p.clinical.fracture
    assert f.clinical.metal == p.clinical.metal and f.clinical.ethmoid_seed == p.clinical.ethmoid_seed
    assert f.scan != p.scan and f.clinical != p.clinical  # the scan's own traits (kernel, contrast...) drawn again


# ---------------------------------------------------------------------------
# the clinical variant: each feature visible when forced on (small renders)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base():
    """A plain clinical-variant scan: straight head, 2 mm slices, low noise, nothing special."""
    from dataclasses import replace

    from orbitseg.synth.params import sample_clinical_patient

    p = sample_clinical_patient(np.random.default_rng(5), small=True)
    scan = replace(p.scan, slice_thickness=2.0, n_slices=28, head_rotation=(0.0, 0.0, 0.0),
                   head_offset=(0.0, 30.0, -4.0), direction=tuple(np.eye(3).ravel()), direction_kind="identity",
                   fov_pad=0.0, noise_sigma=5.0, spacing_xy=0.9, matrix=(180, 180))
    cl = replace(p.clinical, kernel="standard", mtf_sigma=0.4, overshoot=0.0, contrast=False, enhance_muscle=0.0,
                 enhance_vessel=0.0, enhance_mucosa=0.0, metal=(), iol=(False, False), silicone=(False, False),
                 fracture=0, fov_cut=0, gantry_tilt=0.0)
    return replace(p, scan=scan, clinical=cl)


def _render(p, **changes):
    from dataclasses import replace

    ct, lab = render_patient(replace(p, clinical=replace(p.clinical, **changes)) if changes else p)
    return ct.array.astype(np.float32), lab.array


@pytest.fixture(scope="module")
def plain(base):
    return _render(base)


def _left(lab):  # identity direction, head centred: +x (index axis 2) is the patient's left
    m = np.zeros(lab.shape, bool)
    m[:, :, lab.shape[2] // 2:] = True
    return m


def test_contrast_enhances_muscles_and_leaves_labels(base, plain):
    ct0, lab0 = plain
    ct1, lab1 = _render(base, contrast=True, enhance_muscle=30.0, enhance_vessel=150.0, enhance_mucosa=50.0)
    assert np.array_equal(lab0, lab1)
    core = ndimage_erode(lab0 == 2)
    rise = float(ct1[core].mean() - ct0[core].mean())
    assert 22.0 < rise < 38.0
    nerve = ndimage_erode(lab0 == 3)
    assert abs(float(ct1[nerve].mean() - ct0[nerve].mean())) < 5.0


def ndimage_erode(mask):
    from scipy import ndimage

    return ndimage.binary_erosion(mask, np.ones((1, 3, 3), bool))


def test_silicone_oil_and_an_intraocular_lens_stay_eyeball(base, plain):
    ct0, lab0 = plain
    ct1, lab1 = _render(base, silicone=(True, False), iol=(False, True))  # oil left, lens implant right
    assert np.array_equal(lab0, lab1)
    eye = ndimage_erode(lab0 == 1)
    left, right = eye & _left(lab0), eye & ~_left(lab0)
    assert float(np.median(ct1[left]) - np.median(ct0[left])) > 80.0
    assert abs(float(np.median(ct1[right]) - np.median(ct0[right]))) < 3.0
    # the lens implant: a dense disc inside the right globe (denser than the natural lens), none on the left
    assert ct1[right].max() > 200.0 and ct1[right].max() > ct0[right].max() + 60.0
    assert (ct1[left] > 200.0).sum() == 0


def test_a_floor_fracture_leaves_a_gap_in_the_floor(base, plain):
    ct0, lab0 = plain
    ct1, lab1 = _render(base, fracture=1, fracture_t=0.6, fracture_size=5.0)
    gone = (ct0 > 250.0) & (ct1 < 0.0)  # bone replaced by (herniated) fat
    assert gone.sum() >= 10
    assert not (gone & ~_left(lab0)).any()  # on the left only
    # it lies below the orbit (its inferior half), under the eyeball's lowest slice
    z_gap = np.nonzero(gone)[0].mean()
    z_eye = np.nonzero(lab0 == 1)[0]
    assert z_gap < z_eye.mean()
    assert np.array_equal(lab0, lab1)


def test_dental_metal_makes_streaks_in_its_slices_only(base, plain):
    ct0, _ = plain
    # two fillings inside the field (low in it), 2 mm slices from z = -31 to +23 mm
    ct1, _ = _render(base, metal=((14.0, -4.0, -27.0, 2.5), (-16.0, -2.0, -27.0, 2.0)), metal_streak=400.0)
    k_metal = int(np.argmax((ct1 > 3000).sum(axis=(1, 2))))
    diff = np.abs(ct1 - ct0)
    dense = ndimage_dilate(ct1[k_metal] > 3000, 12)
    assert (diff[k_metal][~dense] > 30.0).mean() > 0.05  # streaks well away from the metal
    far = [k for k in range(ct1.shape[0]) if abs(k - k_metal) >= 4]
    assert diff[far].max() == 0.0


def ndimage_dilate(mask, it):
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=it)


def _mean_frequency(img):
    """Mean radial frequency (cycles / pixel) of the noise power spectrum of 2-D patches ``img`` (n, h, w)."""
    f = np.abs(np.fft.fft2(img - img.mean(axis=(1, 2), keepdims=True))) ** 2
    fy = np.fft.fftfreq(img.shape[1])[:, None]
    fx = np.fft.fftfreq(img.shape[2])[None, :]
    r = np.sqrt(fy * fy + fx * fx)
    return float((f.mean(0) * r).sum() / f.mean(0).sum())


def test_kernels_shape_the_noise_and_sharp_ones_overshoot_at_edges(base):
    from dataclasses import replace

    noisy = replace(base, scan=replace(base.scan, noise_sigma=30.0))
    soft, lab = _render(noisy, kernel="soft", mtf_sigma=0.6, overshoot=0.0)
    bone, _ = _render(noisy, kernel="bone", mtf_sigma=0.15, overshoot=0.6)
    plain, _ = _render(base, kernel="bone", mtf_sigma=0.15, overshoot=0.0)
    # a homogeneous patch of brain (on the nearly noise-free scan: 6 slices of 24 x 24 pixels within 10-60 HU)
    from scipy import ndimage

    brain = ndimage.binary_erosion((plain > 10) & (plain < 60), np.ones((6, 24, 24), bool))
    k, j, i = np.argwhere(brain)[0]
    sl = (slice(k - 3, k + 3), slice(j - 12, j + 12), slice(i - 12, i + 12))
    assert 45.0 > soft[sl].mean() > 15.0
    for img in (soft, bone):
        assert 24.0 < img[sl].std() < 36.0  # the dose's noise, whatever the kernel
    assert _mean_frequency(bone[sl]) > 1.3 * _mean_frequency(soft[sl])
    over, _ = _render(base, kernel="bone", mtf_sigma=0.15, overshoot=0.6)
    d = over - plain
    bone_edge = ndimage_dilate(plain > 400, 2) & ~(plain > 400)
    assert d[bone_edge].min() < -60.0 and d[plain > 400].max() > 60.0  # undershoot beside bone, overshoot on it


def test_a_gantry_tilted_dicom_series_reads_back_with_its_labels_in_place(base, plain, tmp_path):
    from dataclasses import replace

    from orbitseg.io.read import read_scan
    from orbitseg.synth.cohort import write_tilted_dicom

    p = replace(base, clinical=replace(base.clinical, gantry_tilt=20.0))
    p = replace(p, scan=replace(p.scan, n_slices=20, head_offset=(0.0, 30.0, 2.0), matrix=(150, 150), spacing_xy=1.0))
    lab = write_tilted_dicom(p, tmp_path / "s", "c1", "p1", False)
    scan = read_scan(tmp_path / "s")
    assert scan.meta["resampled"]["tilt_deg"] == pytest.approx(20.0, abs=0.1)
    assert lab.geometry.size == scan.geometry.size and not lab.geometry.differences(scan.geometry)
    ct0, lab0 = plain
    a, l_ = scan.array.astype(np.float32), lab.array
    for v in (1, 2):  # same structures, same place: volumes and the tissue under each label agree
        vol = (l_ == v).sum() * np.prod(scan.geometry.spacing)
        vol0 = (lab0 == v).sum() * 0.9 * 0.9 * 2.0
        assert abs(vol / vol0 - 1) < 0.25 if v == 2 else abs(vol / vol0 - 1) < 0.1
        assert abs(float(np.median(a[l_ == v]) - np.median(ct0[lab0 == v]))) < 8.0


def _ethmoid_air_cells(ct: np.ndarray, p) -> int:
    """Air cells (connected, below -400 HU) in the ethmoid box (|x| 5-16, y -6..31, z -11..7 mm, head frame)
    of a scan with identity direction, no rotation, head offset ``p.scan.head_offset``."""
    from scipy import ndimage

    nz, ny, nx = ct.shape
    sp, th = p.scan.spacing_xy, p.scan.slice_thickness
    ox, oy, oz = p.scan.head_offset
    x = (np.arange(nx) - (nx - 1) / 2) * sp + ox
    y = (np.arange(ny) - (ny - 1) / 2) * sp + oy
    z = (np.arange(nz) - (nz - 1) / 2) * th + oz
    box = ((np.abs(x) > 5) & (np.abs(x) < 16))[None, None, :] & ((y > -6) & (y < 31))[None, :, None] \
        & ((z > -11) & (z < 7))[:, None, None]
    lab, n = ndimage.label((ct < -400) & box)
    sizes = ndimage.sum(np.ones_like(ct), lab, np.arange(1, n + 1))
    return int((sizes >= 3).sum())


def test_the_clinical_ethmoid_is_a_honeycomb(base, plain):
    from dataclasses import replace

    ct0, _ = plain
    default_ct, _ = render_patient(replace(base, clinical=None))
    n_clinical = _ethmoid_air_cells(ct0, base)
    n_default = _ethmoid_air_cells(default_ct.array.astype(np.float32), base)
    assert n_clinical >= 15 and n_clinical >= 1.5 * n_default


def test_the_skull_base_is_irregular_only_in_the_clinical_variant(base, plain):
    ct0, lab0 = plain
    flat, lab1 = _render(base, warp_amplitude=0.0)
    moved = (np.abs(ct0 - flat) > 200).sum()  # bone / air boundaries that moved
    assert moved > 200 and np.array_equal(lab0, lab1)


def test_clinical4_gives_the_slices_tails_and_changes_nothing_else():
    """clinical4 convolves each slice's box of sub-slices with a Gaussian along z (CLINICAL4_SLICE_TAIL times the
    thickness, drawn per scan), as a real slice profile has tails; the same seed gives clinical3's patients, scans,
    follow-ups and formats otherwise, the labels unchanged, and with the tails set to 0 the same CT."""
    from dataclasses import replace

    from orbitseg.synth import render_patient
    from orbitseg.synth.params import CLINICAL4_SLICE_TAIL

    old = plan_cohort(60, seed=46, variety="clinical", clinical_version="1.0-clinical3")
    new = plan_cohort(60, seed=46, variety="clinical")
    assert [(c, p, f) for c, p, _, f in old] == [(c, p, f) for c, p, _, f in new]
    lo, hi = CLINICAL4_SLICE_TAIL
    for (_, _, a, _), (_, _, b, _) in zip(old, new):
        assert a.scan == b.scan and a.anatomy == b.anatomy and b.version == "1.0-clinical4"
        assert replace(b.clinical, slice_tail_fwhm=0.0) == a.clinical and a.clinical.slice_tail_fwhm == 0.0
        assert lo * b.scan.slice_thickness <= b.clinical.slice_tail_fwhm <= hi * b.scan.slice_thickness
    tails = [b.clinical.slice_tail_fwhm / b.scan.slice_thickness for _, _, b, _ in new]
    assert len(set(tails)) == len(tails)  # drawn per scan, follow-ups included

    # one small thick-slice patient rendered both ways
    rng = np.random.default_rng(3)
    from orbitseg.synth.params import sample_clinical_patient

    p4 = sample_clinical_patient(rng, small=True)
    p4 = replace(p4, scan=replace(p4.scan, slice_thickness=4.0, n_slices=12),
                 clinical=replace(p4.clinical, slice_tail_fwhm=2.0))
    ct4, lab4 = render_patient(p4)
    ct0, lab0 = render_patient(replace(p4, clinical=replace(p4.clinical, slice_tail_fwhm=0.0)))
    assert np.array_equal(lab4.array, lab0.array)
    diff = np.abs(ct4.array.astype(float) - ct0.array.astype(float))
    assert diff.max() > 50  # edges across slices move
    # tails only blur along z: each slice's mean HU stays within a few HU of the box's
    assert np.abs(ct4.array.mean(axis=(1, 2)) - ct0.array.mean(axis=(1, 2)))[1:-1].max() < 15
