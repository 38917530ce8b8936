"""The way back: predictions in sequence space land on the original scan's grid."""

import numpy as np
import pytest

from orbitseg.constants import STRUCTURES
from orbitseg.io.orient import reverse_index_axis
from orbitseg.preprocess.fit import one_hot
from orbitseg.preprocess.pipeline import PreprocessConfig, labels_to_scan, prepare_scan
from orbitseg.synth import render_patient, sample_patient


def _dice(a, b, c):
    return 2 * ((a == c) & (b == c)).sum() / max(1, (a == c).sum() + (b == c).sum())


@pytest.fixture(scope="module")
def patient():
    return render_patient(sample_patient(np.random.default_rng(5), small=True))


@pytest.mark.parametrize("flips", [(), (0,), (2,), (0, 1, 2)])
def test_native_round_trip_is_exact(patient, flips):
    ct, lab = patient
    for a in flips:
        ct, lab = reverse_index_axis(ct, a), reverse_index_axis(lab, a)
    preps = prepare_scan(ct, PreprocessConfig(), lab)
    parts = [(p.box, None, one_hot(p.voi_labels.array)) for p in preps]
    np.testing.assert_array_equal(labels_to_scan(parts, ct.geometry), lab.array)


@pytest.mark.parametrize("aspect", ["pad", "stretch"])
def test_round_trip_through_64x64(patient, aspect):
    ct, lab = patient
    preps = prepare_scan(ct, PreprocessConfig(size=64, aspect=aspect), lab)
    assert all(p.images.shape[1:] == (64, 64) and p.fractions.shape[1:] == (4, 64, 64) for p in preps)
    # an orbit's VOI is longer front to back than across: stretching gives finer pixels across only
    rows, cols = zip(*(p.fit.pixel_spacing for p in preps))
    assert all(r > c for r, c in zip(rows, cols)) if aspect == "stretch" else rows == cols
    assert all(0.0 <= p.images.min() and p.images.max() <= 1.0 for p in preps)
    back = labels_to_scan([(p.box, p.fit, p.fractions) for p in preps], ct.geometry)
    for s in STRUCTURES:
        assert _dice(lab.array, back, s) >= 0.97, s


def test_config_reads_manifests_written_before_aspect_existed():
    old = PreprocessConfig().to_dict()
    del old["aspect"]
    assert PreprocessConfig.from_dict(old).aspect == "pad"
    assert PreprocessConfig.from_dict(PreprocessConfig(aspect="stretch").to_dict()).aspect == "stretch"
    with pytest.raises(ValueError, match="aspect"):
        PreprocessConfig(aspect="squash")


def test_every_slice_of_the_voi_is_kept(patient):
    ct, lab = patient
    for p in prepare_scan(ct, PreprocessConfig(), lab):
        assert p.images.shape[0] == p.voi.shape[0] == p.fractions.shape[0]
        empty = (p.fractions[:, 1:].sum(axis=(1, 2, 3)) == 0).sum()
        assert empty > 0, "slices without any label are kept (false positives are learned and measured)"


def _noisy_parts(ct, lab, seed):
    """(box, fit, probabilities) per VOI: the true fractions plus noise, so that argmax ties are rare."""
    rng = np.random.default_rng(seed)
    parts = []
    for p in prepare_scan(ct, PreprocessConfig(), lab):
        noisy = p.fractions + rng.uniform(0, 0.3, p.fractions.shape).astype(np.float32)
        parts.append((p.box, p.fit, noisy / noisy.sum(1, keepdims=True)))
    return parts


def test_labels_to_scan_equals_argmax_of_full_probabilities(patient):
    """The memory-light label path gives exactly the argmax of the full probability volume."""
    from orbitseg.preprocess.pipeline import probabilities_to_scan

    ct, lab = patient
    ct, lab = reverse_index_axis(ct, 0), reverse_index_axis(lab, 0)
    parts = _noisy_parts(ct, lab, seed=0)
    probs = probabilities_to_scan(parts, ct.geometry)
    assert probs.shape == (4,) + ct.shape
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-4)
    np.testing.assert_array_equal(labels_to_scan(parts, ct.geometry), probs.argmax(0))


def test_box_probabilities_hold_only_the_orbits_and_read_back_any_region(patient):
    """The bounding-box store gives the same numbers as the full volume for any region (inside,
    straddling and outside the box), is much smaller, and its argmax / uint8 copy agree."""
    from orbitseg.io.orient import to_canonical
    from orbitseg.preprocess.pipeline import box_probabilities, probabilities_to_scan

    ct, lab = patient
    ct, lab = reverse_index_axis(ct, 2), reverse_index_axis(lab, 2)
    parts = _noisy_parts(ct, lab, seed=1)
    boxed = box_probabilities(parts, ct.geometry)
    full = to_canonical(ct.like(np.zeros(ct.shape)))  # canonical grid of the scan
    dense = np.stack([to_canonical(ct.like(c)).array for c in probabilities_to_scan(parts, ct.geometry)])
    assert boxed.shape == full.shape and boxed.values[0].size < 0.6 * dense[0].size
    nz, ny, nx = boxed.shape
    z0, y0, x0 = boxed.start
    for z, y, x in [(slice(None),) * 3, (slice(z0 + 1, z0 + 3),) + (slice(None),) * 2,
                    (slice(max(0, z0 - 2), z0 + 2), slice(y0 - 1, y0 + 5), slice(0, nx)),
                    (slice(0, 1), slice(0, 3), slice(0, 3))]:
        np.testing.assert_array_equal(boxed.region(z, y, x), dense[:, z, y, x])
    assert boxed.region(slice(0, 1), slice(0, 3), slice(0, 3))[0].min() == 1.0  # background outside
    np.testing.assert_array_equal(boxed.argmax(), dense.argmax(0))
    np.testing.assert_array_equal(to_canonical(ct.like(labels_to_scan(parts, ct.geometry))).array, boxed.argmax())
    q = boxed.quantized()
    assert q.values.dtype == np.uint8 and q.values.nbytes * 4 == boxed.values.nbytes
    np.testing.assert_allclose(q.region(), dense, atol=0.5 / 255 + 1e-6)
