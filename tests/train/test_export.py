"""orbitseg export: a cross-validation run becomes a compact, re-scored model folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from tiny import TINY_TRAINING

from orbitseg.cli import main
from orbitseg.errors import InputError
from orbitseg.evaluate.metrics import dice
from orbitseg.io.layout import list_cases
from orbitseg.io.read import read_label, read_scan
from orbitseg.predict import Segmenter
from orbitseg.predict.core import predict_scan
from orbitseg.runs.checkpoint import load_network
from orbitseg.predict.postprocess import apply_postprocessing, read_postprocessing
from orbitseg.predict.run import predict_inputs
from orbitseg.runs.layout import model_checkpoints
from orbitseg.train import train_fold
from orbitseg.train.export import _recreate, _train_seconds, export_model



@pytest.fixture(scope="module")
def cv_run(tiny_dataset, tmp_path_factory):
    """Two folds of a tiny cross-validation run (as `orbitseg train --fold all` lays them out)."""
    run = tmp_path_factory.mktemp("cv") / "run"
    for k in (0, 1):
        train_fold(tiny_dataset, k, epochs=1, batch_size=4, seed=0, out=run / f"fold_{k}", overrides=TINY_TRAINING,
                   progress=False)
    return run


@pytest.fixture(scope="module")
def exported(cv_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    assert main(["export", str(cv_run), str(out), "--name", "tiny"]) == 0
    return out


def test_export_writes_float16_folds_that_predict_like_the_checkpoints(cv_run, exported, tiny_dataset):
    assert sorted(p.name for p in exported.iterdir()) == [
        "cv_per_case.json", "cv_summary.json", "fold_0.encoder.onnx", "fold_0.pt", "fold_0.sequences.onnx",
        "fold_1.encoder.onnx", "fold_1.pt", "fold_1.sequences.onnx", "model.json", "postprocess.json"]
    # the ONNX engine's graphs beside the weights, their SHA-256 and the weights' in model.json, each
    # graph recording the weights it was made from (so a later change of the weights is noticed)
    from orbitseg.io.read import file_sha256
    from orbitseg.predict.engine import _recorded_sha

    meta = json.loads((exported / "model.json").read_text())
    assert meta["engine"]["onnx"] == {p.name: file_sha256(p) for p in exported.glob("*.onnx")}
    assert meta["weights_sha256"] == {f"fold_{k}.pt": file_sha256(exported / f"fold_{k}.pt") for k in (0, 1)}
    for k in (0, 1):
        for g in ("encoder", "sequences"):
            assert _recorded_sha(exported / f"fold_{k}.{g}.onnx") == meta["weights_sha256"][f"fold_{k}.pt"]
    lines = []
    assert Segmenter.load(exported, engine="onnx", log=lines.append).engine.files()[0]["path"].startswith(
        str(exported.resolve())) and not lines  # used from the model folder, nothing built
    for k in (0, 1):
        half = torch.load(exported / f"fold_{k}.pt", weights_only=True)
        full = torch.load(cv_run / f"fold_{k}" / "checkpoint_best.pt", weights_only=True)
        assert "optimizer" not in half and half["fold"] == k and half["preprocess"] == full["preprocess"]
        assert {v.dtype for v in half["model"].values() if v.is_floating_point()} == {torch.float16}
        assert (exported / f"fold_{k}.pt").stat().st_size < 0.6 * (cv_run / f"fold_{k}" / "checkpoint_best.pt").stat().st_size
    # the float16 weights give (nearly) the float32 checkpoint's probabilities
    case = next(c for c in list_cases(tiny_dataset) if c.training)
    scan = read_scan(case.image)
    p16 = Segmenter.load(exported / "fold_0.pt", precision="float32").segment(scan, probabilities=True).probabilities.values
    p32 = Segmenter.load(cv_run / "fold_0" / "checkpoint_best.pt", precision="float32").segment(
        scan, probabilities=True).probabilities.values
    assert np.abs(p16 - p32).max() < 0.02
    # and the folder is a model `orbitseg predict --model` ensembles
    assert [p.name for p in model_checkpoints(exported)] == ["fold_0.pt", "fold_1.pt"]


def test_postprocessing_pools_the_folds_validation_cases(cv_run, exported):
    pooled = json.loads((exported / "postprocess.json").read_text())
    val = sorted(c for k in (0, 1) for c in json.loads((cv_run / f"fold_{k}" / "run.json").read_text())["split"]["val"])
    assert sorted(pooled["cases"]) == val
    meta = json.loads((exported / "model.json").read_text())
    assert meta["postprocess"]["rules"] == pooled["rules"]


def test_cv_metrics_score_each_fold_on_its_own_test_patients(cv_run, exported, tiny_dataset):
    """Every test case appears once, under its fold, with the Dice that fold's exported model (and that
    fold's own validation post-processing) gives it."""
    rows = json.loads((exported / "cv_per_case.json").read_text())
    infos = {k: json.loads((cv_run / f"fold_{k}" / "run.json").read_text()) for k in (0, 1)}
    expected = {c: k for k, i in infos.items() for c in i["split"]["test"]}
    assert {r["case"]: r["fold"] for r in rows} == expected
    assert not any("pred" in r or "truth" in r for r in rows)
    by_id = {c.case_id: c for c in list_cases(tiny_dataset)}
    for r in rows[:2]:
        k = r["fold"]
        # recomputed below the Segmenter: the network, the scan prediction and the fold's own post-processing
        model, cfg = load_network(exported / f"fold_{k}.pt")
        scan = read_scan(by_id[r["case"]].image)
        labels = apply_postprocessing(predict_scan([model], scan, cfg).labels, read_postprocessing(cv_run / f"fold_{k}"))
        truth = read_label(by_id[r["case"]].label, reference=scan).array
        want = dice(labels.array, truth, 1)
        assert r["dice_eyeball"] == pytest.approx(want, abs=1e-9) or (np.isnan(want) and np.isnan(r["dice_eyeball"]))
    meta = json.loads((exported / "model.json").read_text())
    summary = json.loads((exported / "cv_summary.json").read_text())
    overall = next(s for s in summary if s["group"] == "all" and s["metric"] == "dice_eyeball")
    assert meta["cv_metrics"]["dice"]["eyeball"] == pytest.approx(overall["mean"])
    assert "re-scored" in meta["cv_metrics"]["how"]


def test_model_json_says_how_to_recreate_it(exported):
    meta = json.loads((exported / "model.json").read_text())
    assert meta["name"] == "tiny" and set(meta["folds"]) == {"0", "1"}
    cmds = meta["recreate"]
    assert cmds[0] == "orbitseg synth DATA --seed 0 --patients 4 --small"
    assert cmds[1] == "orbitseg preprocess DATA --size 32"
    assert cmds[2].startswith("orbitseg train DATA --fold all --preset default --epochs 1 --seed 0")
    assert cmds[3] == "orbitseg export RUN MODEL_DIR"
    assert all(len(f["split"]["test"]) > 0 and f["seed"] == 0 for f in meta["folds"].values())


def test_recreate_names_every_preprocessing_choice_that_differs_from_the_default():
    info = {"preset_name": "default", "seed": 3,
            "preprocess": {"size": 64, "seq_len": 3, "level": 40.0, "width": 400.0, "aspect": "pad"}}
    assert _recreate(None, info, 40)[0] == "orbitseg preprocess DATA --level 40 --aspect pad"
    info["preprocess"]["aspect"] = "stretch"
    assert _recreate(None, info, 40)[0] == "orbitseg preprocess DATA --level 40"
    info["preprocess"] = {"size": 96, "seq_len": 3}  # written before the aspect option: padded
    assert _recreate(None, info, 40)[0] == "orbitseg preprocess DATA --size 96 --aspect pad"


def test_recreate_repeats_a_resume_that_lengthened_the_schedule():
    info = {"preset_name": "default", "seed": 0, "preprocess": {}, "preset": {"training": {"epochs": 40}},
            "resumes": [{"from_epoch": 17, "epochs": 40},  # an interruption: same schedule, not a stage
                        {"from_epoch": 40, "argv": ["orbitseg", "train", "D", "--epochs", "60", "--resume"]},
                        {"from_epoch": 60, "epochs": 60}]}
    train_cmds = [c for c in _recreate(None, info, 60) if c.startswith("orbitseg train")]
    assert train_cmds == ["orbitseg train DATA --fold all --preset default --epochs 40 --seed 0 --out RUN",
                          "orbitseg train DATA --fold all --preset default --epochs 60 --seed 0 --out RUN --resume"]
    del info["resumes"]
    assert [c for c in _recreate(None, info, 40) if c.startswith("orbitseg train")] == train_cmds[:1]
    info["options"] = {"precision": "bfloat16"}  # a run trained under bfloat16 autocast says so
    assert [c for c in _recreate(None, info, 40) if c.startswith("orbitseg train")] == [
        "orbitseg train DATA --fold all --preset default --epochs 40 --seed 0 --out RUN --precision bfloat16"]
    info["options"] = {"precision": "bfloat16", "sampler_thickness": True}  # and draws by slice thickness
    assert [c for c in _recreate(None, info, 40) if c.startswith("orbitseg train")] == [
        "orbitseg train DATA --fold all --preset default --epochs 40 --seed 0 --out RUN --precision bfloat16 "
        "--sample-by-thickness"]


def test_recreate_names_a_split_seed_other_than_the_seed():
    info = {"preset_name": "default", "seed": 1, "split_seed": 0, "preprocess": {}}
    train_cmd = next(c for c in _recreate(None, info, 5) if c.startswith("orbitseg train"))
    assert "--seed 1 --split-seed 0 --out" in train_cmd
    for same in ({**info, "split_seed": 1}, {k: v for k, v in info.items() if k != "split_seed"}):
        assert "--split-seed" not in " ".join(_recreate(None, same, 5))


def test_training_time_counts_every_resumed_segment(tmp_path):
    (tmp_path / "log.csv").write_text("epoch,seconds\n1,60.5\n2,59.5\n3,120\n")
    info = {"result": {"train_seconds": 120.0}}  # an old run.json: the last segment only
    assert _train_seconds(tmp_path, info) == pytest.approx(240.0)
    (tmp_path / "log.csv").unlink()
    assert _train_seconds(tmp_path, info) == 120.0


def test_never_replaces_a_model_without_being_asked(cv_run, exported, capsys):
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    with pytest.raises(InputError, match="--overwrite"):
        export_model(cv_run, exported)
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before
    shutil.rmtree(cv_run / "fold_1" / "segmented", ignore_errors=True)
    assert main(["export", str(cv_run), str(exported), "--name", "tiny", "--overwrite"]) == 0
    assert "2 fold(s)" in capsys.readouterr().out
    assert sorted(p.name for p in exported.iterdir()) == sorted(before)
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_bad_run_folders_are_named(tmp_path, cv_run, tiny_dataset):
    with pytest.raises(InputError, match="does not exist"):
        export_model(tmp_path / "nope", tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no trained fold"):
        export_model(tmp_path / "empty", tmp_path / "m")
    with pytest.raises(InputError, match="no dataset.json"):
        export_model(cv_run, tmp_path / "m", dataset=tmp_path / "empty")
    assert not (tmp_path / "m").exists()
    # a run whose dataset has gone still exports; its metrics are then not invented
    moved = tmp_path / "moved"
    shutil.copytree(cv_run / "fold_0", moved / "fold_0")
    info = json.loads((moved / "fold_0" / "run.json").read_text())
    info["dataset"] = str(tmp_path / "gone")
    (moved / "fold_0" / "run.json").write_text(json.dumps(info))
    export_model(moved, tmp_path / "m", progress=False)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["cv_metrics"] is None and not (tmp_path / "m" / "cv_summary.json").exists()
    rows, problems = predict_inputs(next(c for c in list_cases(tiny_dataset) if c.training).image,
                                    tmp_path / "pred", model=tmp_path / "m", progress=False)
    assert problems == [] and len(rows) > 0


def test_recreate_of_a_run_fine_tuned_fold_by_fold_starts_with_its_parent(tmp_path):
    """A run whose fold k started from fold k of a model folder is re-created by the parent's commands
    (its folders renamed), the slices remade where they differ, then the fine-tuning from MODEL0."""
    from orbitseg.train.export import _init_parent, _parent_commands

    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "model.json").write_text(json.dumps({"recreate": [
        "orbitseg synth DATA --seed 0 --patients 46", "orbitseg preprocess DATA",
        "orbitseg train DATA --fold all --preset default --epochs 40 --seed 0 --out RUN",
        "orbitseg export RUN MODEL_DIR"]}))
    infos = {k: {"init_from": str(parent / f"fold_{k}.pt")} for k in range(4)}
    assert _init_parent(infos) == parent
    assert _init_parent({**infos, 2: {"init_from": str(parent / "fold_0.pt")}}) is None  # not fold by fold
    assert _init_parent({0: {"init_from": None}}) is None
    assert _init_parent({1: {"init_from": str(tmp_path / "run" / "fold_1" / "checkpoint_best.pt")}}) == tmp_path / "run"
    info = {"preset_name": "default", "seed": 0, "preprocess": {"size": 80, "aspect": "stretch"},
            "preset": {"training": {"epochs": 20}},
            "options": {"precision": "bfloat16"}}
    cmds = _recreate({"synthetic": {"seed": 0}}, info, 20, parent=_parent_commands(parent, None))
    assert cmds == ["orbitseg synth DATA --seed 0 --patients 46", "orbitseg preprocess DATA",
                    "orbitseg train DATA --fold all --preset default --epochs 40 --seed 0 --out RUN0",
                    "orbitseg export RUN0 MODEL0",
                    "orbitseg preprocess DATA --size 80 --overwrite",
                    "orbitseg train DATA --fold all --preset default --epochs 20 --seed 0 --out RUN --precision "
                    "bfloat16 --init-from MODEL0",
                    "orbitseg export RUN MODEL_DIR"]
    # the same slices are not remade; a grandparent's folders move one name further
    (parent / "model.json").write_text(json.dumps({"recreate": cmds}))
    again = _recreate(None, info, 20, parent=_parent_commands(parent, None))
    assert again[3:7] == ["orbitseg export RUN00 MODEL00", "orbitseg preprocess DATA --size 80 --overwrite",
                          "orbitseg train DATA --fold all --preset default --epochs 20 --seed 0 --out RUN0 "
                          "--precision bfloat16 --init-from MODEL00", "orbitseg export RUN0 MODEL0"]
    assert again.count("orbitseg preprocess DATA --size 80 --overwrite") == 1
    (parent / "model.json").write_text("{}")
    with pytest.raises(InputError, match="re-create"):
        _parent_commands(parent, None)


def test_recreate_of_a_dataset_grown_by_import_add_and_extended_splits(tmp_path):
    """A model trained on a dataset that gained cases (`import --add`, a generator cohort or a site's scans)
    with `train --extend-splits` is re-created with those steps: the added cohort re-made, imported after the
    parent's steps, the new slices made, the splits extended (the old ones come from the parent's run)."""
    from orbitseg.train.export import _parent_commands

    ds_info = {"synthetic": {"seed": 0, "variety": "default", "cases": {"orbit_001": {"patient": "patient_001"}}},
               "imports": [{"from": "/data/clin46", "prefix": "clinical_",
                            "synthetic": {"seed": 46, "variety": "clinical", "patients": 46, "small": False,
                                             "generator_version": "1.0-clinical2"}},
                           {"from": "/data/site2", "prefix": "site2_"}]}
    info = {"preset_name": "default", "seed": 0, "preprocess": {"size": 80, "aspect": "stretch"},
            "preset": {"training": {"epochs": 5}}, "options": {"precision": "bfloat16"},
            "command": ["orbitseg", "train", "DS", "--fold", "0", "--extend-splits", "--epochs", "5"]}
    # the clinical generator's version pinned: a newer one draws other scans from the same seed
    added = ["orbitseg synth IMPORT1 --seed 46 --patients 46 --variety clinical --generator-version 1.0-clinical2",
             "orbitseg import IMPORT1 DATA --add --prefix clinical_",
             "orbitseg import /data/site2 DATA --add --prefix site2_"]
    assert _recreate(ds_info, info, 5) == [
        "orbitseg synth DATA --seed 0 --patients 1", *added, "orbitseg preprocess DATA --size 80",
        "orbitseg train DATA --fold all --extend-splits --preset default --epochs 5 --seed 0 --out RUN "
        "--precision bfloat16", "orbitseg export RUN MODEL_DIR"]
    parent = tmp_path / "parent"
    parent.mkdir()
    parent_cmds = ["orbitseg synth DATA --seed 0 --patients 46", "orbitseg preprocess DATA --size 80",
                   "orbitseg train DATA --fold all --preset default --epochs 20 --seed 0 --out RUN",
                   "orbitseg export RUN MODEL_DIR"]
    (parent / "model.json").write_text(json.dumps({"recreate": parent_cmds, "full": {"recreate": parent_cmds + [
        "orbitseg train DATA --fold full --preset default --epochs 20 --seed 0 --out RUN_FULL --init-from MODEL_DIR",
        "orbitseg export RUN_FULL MODEL_DIR --add-full"]}}))
    cmds = _recreate(ds_info, info, 5, parent=_parent_commands(parent, ds_info))
    assert cmds[4:] == [*added, "orbitseg preprocess DATA --size 80",  # the added cases' slices, the others kept
                        "orbitseg train DATA --fold all --extend-splits --preset default --epochs 5 --seed 0 --out RUN "
                        "--precision bfloat16 --init-from MODEL0", "orbitseg export RUN MODEL_DIR"]
    # a network started from the parent's full network re-makes that one too (its run folder renamed apart)
    full_parent = _parent_commands(parent, ds_info, from_full=True)[0]
    assert full_parent[-2:] == ["orbitseg train DATA --fold full --preset default --epochs 20 --seed 0 --out RUN0_FULL "
                                "--init-from MODEL0", "orbitseg export RUN0_FULL MODEL0 --add-full"]
    # a clinical cohort of its own is re-made as one
    assert _recreate({"synthetic": {"seed": 46, "variety": "clinical", "cases": {}}}, info, 5)[0] == (
        "orbitseg synth DATA --seed 46 --variety clinical")
