"""Labels on thick slices (clinical variety): a voxel holds the structure that fills most of its slice.

The generator renders a slice as point-sampled sub-slices; with an even count (2 at 1.5-2.5 mm, 4 at 4-5 mm) a
voxel half inside a structure was a tie made background, so thick-slice labels came out thinner than the anatomy.
The clinical variety (from ``1.0-clinical2``) uses an odd count; the default variety keeps the old one (its bytes
are checked in ``test_synth_clinical.py``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from orbitseg.synth import render_patient, sample_patient
from orbitseg.synth.anatomy import subslice_count
from orbitseg.synth.params import CLINICAL_VERSION, sample_clinical_patient

COVERAGE_MM, PIXEL_MM, MATRIX = 40.0, 0.5, 240  # both orbits, full-size anatomy, a 40 mm slab: ~0.5 s a render


@pytest.fixture(scope="module")
def patient():
    """A full-size clinical patient, head straight, cropped around the orbits (small=True patients have coarse
    pixels whose soft edges blur the tie, so the effect barely shows there)."""
    p = sample_clinical_patient(np.random.default_rng(5))
    scan = replace(p.scan, head_rotation=(0.0, 0.0, 0.0), head_offset=(0.0, 30.0, -3.0),
                   direction=tuple(np.eye(3).ravel()), direction_kind="identity", fov_pad=0.0, noise_sigma=5.0,
                   spacing_xy=PIXEL_MM, matrix=(MATRIX, MATRIX))
    return replace(p, scan=scan)


def _labels(p, thickness: float) -> np.ndarray:
    scan = replace(p.scan, slice_thickness=thickness, n_slices=int(round(COVERAGE_MM / thickness)))
    return render_patient(replace(p, scan=scan))[1].array


def _volumes_ml(lab: np.ndarray, thickness: float) -> np.ndarray:
    """(eyeball, muscles, nerve) in mL."""
    return np.array([np.count_nonzero(lab == s) for s in (1, 2, 3)]) * thickness * PIXEL_MM ** 2 / 1000.0


def test_subslice_count_is_odd_only_for_the_new_clinical_variety(patient):
    def n(p, t):
        return subslice_count(replace(p, scan=replace(p.scan, slice_thickness=t)))

    default = sample_patient(np.random.default_rng(5))
    old_clinical = replace(patient, version="1.0-clinical1")
    assert patient.version == CLINICAL_VERSION
    for t, old, new in ((0.625, 1, 1), (1.25, 1, 1), (2.0, 2, 3), (2.5, 2, 3), (3.75, 3, 3), (5.0, 4, 5)):
        assert n(default, t) == old and n(old_clinical, t) == old  # byte-identical renders of earlier cohorts
        assert n(patient, t) == new
    small = sample_clinical_patient(np.random.default_rng(5), small=True)  # 1 mm sub-slice step
    assert n(small, 2.0) == 3 and n(small, 4.0) == 5 and n(small, 2.5) == 3


def test_thick_slice_labels_keep_the_thin_slice_volume(patient):
    """2.5 mm: the label volume per structure close to the 0.625 mm one (the old rule: muscles -23 %)."""
    thin = _volumes_ml(_labels(patient, 0.625), 0.625)
    thick = _volumes_ml(_labels(patient, 2.5), 2.5)
    rel = thick / thin - 1.0
    assert abs(rel[0]) < 0.02, rel  # eyeball (old rule -3.5 %)
    assert abs(rel[1]) < 0.10, rel  # muscles (old rule -23 %)
    assert abs(rel[2]) < 0.25, rel  # nerve (old rule -19 %)


def test_thick_slice_labels_are_the_majority_of_the_slice(patient):
    """5 mm: each voxel's label is what most of five 1 mm slices of the same patient hold (the bench's unbiased
    truth, ``bench/robustness.py``'s ``fine_truth``). A 5 mm voxel loses a structure less than 2.5 mm deep along z,
    so its volume may stay below the thin-slice one (muscles -12 % here): majority labels, not a bias."""
    thick = _labels(patient, 5.0)
    fine = _labels(patient, 1.0)
    nz, ny, nx = thick.shape
    counts = np.stack([(fine.reshape(nz, 5, ny, nx) == s).sum(axis=1) for s in (1, 2, 3)])
    majority = np.where(counts.max(axis=0) * 2 > 5, counts.argmax(axis=0) + 1, 0)
    rel = _volumes_ml(thick, 5.0) / _volumes_ml(majority, 5.0) - 1.0
    assert np.all(np.abs(rel) < 0.04), rel  # old rule: -3 / -14 / -21 %
    union = np.count_nonzero((thick > 0) | (majority > 0))
    assert np.count_nonzero(thick != majority) / union < 0.03  # old rule 9 %
