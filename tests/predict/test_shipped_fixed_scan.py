"""The shipped model's labels on one fixed scan do not change when the code around the network changes.

``data/fixed_scan.nii.gz`` is a small synthetic patient (``sample_patient(default_rng(20261205),
small=True)``, 29 x 181 x 181 voxels, 0.85 x 0.85 x 2 mm) and ``data/fixed_scan_shipped_labels.nii.gz``
is what ``orbitseg predict`` wrote for it with the shipped model in float32 *before* the Segmenter
refactor (commit d2cca9c).  The labels were the same with one thread, with ATen limited to AVX2 and with
oneDNN limited to AVX2, so the reference does not depend on this CPU's vector units.  A refactor of
loading, preprocessing, ensembling or post-processing that changes a single voxel fails here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from orbitseg.io.read import read_label, read_scan
from orbitseg.predict.run import predict_inputs

DATA = Path(__file__).parent / "data"
#: SHA-256 of the reference labels (uint8, C order) and their voxel counts per label 0..3, taken before the refactor
SHA256 = "d7c990872427bed9d85008f83daa4b66536f64974d87dd861218d275365e310a"
COUNTS = [934783, 10063, 4728, 495]


def test_shipped_model_labels_of_the_fixed_scan_are_unchanged(tmp_path):
    scan = read_scan(DATA / "fixed_scan.nii.gz")
    reference = read_label(DATA / "fixed_scan_shipped_labels.nii.gz", reference=scan).array
    assert hashlib.sha256(np.ascontiguousarray(reference, np.uint8).tobytes()).hexdigest() == SHA256
    rows, problems = predict_inputs(DATA / "fixed_scan.nii.gz", tmp_path, precision="float32", engine="torch",
                                    progress=False)
    assert problems == []
    got = read_label(tmp_path / "fixed_scan.nii.gz", reference=scan).array
    differing = int((got != reference).sum())
    assert differing == 0, f"{differing} voxel(s) differ from the labels written before the refactor"
    assert np.bincount(got.ravel(), minlength=4).tolist() == COUNTS
    assert {r["case"] for r in rows} == {"fixed_scan"}


def test_the_shipped_full_network_labels_the_fixed_scan_like_the_four_folds(tmp_path):
    """`--folds full` runs the one network the shipped model trained on every case (README: Speed): alone, with
    the folds' post-processing, it labels the fixed scan as the four folds' ensemble does up to boundary voxels."""
    from orbitseg.evaluate.metrics import dice
    from orbitseg.pretrained import shipped_model_dir

    scan = read_scan(DATA / "fixed_scan.nii.gz")
    reference = read_label(DATA / "fixed_scan_shipped_labels.nii.gz", reference=scan).array
    rows, problems = predict_inputs(DATA / "fixed_scan.nii.gz", tmp_path, precision="float32", engine="torch",
                                    folds="full", progress=False)
    assert problems == []
    import json

    (settings,) = json.loads((tmp_path / "prediction.json").read_text())["settings"].values()
    assert [c["path"] for c in settings["checkpoints"]] == [str((shipped_model_dir() / "full.pt").resolve())]
    got = read_label(tmp_path / "fixed_scan.nii.gz", reference=scan).array
    assert 0 < int((got != reference).sum()) < 0.1 * int((reference > 0).sum())  # another network, close to them
    for label in (1, 2, 3):
        assert dice(got == label, reference == label) > 0.95, label  # (0.993 / 0.963 / 0.988 when shipped)
