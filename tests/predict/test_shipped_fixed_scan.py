"""The shipped model's labels on one fixed scan do not change when the code around the network changes.

``data/fixed_scan.nii.gz`` is a small synthetic patient (``sample_patient(default_rng(20261205),
small=True)``, 29 x 181 x 181 voxels, 0.85 x 0.85 x 2 mm) and ``data/fixed_scan_shipped_labels.nii.gz``
is what ``orbitseg predict`` wrote for it with the shipped model in float32.  The first reference was written
*before* the Segmenter refactor (commit d2cca9c) with the model shipped until 2026-12-06; when the shipped weights
changed (2026-12-06: the retrain on both cohorts averaged with that model) it was written again with the new
weights and the code of that day, which had kept the first reference voxel for voxel (380 voxels differ between
the two models; Dice 0.991 / 0.978 / 0.996), and again when they changed later that day (the retrain with generator
1.0-clinical3: 308 voxels differ from the averaged model's labels; Dice 0.995 / 0.978 / 0.988), and again on
2026-12-07 (folds fine-tuned with thick slabs made from thin slices, the full network kept: 413 voxels differ from
the clinical3 model's labels; Dice 0.993 / 0.972 / 0.988).  The labels were the same with one thread, with ATen limited to AVX2
and with oneDNN limited to AVX2, so the reference does not depend on this CPU's vector units.  A refactor of
loading, preprocessing, ensembling or post-processing that changes a single voxel fails here; so does a change of
the shipped weights that does not rewrite the reference.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from orbitseg.io.read import read_label, read_scan
from orbitseg.predict.run import predict_inputs

DATA = Path(__file__).parent / "data"
#: SHA-256 of the reference labels (uint8, C order) and their voxel counts per label 0..3 (the shipped weights of
#: 2026-12-07, the thick-slab folds; the clinical3 retrain before: e29c3bf6..., [934551, 10201, 4832, 485]; the
#: averaged model before that: 7bcc47e8..., [934464, 10241, 4869, 495]; the first model: d7c99087...,
#: [934783, 10063, 4728, 495])
SHA256 = "70bba19b06066e307cac732913b4a6060a9acddad20e32afadbafdd450699743"
COUNTS = [934404, 10285, 4883, 497]


def test_shipped_model_labels_of_the_fixed_scan_are_unchanged(tmp_path):
    scan = read_scan(DATA / "fixed_scan.nii.gz")
    reference = read_label(DATA / "fixed_scan_shipped_labels.nii.gz", reference=scan).array
    assert hashlib.sha256(np.ascontiguousarray(reference, np.uint8).tobytes()).hexdigest() == SHA256
    rows, problems = predict_inputs(DATA / "fixed_scan.nii.gz", tmp_path, precision="float32", engine="torch",
                                    progress=False)
    assert problems == []
    got = read_label(tmp_path / "fixed_scan.nii.gz", reference=scan).array
    differing = int((got != reference).sum())
    assert differing == 0, f"{differing} voxel(s) differ from the reference labels"
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
