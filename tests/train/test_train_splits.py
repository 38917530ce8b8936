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


def _roles(s: dict) -> dict[tuple[int, str], str]:
    """(fold, case) -> "train" / "val" / "test"."""
    return {(f["fold"], c): r for f in s["folds"] for r in ("train", "val", "test") for c in f[r]}


def test_extend_keeps_every_known_patient_and_deals_only_the_new():
    from orbitseg.train.splits import extend_splits

    old_p = _patients(18)
    old = split_patients(old_p, seed=4)
    grown = {**old_p, "case_000c": old_p["case_000"]}  # a third scan of a known patient
    grown.update({f"new_{i:02d}": f"q{i:02d}" for i in range(9)})
    grown.update({"new_00b": "q00"})  # a new patient with two scans
    ext = extend_splits(old, grown)
    before, after = _roles(old), _roles(ext)
    assert all(after[key] == role for key, role in before.items())  # nobody known moved fold or role
    # the follow-up scan sits wherever its patient sits, in every fold
    assert all(after[(k, "case_000c")] == before[(k, "case_000")] for k in range(4))
    assert ext["patients"] == dict(sorted(grown.items()))
    # still a partition by patient: every case tested once, no patient in two test folds, no leak in a fold
    assert sorted(c for f in ext["folds"] for c in f["test"]) == sorted(grown)
    for f in ext["folds"]:
        tr, va, te = ({grown[c] for c in f[k]} for k in ("train", "val", "test"))
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert sorted(f["train"] + f["val"] + f["test"]) == sorted(grown)
        assert {grown[c] for c in f["test"]} == set(f["test_patients"])
    new_tested = [k for k in range(4) for f in [ext["folds"][k]] if "q00" in f["test_patients"]]
    assert len(new_tested) == 1 and all(after[(k, "new_00b")] == after[(k, "new_00")] for k in range(4))
    sizes = [len(f["test"]) for f in ext["folds"]]
    assert max(sizes) - min(sizes) <= 2  # the new patients went to the folds with fewest cases
    assert any(after[(k, c)] == "val" for k in range(4) for c in grown if c.startswith("new_"))
    assert ext["extended"] == [{"added_cases": 11, "added_patients": [f"q{i:02d}" for i in range(9)]}]
    assert extend_splits(old, grown) == ext  # deterministic


def test_extend_refuses_a_case_gone_or_moved():
    from orbitseg.train.splits import extend_splits

    old_p = _patients(10)
    old = split_patients(old_p, seed=0)
    gone = {c: p for c, p in old_p.items() if c != "case_004"}
    with pytest.raises(InputError, match="cases gone: case_004"):
        extend_splits(old, {**gone, "new": "q"})
    with pytest.raises(InputError, match="another patient now: case_004"):
        extend_splits(old, {**old_p, "case_004": "p99"})


def test_a_grown_dataset_keeps_its_folds_so_each_old_fold_can_seed_the_new_one(tiny_dataset, tiny_run, tmp_path):
    """Two new patients labelled after a run: `--extend-splits` keeps fold 0's test patients, so the run's
    fold 0 may fine-tune the new fold 0; a resume across the change is refused."""
    import shutil

    from tiny import TINY_TRAINING

    from orbitseg.preprocess.dataset import preprocess_dataset
    from orbitseg.preprocess.pipeline import PreprocessConfig
    from orbitseg.train import train_fold

    root = tmp_path / "grown"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns("runs"))
    old = json.loads((root / "splits.json").read_text())
    extra = tmp_path / "extra"
    make_cohort(extra, patients=2, seed=5, small=True, workers=1)
    info = json.loads((root / "dataset.json").read_text())
    for case, patient in json.loads((extra / "dataset.json").read_text())["patients"].items():
        new = case.replace("orbit_", "site2_")
        for sub, suffix in (("imagesTr", "_0000.nii.gz"), ("labelsTr", ".nii.gz")):
            shutil.copy(extra / sub / f"{case}{suffix}", root / sub / f"{new}{suffix}")
        info["patients"][new] = "site2_" + patient
    (root / "dataset.json").write_text(json.dumps(info))
    preprocess_dataset(root, PreprocessConfig(size=32), progress=False)

    opts = {**TINY_TRAINING, "max_steps_per_epoch": 1}
    kw = dict(epochs=1, batch_size=4, overrides=opts, progress=False, init_from=tiny_run)
    with pytest.raises(InputError, match="--extend-splits"):
        train_fold(root, 0, out=tmp_path / "refused", **kw)
    assert not (tmp_path / "refused").exists()
    out = train_fold(root, 0, out=tmp_path / "ft0", extend_splits=True, **kw)
    grown = json.loads((root / "splits.json").read_text())
    before, after = _roles(old), _roles(grown)
    assert all(after[key] == role for key, role in before.items())
    assert sum(c.startswith("site2_") for c in grown["patients"]) >= 2
    run = json.loads((out / "run.json").read_text())
    assert run["init_from"] == str(tiny_run / "fold_0" / "checkpoint_best.pt")  # the old fold 0 seeded it
    assert set(run["split"]["test"]) >= set(old["folds"][0]["test"])
    # the old run resumed on the grown split would train on cases its record does not name
    resumed = tmp_path / "resumed"
    shutil.copytree(tiny_run / "fold_0", resumed)
    with pytest.raises(InputError, match="other train.* cases than the dataset's split now holds"):
        train_fold(root, 0, out=resumed, resume=True, epochs=1, batch_size=4, overrides=opts, progress=False)
