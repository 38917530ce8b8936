import pytest

from orbitseg import constants as C


def test_window_is_the_papers():
    assert C.window_bounds() == (-152.0, 248.0)
    assert C.window_bounds(40, 80) == (0.0, 80.0)
    with pytest.raises(ValueError, match="width"):
        C.window_bounds(0, 0)


def test_labels_and_colours_cover_every_structure():
    assert C.LABEL_NAMES == {0: "background", 1: "eyeball", 2: "extraocular_muscles", 3: "optic_nerve"}
    assert set(C.LABEL_COLOURS) == set(C.LABEL_NAMES)
    assert len({C.LABEL_COLOURS[s] for s in C.STRUCTURES}) == 3
    assert C.label_colour_hex(1).startswith("#") and len(C.label_colour_hex(1)) == 7


@pytest.mark.parametrize("name,stem,ending", [
    ("case_0000.nii.gz", "case_0000", ".nii.gz"),
    ("x.seg.nrrd", "x", ".seg.nrrd"),
    ("x.nrrd", "x", ".nrrd"),
    ("X.MHA", "X", ".MHA"),
    ("notes.txt", "notes.txt", ""),
])
def test_split_ending(name, stem, ending):
    assert C.split_ending(name) == (stem, ending)
