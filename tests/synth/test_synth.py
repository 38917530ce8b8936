"""The synthetic cohort: determinism, anatomy in the right place, honest intensities, layout."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from orbitseg.constants import EYEBALL, MUSCLES, NERVE
from orbitseg.errors import ExistsError
from orbitseg.synth import make_cohort, render_patient, sample_patient
from orbitseg.synth.params import head_rotation_matrix


def _render(seed):
    p = sample_patient(np.random.default_rng(seed), small=True)
    ct, lab = render_patient(p)
    return p, ct, lab


@pytest.fixture(scope="module")
def cohort8():
    return [_render(s) for s in range(8)]


def test_determinism_same_seed_same_arrays_and_params():
    p1, ct1, lab1 = _render(3)
    p2, ct2, lab2 = _render(3)
    assert asdict(p1) == asdict(p2)
    json.dumps(asdict(p1))  # JSON-serialisable
    assert np.array_equal(ct1.array, ct2.array) and np.array_equal(lab1.array, lab2.array)
    assert ct1.geometry == ct2.geometry
    _, ct3, _ = _render(4)
    assert ct3.shape != ct1.shape or not np.array_equal(ct3.array, ct1.array)


def test_types_and_grid(cohort8):
    for _, ct, lab in cohort8:
        assert ct.array.dtype == np.int16 and lab.array.dtype == np.uint8
        assert ct.geometry == lab.geometry
        assert set(np.unique(lab.array)) <= {0, 1, 2, 3}


def test_labels_sit_on_the_right_hu(cohort8):
    for p, ct, lab in cohort8:
        a, l = ct.array.astype(float), lab.array
        assert -20 < np.median(a[l == EYEBALL]) < 60
        for k in (MUSCLES, NERVE):
            assert 10 < np.median(a[l == k]) < 90, (k, np.median(a[l == k]))
        # the nerve lies in (intraconal) orbital fat: an in-plane ring around it is negative
        from scipy import ndimage

        st = np.zeros((3, 3, 3), bool)
        st[1] = ndimage.generate_binary_structure(2, 1)
        nerve = l == NERVE
        ring = ndimage.binary_dilation(nerve, st, iterations=3) & ~ndimage.binary_dilation(nerve, st) & (l == 0)
        assert np.median(a[ring]) < 0
        air = a[(a < -500) & (a > -1500)]  # outside the head (scanner padding excluded)
        assert abs(np.median(air) - (-1000)) < 30
        assert a.max() > 500  # bone


def test_both_orbits_have_all_labels_in_the_right_place(cohort8):
    for p, ct, lab in cohort8:
        R = head_rotation_matrix(*p.scan.head_rotation)
        for k in (EYEBALL, MUSCLES, NERVE):
            idx = np.argwhere(lab.array == k)[:, ::-1]  # (i, j, k)
            xyz = ct.geometry.index_to_physical(idx)
            # back into the head frame (rotation about the grid centre + offset)
            head = xyz @ R + np.asarray(p.scan.head_offset)
            left, right = head[head[:, 0] > 0], head[head[:, 0] < 0]
            assert len(left) > 5 and len(right) > 5, k
            assert 15 < left[:, 0].mean() < 45 and -45 < right[:, 0].mean() < -15
            # in scanner LPS too, left orbit is at larger x (tolerating <= 10 deg head yaw)
            sx = xyz[:, 0]
            c = np.median(sx)
            assert sx[head[:, 0] > 0].mean() > c > sx[head[:, 0] < 0].mean()
        # globes anterior of nerves (smaller y in the head frame)
        g = np.argwhere(lab.array == EYEBALL)[:, ::-1]
        n = np.argwhere(lab.array == NERVE)[:, ::-1]
        gy = (ct.geometry.index_to_physical(g) @ R)[:, 1].mean()
        ny = (ct.geometry.index_to_physical(n) @ R)[:, 1].mean()
        assert gy < ny


def test_muscle_and_nerve_intensities_overlap(cohort8):
    for _, ct, lab in cohort8:
        a, l = ct.array, lab.array
        m25, m75 = np.percentile(a[l == MUSCLES], [25, 75])
        n25, n75 = np.percentile(a[l == NERVE], [25, 75])
        assert m25 < n75 and n25 < m75


def test_geometry_varies(cohort8):
    spacings = {ct.geometry.spacing for _, ct, _ in cohort8}
    directions = {ct.geometry.direction for _, ct, _ in cohort8}
    assert len(spacings) > 1 and len(directions) > 1


def test_make_cohort_layout_and_refuses_overwrite(tmp_path):
    from orbitseg.io.layout import image_path, label_path, list_cases, read_dataset_json

    out = tmp_path / "ds"
    cases = make_cohort(out, patients=3, seed=1, small=True, workers=1, followup_fraction=0.5)
    assert [c for c, _ in cases] == [f"orbit_{i:03d}" for i in range(1, len(cases) + 1)]
    assert {p for _, p in cases} == {"patient_001", "patient_002", "patient_003"}
    for c, _ in cases:
        assert image_path(out, c).is_file() and label_path(out, c).is_file()
    info = read_dataset_json(out)
    assert info["patients"] == dict(cases)
    assert info["synthetic"]["seed"] == 1 and set(info["synthetic"]["cases"]) == {c for c, _ in cases}
    assert len(list_cases(out)) == len(cases)
    with pytest.raises(ExistsError):
        make_cohort(out, patients=3, seed=1, small=True, workers=1)
    make_cohort(out, patients=2, seed=1, small=True, workers=1, overwrite=True, followup_fraction=0.0)
    assert len(list_cases(out)) == 2


def test_worker_count_does_not_change_output(tmp_path):
    import SimpleITK as sitk

    a = make_cohort(tmp_path / "a", patients=2, seed=5, small=True, workers=1)
    b = make_cohort(tmp_path / "b", patients=2, seed=5, small=True, workers=2)
    assert a == b
    from orbitseg.io.layout import image_path, label_path

    for c, _ in a:
        for f in (image_path, label_path):
            x = sitk.GetArrayFromImage(sitk.ReadImage(str(f(tmp_path / "a", c))))
            y = sitk.GetArrayFromImage(sitk.ReadImage(str(f(tmp_path / "b", c))))
            assert np.array_equal(x, y)


def test_raw_export(tmp_path):
    out = tmp_path / "raw"
    cases = make_cohort(out, patients=4, seed=2, small=True, workers=1, raw=True)
    rows = (out / "patients.csv").read_text().strip().splitlines()
    assert rows[0] == "case,patient" and len(rows) == len(cases) + 1
    for c, _ in cases:
        assert any(p.name.startswith(c) for p in (out / "images").iterdir())
        assert any(p.name.startswith(c) for p in (out / "labels").iterdir())


def test_raw_dicom_export_puts_labels_on_the_series_grid(tmp_path):
    """A reversed-slice (left-handed) scan reads back from DICOM k-flipped; its labels must follow."""
    from orbitseg.io.orient import reverse_index_axis
    from orbitseg.io.read import read_label, read_scan
    from orbitseg.io.write import write_label
    from orbitseg.synth.cohort import _write_dicom

    ct, lab = render_patient(sample_patient(np.random.default_rng(3), small=True))
    if np.linalg.det(ct.geometry.matrix) > 0:
        ct, lab = reverse_index_axis(ct, 2), reverse_index_axis(lab, 2)
    assert np.linalg.det(ct.geometry.matrix) < 0
    lab2 = _write_dicom(ct, lab, tmp_path / "series", "c", "p", False)
    write_label(lab2, tmp_path / "lab.nrrd")
    scan = read_scan(tmp_path / "series")
    back = read_label(tmp_path / "lab.nrrd", reference=scan)  # refused if the grids differ
    # same labels at the same physical points
    k, j, i = np.argwhere(lab.array == 3)[0]
    p = ct.geometry.index_to_physical([i, j, k])
    i2, j2, k2 = np.round(scan.geometry.physical_to_index(p)).astype(int)
    assert back.array[k2, j2, i2] == 3 and (back.array == 3).sum() == (lab.array == 3).sum()
