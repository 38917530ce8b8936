"""What the loop read, checked against the split: no fold trains on, validates on or chooses anything with
its test patients; and folds trained side by side are joined by ``train --fold all --resume``.

One tiny cross-validation run serves every test here, made as the README's recipe for small machines
makes it: each fold trained on its own into ``RUN/fold_k``, then ``train --fold all --resume --out RUN``.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from tiny import TINY_TRAINING

from orbitseg.runs.checkpoint import load_network
from orbitseg.train import train, train_fold
from orbitseg.train.data import SliceSequences, read_manifest, vois_of_cases
from orbitseg.train.loop import validate
from orbitseg.train.splits import N_FOLDS

#: two steps of one epoch per fold; the folds run alone score nothing, the join scores every test fold
TINY = {**TINY_TRAINING, "max_steps_per_epoch": 2}
FILES = ("checkpoint_best.pt", "checkpoint_last.pt", "log.csv")


@pytest.fixture(scope="module")
def cv(tiny_dataset, tmp_path_factory):
    """``(dataset, RUN, the folds' files before the join)`` after the side-by-side folds were joined."""
    root = tiny_dataset
    run = tmp_path_factory.mktemp("side_by_side") / "run"
    for k in range(N_FOLDS):  # as `orbitseg train data --fold k --out run/fold_k` in separate processes
        train_fold(root, k, epochs=1, batch_size=4, seed=0, out=run / f"fold_{k}", overrides=TINY, progress=False)
    before = {k: {name: (run / f"fold_{k}" / name).read_bytes() for name in FILES} for k in range(N_FOLDS)}
    train(root, "all", epochs=1, batch_size=4, seed=0, out=run, resume=True,
          overrides={**TINY, "evaluate_test": True, "surface": False}, progress=False)
    return root, run, before


def _split(root, k: int) -> dict:
    return json.loads((root / "splits.json").read_text())["folds"][k]


@pytest.mark.parametrize("k", range(N_FOLDS))
def test_each_fold_trains_and_validates_on_its_own_cases_only(cv, k):
    """The recorded accounting (from the items the loop fetched, not from the split): trained cases within
    the split's training cases, validated cases exactly its validation cases, the test cases in neither."""
    root, run, _ = cv
    split, fold = _split(root, k), run / f"fold_{k}"
    access = json.loads((fold / "data_access.json").read_text())
    test = set(split["test"])
    log = list(csv.DictReader(open(fold / "log.csv")))
    assert access["fold"] == k and [e["epoch"] for e in access["epochs"]] == [int(r["epoch"]) for r in log]
    assert set(access["train_pool"]) <= set(split["train"])  # the data the batches were drawn from
    assert access["trained"] and set(access["trained"]) <= set(access["train_pool"])
    assert sum(access["trained"].values()) == sum(int(r["sequences"]) for r in log)
    for e in access["epochs"]:  # every validation pass, i.e. every metric the checkpoint choice read
        assert set(e["validated"]) == set(split["val"]), e
    assert set(access["validated"]) == set(split["val"])
    assert access["postprocess"] == sorted(split["val"])
    seen = set(access["train_pool"]) | set(access["trained"]) | set(access["validated"]) | set(access["postprocess"])
    assert not seen & test
    # the post-processing choice, made again by the join, read the validation cases alone
    assert json.loads((fold / "postprocess.json").read_text())["cases"] == sorted(split["val"])


def test_best_checkpoint_is_chosen_by_the_validation_cases_dice(cv):
    """The metric stored with the best checkpoint is its mean Dice on the validation cases, recomputed here."""
    root, run, _ = cv
    manifest, pp = read_manifest(root)
    for k in range(N_FOLDS):
        split = _split(root, k)
        ck = torch.load(run / f"fold_{k}" / "checkpoint_best.pt", weights_only=True)
        model, _ = load_network(run / f"fold_{k}" / "checkpoint_best.pt")
        dice = validate(model, SliceSequences(vois_of_cases(root, manifest, split["val"]), pp.seq_len), "cpu")
        vals = [v for v in dice.values() if not math.isnan(v)]
        assert ck["best_metric"] == pytest.approx(sum(vals) / len(vals) if vals else 0.0, abs=1e-6), k


def test_fold_all_resume_joins_folds_trained_side_by_side(cv):
    """`train --fold all --resume` over folds trained one by one retrains none of them (same checkpoint and
    log bytes), scores each fold's test cases, and writes RUN/metrics over all four test folds."""
    root, run, before = cv
    for k in range(N_FOLDS):
        fold = run / f"fold_{k}"
        for name in FILES:
            assert (fold / name).read_bytes() == before[k][name], (k, name)
        info = json.loads((fold / "run.json").read_text())
        assert info["resumes"][-1]["from_epoch"] == 1 and info["result"]["epochs"] == 1
        test = _split(root, k)["test"]
        assert sorted(p.name for p in (fold / "segmented").iterdir()) == [f"{c}.nii.gz" for c in test]
        assert info["result"]["test"]["cases"] == len(test)
    rows = json.loads((run / "metrics" / "per_case.json").read_text())
    expected = {c: k for k in range(N_FOLDS) for c in _split(root, k)["test"]}
    assert {r["case"]: int(r["fold"]) for r in rows} == expected
    assert len(expected) == len(json.loads((root / "splits.json").read_text())["patients"])
