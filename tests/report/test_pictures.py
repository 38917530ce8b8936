"""Pictures follow radiological convention whatever the direction matrix."""

import matplotlib.image as mpimg
import numpy as np
import pytest

from orbitseg.cli import main
from orbitseg.constants import LABEL_COLOURS, EYEBALL
from orbitseg.io.volume import Geometry, Volume
from orbitseg.io.write import write_label, write_scan
from orbitseg.report.pictures import label_rgba, render_views


def _scan_with_left_eye(direction):
    """Head-like volume with an 'eyeball' on the patient's LEFT (+x in LPS)."""
    g = Geometry((40, 40, 12), (1.0, 1.0, 2.0), (0, 0, 0), direction)
    hu = np.full(g.shape, -1000, np.int16)
    lab = np.zeros(g.shape, np.uint8)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in g.size], indexing="ij"), -1).reshape(-1, 3)
    xyz = g.index_to_physical(ijk)
    centre = g.index_to_physical(np.array(g.size) / 2 - 0.5)
    rel = xyz - centre
    head = (np.abs(rel[:, 0]) < 17) & (np.abs(rel[:, 1]) < 17)
    eye = (np.linalg.norm(rel - [9, 0, 0], axis=1) < 5)
    for mask, value, arr in ((head, 40, hu), (eye, 10, hu), (eye, EYEBALL, lab)):
        idx = ijk[mask]
        arr[idx[:, 2], idx[:, 1], idx[:, 0]] = value
    return Volume(hu, g), Volume(lab, g)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.diag([-1.0, 1.0, -1.0])])
def test_left_eye_drawn_on_the_right_of_the_axial_view(tmp_path, direction):
    scan, lab = _scan_with_left_eye(direction)
    out = render_views(scan, lab, tmp_path / "v.png")
    img = mpimg.imread(out)[..., :3]
    h, w, _ = img.shape
    axial = img[:, : w // 3]
    red = np.asarray(LABEL_COLOURS[EYEBALL]) / 255
    # overlay blends the label colour on grey: red channel clearly above green and blue
    reddish = (axial[..., 0] > axial[..., 1] + 0.15) & (axial[..., 0] > axial[..., 2] + 0.15)
    cols = np.nonzero(reddish)[1]
    assert red[0] > red[1] and len(cols) > 20
    assert cols.mean() > axial.shape[1] / 2, "patient's left must be on the image's right (radiological view)"


def test_label_rgba_background_is_transparent():
    rgba = label_rgba(np.array([[0, 1], [2, 3]]))
    assert rgba[0, 0, 3] == 0 and (rgba[[0, 1, 1], [1, 0, 1], 3] > 0).all()


def test_show_command(tmp_path):
    scan, lab = _scan_with_left_eye(np.eye(3))
    write_scan(scan, tmp_path / "s.nii.gz")
    write_label(lab, tmp_path / "l.nii.gz", reference=scan)
    assert main(["show", str(tmp_path / "s.nii.gz"), str(tmp_path / "l.nii.gz"), "-o", str(tmp_path / "o.png")]) == 0
    assert mpimg.imread(tmp_path / "o.png").shape[0] > 100
    # a label on another grid is refused by name
    other = Volume(lab.array[:, :, :-1], lab.geometry.with_(size=(39, 40, 12)))
    write_label(other, tmp_path / "bad.nii.gz")
    assert main(["show", str(tmp_path / "s.nii.gz"), str(tmp_path / "bad.nii.gz"), "-o", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_side_letters_sit_inside_each_view_on_its_own_sides(tmp_path, monkeypatch):
    """R / L on the axial and coronal views and A / P on the sagittal one, each inside its own image (a letter
    placed at the edge of a wider axes box once sat beside the next view, reading as that view's side)."""
    from matplotlib.axes import Axes

    placed = []
    original = Axes.text

    def record(self, x, y, s, *args, **kwargs):
        if s in ("R", "L", "A", "P"):
            x_lo, x_hi = sorted(self.get_images()[0].get_extent()[:2])
            placed.append((self.get_title(), s, x, x_lo, x_hi))
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Axes, "text", record)
    scan, lab = _scan_with_left_eye(np.eye(3))
    render_views(scan, lab, tmp_path / "v.png")
    by_view = {}
    for title, letter, x, x_lo, x_hi in placed:
        assert x_lo <= x <= x_hi, (title, letter, x, x_lo, x_hi)
        by_view.setdefault(title.split()[0], {})[letter] = x
    assert by_view["axial"]["R"] < by_view["axial"]["L"] and by_view["coronal"]["R"] < by_view["coronal"]["L"]
    assert by_view["sagittal"]["A"] < by_view["sagittal"]["P"]
