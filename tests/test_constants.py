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


def test_one_window_map():
    """The labeling aids window through apply_window, the one HU -> [0, 1] map; window01 keeps its checks."""
    import numpy as np

    from orbitseg.labeling._common import window01
    from orbitseg.preprocess.window import apply_window

    hu = np.array([[-2000.0, -152.0, 0.0], [48.0, 123.4, 5000.0]])
    for level, width in [(C.WINDOW_LEVEL, C.WINDOW_WIDTH), (40, 80), (-600, 1500)]:
        np.testing.assert_array_equal(window01(hu, (level, width)), apply_window(hu, level=level, width=width))
    assert window01(hu).dtype == np.float32 and window01(hu)[0, 1] == 0.0 and window01(hu)[1, 2] == 1.0
    with pytest.raises(ValueError, match="window must be"):
        window01(hu, (1.0,))
    with pytest.raises(ValueError, match="width must be positive"):
        window01(hu, (40.0, 0.0))


def test_constants_import_no_other_orbitseg_module():
    """The CLI reads constants while parsing: it must stay a leaf (no torch, no orbitseg.io)."""
    import subprocess
    import sys

    code = ("import sys, orbitseg.constants; "
            "assert not [m for m in sys.modules if m.startswith(('orbitseg.', 'torch', 'numpy')) "
            "and m != 'orbitseg.constants'], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
