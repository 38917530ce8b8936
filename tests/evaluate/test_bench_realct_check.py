"""The real-CT check's scan variants keep their geometry, and its plausibility findings (bench/realct_check.py)."""

import numpy as np
import pytest
import SimpleITK as sitk


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("realct_check")


def _image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    arr = np.full((30, 20, 20), -1000, np.int16)  # (z, y, x), 2 mm slices
    arr[12:14, 8:12, 8:12] = 1000  # a bright block on slices 12-13
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 2.0))
    img.SetOrigin((-10.0, 5.0, 40.0))
    img.SetDirection(direction)
    return img


def _bright_centre(img) -> np.ndarray:
    arr = sitk.GetArrayFromImage(img).astype(float)
    kji = np.argwhere(arr > 0.5 * arr.max()).mean(axis=0)
    return np.array(img.TransformContinuousIndexToPhysicalPoint(kji[::-1].tolist()))


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (1, 0, 0, 0, -1, 0, 0, 0, -1)])
def test_a_slab_stays_where_its_slices_were(bench, direction):
    img = _image(direction)
    thick = bench.slab_average(img, 4.0)
    assert thick.GetSpacing() == (1.0, 1.0, 4.0) and thick.GetSize() == (20, 20, 15)
    assert thick.GetDirection() == img.GetDirection()
    # slices 12 and 13 became slab 6: same physical place (not shifted by half a slab)
    np.testing.assert_allclose(_bright_centre(thick), _bright_centre(img), atol=1e-6)
    assert sitk.GetArrayFromImage(thick)[6, 10, 10] == pytest.approx(1000)


def test_a_pitched_variant_turns_the_head_about_left_right_and_keeps_the_grid(bench):
    arr = np.full((30, 60, 20), -1000, np.int16)  # (z, y, x): a block 20 mm anterior of the centre
    arr[13:17, 6:13, 8:12] = 1000
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 2.0))
    turned = bench.make_variant(img, "pitch+15_slab4")
    assert turned.GetSpacing() == (1.0, 1.0, 4.0) and turned.GetPixelID() == sitk.sitkInt16
    before, after = _bright_centre(img), _bright_centre(turned)
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
    a = np.deg2rad(15.0)  # the resampling transform maps the output to the input: content turns by its inverse
    rot_inv = np.array([[1, 0, 0], [0, np.cos(a), np.sin(a)], [0, -np.sin(a), np.cos(a)]])
    expected = centre + rot_inv @ (before - centre)
    assert np.linalg.norm(expected - before) > 5.0  # a real turn, not a no-op
    np.testing.assert_allclose(after, expected, atol=1.5)  # about left-right (x unchanged), by 15 degrees


def test_findings_name_volumes_out_of_range_and_asymmetry(bench):
    normal = {"right": {"globe_ml": 7.0, "muscles_ml": 3.0, "nerve_ml": 0.30},
              "left": {"globe_ml": 7.1, "muscles_ml": 3.2, "nerve_ml": 0.28}}
    assert bench.findings(normal) == []
    stub = {**normal, "right": {**normal["right"], "nerve_ml": 0.05}}
    got = bench.findings(stub)
    assert "nerve right 0.05" in got and any(g.startswith("nerve asym") for g in got)


def test_model_specs_name_folds_and_the_word_shipped(bench, tmp_path):
    from orbitseg.pretrained import shipped_model_dir

    assert bench.parse_model("shipped") == (str(shipped_model_dir()), "all")
    assert bench.parse_model("shipped:full") == (str(shipped_model_dir()), "full")
    assert bench.parse_model(f"{tmp_path}/run:0") == (f"{tmp_path}/run", "0")
