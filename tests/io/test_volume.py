import numpy as np
import pytest

from orbitseg.io.orient import to_canonical
from orbitseg.io.volume import Geometry, Volume


def _oblique_geometry():
    t = np.deg2rad(20)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
    flip = np.diag([-1.0, 1.0, -1.0])
    return Geometry((5, 4, 3), (0.4, 0.5, 2.5), (10.0, -20.0, 30.0), rot @ flip)


def test_index_physical_round_trip():
    g = _oblique_geometry()
    ijk = np.array([[0, 0, 0], [4, 3, 2], [1.5, 2.25, 0.5]])
    back = g.physical_to_index(g.index_to_physical(ijk))
    np.testing.assert_allclose(back, ijk, atol=1e-9)
    # index axis k steps 2.5 mm along the third direction column
    step = g.index_to_physical([0, 0, 1]) - g.index_to_physical([0, 0, 0])
    np.testing.assert_allclose(step, 2.5 * g.matrix[:, 2])


def test_differences_names_each_field():
    g = _oblique_geometry()
    assert g.differences(g) == []
    other = g.with_(spacing=(0.4, 0.5, 3.0), origin=(11.0, -20.0, 30.0))
    diff = " ".join(g.differences(other))
    assert "spacing" in diff and "origin" in diff and "size" not in diff and "direction" not in diff


def test_volume_rejects_mismatched_array():
    g = _oblique_geometry()
    with pytest.raises(ValueError, match="does not match geometry"):
        Volume(np.zeros((3, 5, 4)), g)  # (nz, nx, ny) instead of (nz, ny, nx)
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((4, 5)), g)


def test_sitk_bridge_keeps_geometry():
    g = _oblique_geometry()
    v = Volume(np.arange(60, dtype=np.int16).reshape(g.shape), g)
    back = Volume.from_sitk(v.to_sitk())
    assert back.geometry.differences(g) == []
    np.testing.assert_array_equal(back.array, v.array)


def test_to_canonical_keeps_every_voxel_at_its_physical_point():
    g = Geometry((5, 4, 3), (0.4, 0.5, 2.5), (10.0, -20.0, 30.0), np.diag([-1.0, -1.0, -1.0]))
    v = Volume(np.arange(60, dtype=np.int16).reshape(g.shape), g)
    c = to_canonical(v)
    np.testing.assert_allclose(c.geometry.matrix, np.eye(3))
    for ijk in [(0, 0, 0), (4, 3, 2), (2, 1, 1)]:
        p = g.index_to_physical(ijk)
        i, j, k = np.round(c.geometry.physical_to_index(p)).astype(int)
        assert c.array[k, j, i] == v.array[ijk[2], ijk[1], ijk[0]]


def test_canonical_matches_simpleitk_and_inverts_exactly():
    """Every axis permutation and flip (plus a small oblique rotation): same result as
    SimpleITK's DICOMOrient, and from_canonical restores the original array exactly."""
    from itertools import permutations, product

    import SimpleITK as sitk

    from orbitseg.io.orient import from_canonical

    rng = np.random.default_rng(0)
    t = np.deg2rad(10)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
    for perm in permutations(range(3)):
        for signs in product([1, -1], repeat=3):
            d = np.zeros((3, 3))
            for c, p in enumerate(perm):
                d[p, c] = signs[c]
            g = Geometry((4, 5, 6), (0.5, 0.7, 2.0), (3, -4, 5), rot @ d)
            v = Volume(rng.integers(0, 1000, g.shape).astype(np.int16), g)
            c = to_canonical(v)
            ref = Volume.from_sitk(sitk.DICOMOrient(v.to_sitk(), "LPS"))
            assert c.geometry.differences(ref.geometry) == []
            np.testing.assert_array_equal(c.array, ref.array)
            np.testing.assert_array_equal(from_canonical(c.array, g), v.array)
            np.testing.assert_array_equal(from_canonical(np.stack([c.array] * 2), g)[1], v.array)


def test_crop_keeps_every_voxel_where_it_was_in_patient_space():
    g = _oblique_geometry()  # size (5, 4, 3): array (3, 4, 5)
    v = Volume(np.arange(60, dtype=np.int16).reshape(3, 4, 5), g, meta={"series": "x"})
    c = v.crop((slice(1, 3), slice(2, None), slice(3, 5)))
    assert c.shape == (2, 2, 2) and c.meta == {"series": "x"}
    np.testing.assert_array_equal(c.array, v.array[1:3, 2:, 3:5])
    # voxel (i, j, k) of the crop is voxel (i + 3, j + 2, k + 1) of the volume, at the same LPS point
    ijk = np.array([[0, 0, 0], [1, 1, 1], [1.5, 0.5, 0.25]])
    np.testing.assert_allclose(c.geometry.index_to_physical(ijk), g.index_to_physical(ijk + [3, 2, 1]), atol=1e-9)
    assert c.geometry.spacing == g.spacing and np.allclose(c.geometry.matrix, g.matrix)
    for bad in ((slice(1, 1), slice(None), slice(None)), (slice(None, None, 2), slice(None), slice(None)),
                (slice(None), slice(None))):
        with pytest.raises(ValueError, match="slices"):
            v.crop(bad)
