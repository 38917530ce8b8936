"""runs/layout: where the network trained on every labelled case (``full``) is found beside or instead of
cross-validation folds (file names only: no training)."""

from __future__ import annotations

import json

import pytest

from orbitseg.errors import InputError
from orbitseg.runs.layout import (fold_file_name, fold_init_source, full_run, init_split, model_checkpoints,
                                  network_name)


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_one_place_names_the_full_network():
    assert fold_file_name("full") == "full.pt" and fold_file_name(2) == "fold_2.pt"
    assert [network_name(n) for n in ("full.pt", "full", "fold_3.pt", "fold_1", "checkpoint_best.pt")] == [
        "full", "full", 3, 1, None]


def test_a_model_folder_with_folds_and_full_is_its_folds_unless_full_is_asked_for(tmp_path):
    model = tmp_path / "model"
    folds = [_touch(model / f"fold_{k}.pt") for k in (0, 1)]
    full = _touch(model / "full.pt")
    assert model_checkpoints(model) == folds  # never the full network averaged with the folds that it saw
    assert model_checkpoints(model, "full") == [full]
    assert model_checkpoints(model, "1") == [folds[1]]
    with pytest.raises(InputError, match="'all', 'full' or fold numbers"):
        model_checkpoints(model, "0,full")


def test_a_folder_holding_only_the_full_network_gives_it(tmp_path):
    model = tmp_path / "model"
    full = _touch(model / "full.pt")
    assert model_checkpoints(model) == [full] == model_checkpoints(model, "full")
    with pytest.raises(InputError, match="only the full model"):
        model_checkpoints(model, "0")
    run = tmp_path / "run"
    ck = _touch(run / "full" / "checkpoint_best.pt")
    assert model_checkpoints(run) == [ck] == model_checkpoints(run / "full")
    # a run with folds too: its folds, the full model by name
    fold = _touch(run / "fold_0" / "checkpoint_best.pt")
    assert model_checkpoints(run) == [fold] and model_checkpoints(run, "full") == [ck]
    with pytest.raises(InputError, match="holds no full model"):
        model_checkpoints(_touch(tmp_path / "folds" / "fold_0.pt").parent, "full")


def test_full_run_is_the_run_s_full_folder_or_the_folder_itself(tmp_path):
    run = tmp_path / "run"
    assert full_run(run) is None
    for name in ("checkpoint_best.pt", "run.json"):
        _touch(run / "full" / name)
    assert full_run(run) == run / "full" == full_run(run / "full")
    out = tmp_path / "elsewhere"  # train --fold full --out DIR writes into DIR
    _touch(out / "checkpoint_best.pt")
    (out / "run.json").write_text(json.dumps({"fold": "full"}))
    assert full_run(out) == out
    (out / "run.json").write_text(json.dumps({"fold": 0}))
    assert full_run(out) is None


def test_init_from_a_folder_holding_only_a_full_network_starts_every_fold_from_it(tmp_path):
    model = tmp_path / "model"
    full = _touch(model / "full.pt")
    assert fold_init_source(model, 2) == full == fold_init_source(model, "full")
    # its split is that of the full model: every case trained (what the leakage check compares)
    (model / "model.json").write_text(json.dumps({"folds": {"full": {"split": {"train": ["a", "b"], "val": [],
                                                                               "test": []}}}}))
    assert init_split(full) == {"train": ["a", "b"], "val": [], "test": []}
    # folds beside it: each fold from its own fold, the full model from the full network
    fold0 = _touch(model / "fold_0.pt")
    assert fold_init_source(model, 0) == fold0 and fold_init_source(model, "full") == full
    with pytest.raises(InputError, match="holds no weights for fold 1"):
        fold_init_source(model, 1)
    # the full model from a folder of folds only: its fold 0 (as before)
    fold_only = tmp_path / "folds"
    f0 = _touch(fold_only / "fold_0" / "checkpoint_best.pt")
    assert fold_init_source(fold_only, "full") == f0
