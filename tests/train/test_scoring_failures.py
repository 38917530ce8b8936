"""A test case the pipeline cannot segment stops no cross-validation: it is named and scored as a failure."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np

from orbitseg.io.read import read_label, read_scan
from orbitseg.io.write import write_scan


def test_an_unsegmentable_test_case_is_scored_as_empty_labels_and_the_fold_goes_on(tiny_run, tiny_dataset, tmp_path):
    from orbitseg.train.scoring import score_test_fold

    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_dataset, data, ignore=shutil.ignore_patterns("preprocessed", "VOIs", "runs"))
    shutil.copytree(tiny_run, run)
    split = json.loads((run / "fold_0" / "run.json").read_text())["split"]
    cases = split["test"] + split["val"]  # the tiny fold has one test case: another one to go on with
    bad, good = cases[0], cases[1:]
    image = next((data / "imagesTr").glob(f"{bad}_0000.*"))
    scan = read_scan(image)
    head = np.full(scan.shape, -1000, np.int16)
    head[:, 5:-5, 5:-5] = 40  # a CT with air around soft tissue, but no eyes: no orbit to find
    write_scan(scan.like(head), image, overwrite=True)
    lines = []
    out = score_test_fold(data, run / "fold_0", cases, "cpu", False, lines.append)
    warned = [m for m in lines if m.startswith("warning:")]
    assert len(warned) == 1 and bad in warned[0] and "could not be segmented" in warned[0], lines
    assert out["cases"] == len(cases)  # counted, not left out of the mean
    empty = read_label(run / "fold_0" / "segmented" / f"{bad}.nii.gz")
    assert not empty.array.any()
    with (run / "fold_0" / "metrics" / "per_case.csv").open() as fh:
        rows = {r["case"]: r for r in csv.DictReader(fh)}
    assert float(rows[bad]["dice_eyeball"]) == 0.0
    assert all(read_label(run / "fold_0" / "segmented" / f"{c}.nii.gz").array.any() for c in good)
