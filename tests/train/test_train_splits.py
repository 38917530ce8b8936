"""Cross-validation splits by patient."""

from __future__ import annotations

import json

import pytest

from orbitseg.errors import InputError
from orbitseg.synth import make_cohort
from orbitseg.train import make_splits
from orbitseg.train.splits import fold_split, split_patients


def _patients(n: int) -> dict[str, str]:
    out = {}
    for i in range(n):
        out[f"case_{i:03d}"] = f"p{i:02d}"
        if i % 3 == 0:  # follow-up scans
            out[f"case_{i:03d}b"] = f"p{i:02d}"
    return out


def test_folds_by_patient_and_disjoint():
    pats = _patients(23)
    s = split_patients(pats, seed=3)
    assert s["n_folds"] == 4 and len(s["folds"]) == 4
    tested = [c for f in s["folds"] for c in f["test"]]
    assert sorted(tested) == sorted(pats)  # every case tested exactly once
    test_patient_sets = [{pats[c] for c in f["test"]} for f in s["folds"]]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not test_patient_sets[i] & test_patient_sets[j]  # no patient in two folds
    for f in s["folds"]:
        tr, va, te = ({pats[c] for c in f[k]} for k in ("train", "val", "test"))
        assert tr and va and te
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert sorted(f["train"] + f["val"] + f["test"]) == sorted(pats)
        n_rest = len(tr) + len(va)
        assert len(va) == max(1, round(0.15 * n_rest))
    sizes = [len(f["test"]) for f in s["folds"]]
    assert max(sizes) - min(sizes) <= 2  # balanced by cases


def test_deterministic_per_seed():
    pats = _patients(20)
    assert split_patients(pats, seed=1) == split_patients(dict(reversed(pats.items())), seed=1)
    assert split_patients(pats, seed=1)["folds"] != split_patients(pats, seed=2)["folds"]


def test_too_few_patients():
    with pytest.raises(InputError, match="too few"):
        split_patients({"a": "1", "b": "2", "c": "3"})


def test_splits_json_written_and_guarded(tmp_path):
    root = tmp_path / "ds"
    make_cohort(root, patients=4, seed=0, small=True, workers=1)
    s = make_splits(root, seed=0)
    on_disk = json.loads((root / "splits.json").read_text())
    assert on_disk == json.loads(json.dumps(s))
    info = json.loads((root / "dataset.json").read_text())
    assert on_disk["patients"] == info["patients"]
    assert make_splits(root, seed=0) == on_disk  # reused
    with pytest.raises(InputError, match="seed 0"):
        make_splits(root, seed=1)
    s1 = make_splits(root, seed=1, overwrite=True)
    assert s1["seed"] == 1 and json.loads((root / "splits.json").read_text())["seed"] == 1
    assert set(fold_split(s1, 2)["test"])
    with pytest.raises(InputError):
        fold_split(s1, 7)
