"""evaluate_folders: matching by case, refusing mismatched geometry by name, output files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from orbitseg.errors import GeometryMismatchError, InputError
from orbitseg.evaluate.folders import (
    UnmatchedCasesWarning,
    case_id_of,
    evaluate_folders,
    format_summary_table,
)
from orbitseg.io.volume import Geometry, Volume
from orbitseg.io.write import write_label

SHAPE = (6, 8, 10)  # (nz, ny, nx)
GEOM = Geometry(size=SHAPE[::-1], spacing=(0.5, 0.8, 2.0), origin=(-10.0, 5.0, 30.0))


def labels(shift: int = 0) -> np.ndarray:
    a = np.zeros(SHAPE, np.uint8)
    a[1:5, 2:6, 2 + shift : 6 + shift] = 1
    a[2:4, 6:8, 3:5] = 2
    return a


def write(path, array, geom=GEOM):
    write_label(Volume(array, geom), path, overwrite=True)


@pytest.fixture
def folders(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir(), truth.mkdir()
    write(truth / "case_001.nii.gz", labels())
    write(truth / "case_002.nrrd", labels())
    write(truth / "case_004.nii.gz", labels())  # no prediction
    write(pred / "case_001.nii.gz", labels())
    write(pred / "case_002_0000.nii.gz", labels(shift=1))  # nnU-Net channel suffix tolerated
    write(pred / "case_003.nii.gz", labels())  # no reference
    (pred / "dataset.json").write_text("{}")  # not a label file: ignored
    return pred, truth


def test_case_ids():
    assert case_id_of("a_0000.nii.gz") == "a" == case_id_of("a.seg.nrrd") == case_id_of("a.nii")
    assert case_id_of("notes.txt") is None


def test_label_files_are_those_a_label_may_be_written_as():
    """case ids come from the registry's label endings (every one `predict --format` may write), in any case."""
    from orbitseg.constants import CHANNEL_SUFFIX
    from orbitseg.io.formats import LABEL_WRITE_ENDINGS

    for ending in LABEL_WRITE_ENDINGS:
        assert case_id_of(f"c{CHANNEL_SUFFIX}{ending}") == "c" == case_id_of(f"c{ending.upper()}")
    assert case_id_of("c.seg.nrrd") == "c"  # the longest ending, not .nrrd


def test_matches_by_case_and_writes_files(folders, tmp_path):
    pred, truth = folders
    out = tmp_path / "run"
    with pytest.warns(UnmatchedCasesWarning, match="case_004.*case_003|case_003.*case_004"):
        rows, summary = evaluate_folders(pred, truth, out, fold_of={"case_001": 0, "case_002": 1})
    assert [r["case"] for r in rows] == ["case_001", "case_002"]
    assert rows[0]["dice_eyeball"] == 1.0 and rows[0]["hd95_eyeball"] == 0.0
    assert rows[1]["pred"] == "case_002_0000.nii.gz" and rows[1]["truth"] == "case_002.nrrd"
    assert rows[1]["pixel_mm"] == pytest.approx(0.65) and rows[1]["slice_mm"] == 2.0  # the reference's grid
    # eyeball 4x4x4 shifted by one voxel along x: TP 48 of 64
    assert rows[1]["dice_eyeball"] == pytest.approx(2 * 48 / 128)
    assert rows[1]["vol_true_ml_eyeball"] == pytest.approx(64 * 0.8 / 1000)
    assert math.isnan(rows[1]["dice_nerve"])
    m = out / "metrics"
    assert sorted(p.name for p in m.iterdir()) == ["per_case.csv", "per_case.json", "summary.csv", "summary.json"]
    with open(m / "per_case.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["case"] for r in csv_rows] == ["case_001", "case_002"]
    assert float(csv_rows[1]["dice_eyeball"]) == pytest.approx(0.75)
    assert csv_rows[1]["dice_nerve"] == ""  # NaN -> empty cell
    per_case = json.loads((m / "per_case.json").read_text())
    assert per_case[1]["dice_nerve"] is None and per_case[1]["fold"] == 1
    info = json.loads((m / "summary.json").read_text())
    assert info["unmatched"] == {"pred_only": ["case_003"], "truth_only": ["case_004"]}
    s = {(r["group"], r["metric"]): r for r in info["summary"]}
    assert s[("all", "dice_eyeball")]["mean"] == pytest.approx((1.0 + 0.75) / 2)
    assert s[("all", "dice_nerve")]["n"] == 0 and s[("all", "dice_nerve")]["mean"] is None
    assert s[("1", "dice_eyeball")]["mean"] == pytest.approx(0.75)
    with open(m / "summary.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(summary)
    table = format_summary_table(summary)
    assert "Multi-label" in table and "Nerve" in table and "HD95" in table
    assert "0.875 ± 0.177" in table  # eyeball Dice over both cases
    assert "n/a" in table  # nerve absent everywhere


@pytest.mark.parametrize(
    "change, word",
    [
        ({"spacing": (0.5, 0.8, 2.5)}, "spacing"),
        ({"origin": (-10.0, 5.0, 31.0)}, "origin"),
        ({"direction": np.diag([-1.0, 1.0, 1.0])}, "direction"),
    ],
)
def test_refuses_mismatched_geometry_by_name_and_writes_nothing(folders, tmp_path, change, word):
    pred, truth = folders
    write(pred / "case_001.nii.gz", labels(), GEOM.with_(**change))  # replace with a misplaced one
    write(pred / "case_004.nii.gz", labels(), GEOM.with_(**change))
    out = tmp_path / "run"
    with pytest.warns(UnmatchedCasesWarning), pytest.raises(GeometryMismatchError) as info:
        evaluate_folders(pred, truth, out)
    msg = str(info.value)
    assert "case_001.nii.gz" in msg and "case_004.nii.gz" in msg and word in msg
    assert "case_002" not in msg
    assert len(info.value.problems) == 2
    assert not out.exists()


def test_no_common_case_is_an_error(tmp_path):
    (tmp_path / "p").mkdir(), (tmp_path / "t").mkdir()
    write(tmp_path / "p" / "a.nii.gz", labels())
    write(tmp_path / "t" / "b.nii.gz", labels())
    with pytest.raises(InputError, match="no case has both") as info:
        evaluate_folders(tmp_path / "p", tmp_path / "t", tmp_path / "out")
    assert "without a prediction (not scored): b" in str(info.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="not a folder"):
        evaluate_folders(tmp_path / "missing", tmp_path / "t", None)


def test_two_files_for_one_case_are_refused(tmp_path):
    (tmp_path / "p").mkdir(), (tmp_path / "t").mkdir()
    write(tmp_path / "p" / "a.nii.gz", labels())
    write(tmp_path / "p" / "a_0000.nii.gz", labels())
    write(tmp_path / "t" / "a.nii.gz", labels())
    with pytest.raises(InputError, match="several label files"):
        evaluate_folders(tmp_path / "p", tmp_path / "t", None)
