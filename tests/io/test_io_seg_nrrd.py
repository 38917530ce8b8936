"""3D Slicer segmentations (.seg.nrrd): written loadable, read by segment names."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest

from orbitseg.constants import LABEL_COLOURS, LABEL_NAMES
from orbitseg.errors import InputError
from orbitseg.io.read import label_for_segment_name, read_label
from orbitseg.io.write import write_label


def test_header_has_segment_names_and_colours(tmp_path, make_ct, make_labels):
    ct = make_ct("oblique")
    lab = make_labels(ct.shape)
    path = write_label(lab, tmp_path / "lab.seg.nrrd", reference=ct)
    data, h = nrrd.read(str(path), index_order="C")
    np.testing.assert_array_equal(data, lab)
    assert h["space"] == "left-posterior-superior" and h["type"] == "uint8"
    assert list(h["kinds"]) == ["domain"] * 3
    np.testing.assert_allclose(h["space origin"], ct.geometry.origin)
    np.testing.assert_allclose(h["space directions"], (ct.geometry.matrix * ct.geometry.spacing).T, atol=1e-9)
    for n, label in enumerate((1, 2, 3)):
        assert h[f"Segment{n}_Name"] == LABEL_NAMES[label]
        assert h[f"Segment{n}_LabelValue"] == str(label)
        assert h[f"Segment{n}_Layer"] == "0"
        assert h[f"Segment{n}_ID"]
        rgb = [float(v) * 255 for v in h[f"Segment{n}_Color"].split()]
        np.testing.assert_allclose(rgb, LABEL_COLOURS[label], atol=0.01)
        k, j, i = np.nonzero(lab == label)
        assert [int(v) for v in h[f"Segment{n}_Extent"].split()] == [i.min(), i.max(), j.min(), j.max(), k.min(), k.max()]
    assert h["Segmentation_MasterRepresentation"] == "Binary labelmap"
    back = read_label(path, reference=ct)
    np.testing.assert_array_equal(back.array, lab)
    assert back.meta["segments"] == {LABEL_NAMES[v]: v for v in (1, 2, 3)}


def _slicer_like(tmp_path, name, layers, segments, origin=(0.0, 0.0, 0.0), space="left-posterior-superior"):
    """Write a Slicer-style seg.nrrd; ``layers`` is (L, z, y, x) or (z, y, x)."""
    h = {
        "space": space,
        "space origin": np.asarray(origin, float),
        "encoding": "gzip",
    }
    spacing = np.diag([0.6, 0.5, 1.5])
    if layers.ndim == 4:
        h["kinds"] = ["list", "domain", "domain", "domain"]
        h["space directions"] = np.vstack([[np.nan] * 3, spacing])
        data = np.moveaxis(layers, 0, -1)
    else:
        h["kinds"] = ["domain"] * 3
        h["space directions"] = spacing
        data = layers
    for n, (seg_name, value, layer) in enumerate(segments):
        h[f"Segment{n}_ID"] = f"Segment_{n}"
        h[f"Segment{n}_Name"] = seg_name
        h[f"Segment{n}_LabelValue"] = str(value)
        h[f"Segment{n}_Layer"] = str(layer)
    p = tmp_path / name
    nrrd.write(str(p), np.ascontiguousarray(data.astype(np.uint8)), h, index_order="C")
    return p


def test_segments_mapped_by_name_across_layers(tmp_path, make_ct):
    ct = make_ct(origin=(0.0, 0.0, 0.0))
    shape = ct.shape
    layers = np.zeros((2,) + shape, np.uint8)
    layers[0, 2, 3, 4] = 7  # "Globe" in layer 0 with value 7
    layers[0, 3, 3, 4] = 5  # "Optic Nerve" value 5
    layers[1, 2:4, 3, 4] = 1  # "Medial rectus" overlaps in layer 1
    p = _slicer_like(tmp_path, "multi.seg.nrrd", layers, [("Globe", 7, 0), ("Optic Nerve", 5, 0), ("Medial rectus", 1, 1)])
    with pytest.warns(UserWarning, match="overlaps"):
        back = read_label(p, reference=ct)
    assert back.array[2, 3, 4] == 2 and back.array[3, 3, 4] == 2  # later segment wins
    assert back.meta["segments"] == {"Globe": 1, "Optic Nerve": 3, "Medial rectus": 2}
    assert int((back.array > 0).sum()) == 2


def test_unknown_segment_name_uses_label_value_or_fails(tmp_path, make_ct):
    ct = make_ct(origin=(0.0, 0.0, 0.0))
    a = np.zeros(ct.shape, np.uint8)
    a[1, 1, 1] = 2
    p = _slicer_like(tmp_path, "numbered.seg.nrrd", a, [("Segment_2", 2, 0)])
    assert read_label(p, reference=ct).array[1, 1, 1] == 2
    a[1, 1, 1] = 9
    q = _slicer_like(tmp_path, "tumour.seg.nrrd", a, [("Tumour", 9, 0)])
    with pytest.raises(InputError, match="tumour.seg.nrrd.*'Tumour'"):
        read_label(q)


def test_ras_space_and_cropped_extent(tmp_path, make_ct):
    ct = make_ct(origin=(0.0, 0.0, 0.0))
    crop = np.zeros((3, 4, 5), np.uint8)
    crop[1, 2, 3] = 1
    # the crop starts at index (i, j, k) = (2, 3, 4): LPS origin (1.2, 1.5, 6.0) is RAS (-1.2, -1.5, 6.0)
    p = _slicer_like(tmp_path, "crop.seg.nrrd", crop, [("Eyeball", 1, 0)], origin=(-1.2, -1.5, 6.0),
                     space="right-anterior-superior")
    # in RAS the space directions flip x, y too
    data, h = nrrd.read(str(p))
    h["space directions"] = np.diag([-0.6, -0.5, 1.5])
    nrrd.write(str(p), data, h)
    back = read_label(p, reference=ct)
    assert back.geometry.differences(ct.geometry) == []
    (k, j, i), = np.argwhere(back.array == 1)
    assert (i, j, k) == (2 + 3, 3 + 2, 4 + 1)
    assert back.meta["embedded_at"] == (2, 3, 4)


@pytest.mark.parametrize(
    "name, label",
    [("eyeball", 1), ("Eye ball", 1), ("Right globe", 1), ("extraocular_muscles", 2), ("Inferior oblique", 2),
     ("Lateral rectus muscle", 2), ("optic_nerve", 3), ("Optic Nerve L", 3), ("Tumour", None)],
)
def test_segment_names(name, label):
    assert label_for_segment_name(name) == label
