import numpy as np
import pytest

from orbitseg.preprocess.fit import (
    fit_image, fit_label_fractions, one_hot, plan_fit, sequence_indices, unfit_probabilities,
)
from orbitseg.preprocess.window import apply_window


def test_window_bounds_are_exact():
    hu = np.array([-1000, -152, -151.9, 0, 48, 248, 249, 3000])
    w = apply_window(hu)
    assert w[0] == 0 and w[1] == 0 and w[-3] == 1 and w[-1] == 1
    assert w[4] == pytest.approx(0.5) and w[3] == pytest.approx(152 / 400)
    assert w.dtype == np.float32 and 0 < w[2] < 1e-3
    assert apply_window(np.array([0.0]), level=0, width=100)[0] == pytest.approx(0.5)


def test_fit_keeps_aspect_ratio_and_pads():
    # 40 x 20 mm VOI: the long side fills 64 px, the short side is padded equally
    fit = plan_fit((100, 50), (0.4, 0.4), 64, aspect="pad")
    assert fit.pixel_spacing == pytest.approx((40 / 64, 40 / 64))
    img = np.ones((1, 100, 50), np.float32)
    out = fit_image(img, fit)
    cols = np.nonzero(out[0, 32] > 0.5)[0]
    assert abs(len(cols) - 32) <= 1 and abs(cols[0] - (63 - cols[-1])) <= 1  # centred, half the width
    assert np.allclose(out[0, :, 32], 1)  # the long side is not padded


def test_anisotropic_pixels_are_not_stretched():
    fit = plan_fit((50, 100), (0.8, 0.4), 64, aspect="pad")  # 40 x 40 mm: fills the square
    assert fit.a_row * fit.spacing[0] == pytest.approx(fit.a_col * fit.spacing[1])
    out = fit_image(np.ones((1, 50, 100), np.float32), fit)
    assert out[0].min() > 0.99


def test_stretch_fills_both_axes_with_finer_pixels_across():
    # 40 x 20 mm VOI (rows x columns): each axis fills 64 px, columns get pixels twice as fine
    pad = plan_fit((100, 50), (0.4, 0.4), 64, aspect="pad")
    fit = plan_fit((100, 50), (0.4, 0.4), 64, aspect="stretch")
    assert fit.pixel_spacing == pytest.approx((40 / 64, 20 / 64))
    assert fit.pixel_spacing[1] < pad.pixel_spacing[1]
    out = fit_image(np.ones((1, 100, 50), np.float32), fit)
    assert out.min() > 0.99  # nothing padded
    # a column ramp lands on the fitted columns in order, end to end
    ramp = np.tile(np.arange(50, dtype=np.float32), (1, 100, 1))
    row = fit_image(ramp, fit)[0, 32]
    assert np.all(np.diff(row) > 0) and row[0] < 1 and row[-1] > 48
    with pytest.raises(ValueError, match="aspect"):
        plan_fit((100, 50), (0.4, 0.4), 64, aspect="crop")


def test_stretched_soft_labels_round_trip():
    lab = _labelled_slice()
    fit = plan_fit(lab.shape[1:], (0.4, 0.4), 64, aspect="stretch")
    back = unfit_probabilities(fit_label_fractions(lab, fit), fit).argmax(1)
    pad = plan_fit(lab.shape[1:], (0.4, 0.4), 64, aspect="pad")
    back_pad = unfit_probabilities(fit_label_fractions(lab, pad), pad).argmax(1)
    for c in (1, 2, 3):
        assert _dice(lab, back, c) >= 0.96, c
    # the thin vertical bar (label 2, 1.6 mm wide) is thin across columns: stretching keeps it better
    assert _dice(lab, back, 2) > _dice(lab, back_pad, 2)


def _labelled_slice(ny=150, nx=100, sp=0.4):
    yy, xx = np.mgrid[:ny, :nx] * sp
    lab = np.zeros((2, ny, nx), np.uint8)
    lab[:, (yy - 20) ** 2 + (xx - 20) ** 2 < 12 ** 2] = 1
    lab[:, (np.abs(yy - 40) < 8) & (np.abs(xx - 8) < 2)] = 2
    lab[:, (yy - 45) ** 2 + (xx - 22) ** 2 < 2 ** 2] = 3
    return lab


def _dice(a, b, c):
    return 2 * ((a == c) & (b == c)).sum() / ((a == c).sum() + (b == c).sum())


def test_identity_fit_round_trip_is_exact():
    lab = _labelled_slice(64, 64, 0.5)
    fit = plan_fit((64, 64), (0.5, 0.5), 64)
    assert fit.a_row == 1 and fit.b_row == 0
    back = unfit_probabilities(fit_label_fractions(lab, fit), fit).argmax(1)
    np.testing.assert_array_equal(back, lab)


def test_soft_label_round_trip_through_64():
    lab = _labelled_slice()
    fit = plan_fit(lab.shape[1:], (0.4, 0.4), 64)
    fr = fit_label_fractions(lab, fit)
    np.testing.assert_allclose(fr.sum(1), 1, atol=1e-5)
    back = unfit_probabilities(fr, fit).argmax(1)
    for c in (1, 2, 3):
        assert _dice(lab, back, c) >= 0.95, c
    # hard 64x64 labels lose the thin nerve's sub-pixel boundary: soft fractions are the better target
    hard = unfit_probabilities(one_hot(fr.argmax(1)), fit).argmax(1)
    assert _dice(lab, hard, 3) < _dice(lab, back, 3)


def test_sequences_replicate_edges():
    idx = sequence_indices(4, 3)
    np.testing.assert_array_equal(idx, [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]])
    assert sequence_indices(1, 5).tolist() == [[0] * 5]
    with pytest.raises(ValueError, match="seq_len"):
        sequence_indices(4, 2)


def test_bad_shapes_are_named():
    fit = plan_fit((10, 10), (1, 1), 16)
    with pytest.raises(ValueError, match="stack"):
        fit_image(np.zeros((1, 10, 11)), fit)
    with pytest.raises(ValueError, match="probs"):
        unfit_probabilities(np.zeros((1, 4, 15, 16)), fit)
    with pytest.raises(ValueError, match="size"):
        plan_fit((10, 10), (1, 1), 4)


def test_unfit_matches_scipy_cubic_affine_transform():
    """The two-matrix-product resampling is scipy's cubic spline interpolation, not an approximation."""
    from scipy import ndimage

    fit = plan_fit((150, 100), (0.4, 0.4), 64)
    probs = np.random.default_rng(0).uniform(0, 1, (3, 4, 64, 64)).astype(np.float32)
    ref = np.empty((3, 4, 150, 100), np.float32)
    for c in range(4):
        ref[:, c] = ndimage.affine_transform(
            probs[:, c], np.array([1.0, 1 / fit.a_row, 1 / fit.a_col]),
            offset=(0.0, -fit.b_row / fit.a_row, -fit.b_col / fit.a_col), output_shape=(3, 150, 100),
            order=3, mode="nearest")
    np.clip(ref, 0, 1, out=ref)
    ref /= np.maximum(ref.sum(1, keepdims=True), 1e-6)
    np.testing.assert_allclose(unfit_probabilities(probs, fit), ref, atol=1e-5)


def test_interpolation_weights_hold_no_subnormal_floats():
    """Far from a sample a cubic spline's weights decay below float32's normal range; subnormal numbers make the
    matrix products several times slower on x86, so such weights are dropped (the test above bounds the change)."""
    from orbitseg.preprocess.fit import INTERPOLATION_WEIGHT_FLOOR, interpolation_matrix

    fit = plan_fit((177, 124), (0.4, 0.4), 80)
    m = interpolation_matrix(177, 80, 1 / fit.a_row, -fit.b_row / fit.a_row)
    nonzero = np.abs(m[m != 0])
    assert nonzero.min() >= np.float32(INTERPOLATION_WEIGHT_FLOOR) > np.finfo(np.float32).tiny
    assert (m != 0).sum(axis=1).max() <= 50  # each output row mixes +-21 samples (0.268^21 ~ 1e-12), not all 80
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)  # interpolating a constant gives it back
