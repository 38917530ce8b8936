"""The real CT's orbit slices shipped with the tests, and versions of it made from it (tests/predict/data/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orbitseg.io.orient import to_canonical
from orbitseg.io.read import read_scan
from orbitseg.io.volume import Volume
from orbitseg.preprocess.voi import OrbitBox, locate_orbits

#: slices 44-91 of shared/realct/cthead_unc.nii.gz (both orbits and 30 mm either side)
REALCT_ORBITS = Path(__file__).resolve().parent / "predict" / "data" / "realct_orbits.nii.gz"


def one_eyed(side: str) -> tuple[Volume, list[OrbitBox]]:
    """The real CT's orbit slices (canonical) with the ``side`` globe replaced by orbital fat (-85 HU: an
    enucleated, fat-filled socket), and the boxes the orbit finder gives the intact scan."""
    scan = to_canonical(read_scan(REALCT_ORBITS))
    boxes = locate_orbits(scan)
    gone = next(b for b in boxes if b.side == side)
    kji = np.indices(scan.shape).reshape(3, -1).T
    xyz = scan.geometry.index_to_physical(kji[:, ::-1].astype(float))
    ball = (np.linalg.norm(xyz - np.asarray(gone.globe_centre), axis=1) <= gone.globe_radius + 2.0).reshape(scan.shape)
    a = scan.array.copy()
    a[ball] = -85
    return scan.like(a), boxes
