"""orbitseg export --average-with: a run fine-tuned from a model is exported as the weight-space average of each
network with the one it started from (WiSE-FT), only where that keeps every test patient unseen."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tiny import TINY_TRAINING

from orbitseg.cli import main
from orbitseg.errors import InputError
from orbitseg.io.read import file_sha256
from orbitseg.runs.checkpoint import average_weights, read_training_checkpoint
from orbitseg.train import train_fold
from orbitseg.train.export import add_full_network, export_model


@pytest.fixture(scope="module")
def parent(tiny_dataset, tmp_path_factory):
    """A model folder with two folds and a full network (the 'shipped' model of this test)."""
    base = tmp_path_factory.mktemp("avg")
    run = base / "run0"
    for k in (0, 1, "full"):
        train_fold(tiny_dataset, k, epochs=1, batch_size=4, seed=0, out=run / (f"fold_{k}" if k != "full" else k),
                   overrides=TINY_TRAINING, progress=False)
    model = export_model(run, base / "parent", progress=False)
    add_full_network(run, model)
    return model


@pytest.fixture(scope="module")
def child_run(parent, tiny_dataset, tmp_path_factory):
    """Each network fine-tuned from the parent's network of the same name (`train --init-from PARENT`)."""
    run = tmp_path_factory.mktemp("avg") / "run1"
    for k in (0, 1, "full"):
        train_fold(tiny_dataset, k, epochs=1, batch_size=4, seed=0, init_from=parent,
                   out=run / (f"fold_{k}" if k != "full" else k), overrides=TINY_TRAINING, progress=False)
    return run


@pytest.fixture(scope="module")
def averaged(parent, child_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("avg") / "averaged"
    assert main(["export", str(child_run), str(out), "--average-with", str(parent)]) == 0
    return out


def _weights(path):
    return read_training_checkpoint(path)["model"]


def _expect(run_ckpt, parent_file, share):
    """What the averaged float16 file must hold: the run's weights as exported (float16) mixed with the parent's."""
    mine = {k: v.half() if v.is_floating_point() else v for k, v in _weights(run_ckpt).items()}
    return average_weights(mine, _weights(parent_file), weight_b=share)


def test_each_fold_is_the_average_of_its_run_fold_and_the_parent_fold_it_started_from(averaged, child_run, parent):
    for k in (0, 1):
        got = _weights(averaged / f"fold_{k}.pt")
        want = _expect(child_run / f"fold_{k}" / "checkpoint_best.pt", parent / f"fold_{k}.pt", 0.5)
        mine = _weights(child_run / f"fold_{k}" / "checkpoint_best.pt")
        differs = 0
        for name, w in want.items():
            assert got[name].dtype == torch.float16
            assert torch.equal(got[name], w), name
            differs += not torch.equal(got[name], mine[name].to(got[name].dtype))
        assert differs > 0  # the run's own weights were not exported unchanged
    meta = json.loads((averaged / "model.json").read_text())
    rec = meta["averaged_with"]
    assert rec["weight"] == 0.5 and rec["folder"] == str(parent.resolve())
    assert meta["recreate"][-1] == "orbitseg export RUN MODEL_DIR --average-with MODEL0 --average-weight 0.5"
    # the ONNX graphs and the recorded digests are those of the averaged weights
    assert meta["weights_sha256"] == {f"fold_{k}.pt": file_sha256(averaged / f"fold_{k}.pt") for k in (0, 1)}


def test_the_weight_is_the_parent_share(parent, child_run, tmp_path):
    out = export_model(child_run, tmp_path / "quarter", average_with=parent, average_weight=0.25, progress=False)
    got = _weights(out / "fold_0.pt")
    want = _expect(child_run / "fold_0" / "checkpoint_best.pt", parent / "fold_0.pt", 0.25)
    assert all(torch.equal(got[n], w) for n, w in want.items())
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(InputError, match="between 0 and 1"):
            export_model(child_run, tmp_path / f"bad{bad}", average_with=parent, average_weight=bad, progress=False)


def test_post_processing_is_chosen_again_on_validation_cases_and_cv_rescored(averaged, child_run):
    runs = {k: json.loads((child_run / f"fold_{k}" / "run.json").read_text()) for k in (0, 1)}
    pp = json.loads((averaged / "postprocess.json").read_text())
    assert sorted(pp["cases"]) == sorted(c for info in runs.values() for c in info["split"]["val"])
    # chosen with the averaged weights: the per-case validation Dice are not the run's own
    own = [json.loads((child_run / f"fold_{k}" / "postprocess.json").read_text())["per_case"] for k in (0, 1)]
    assert pp["per_case"] != {c: v for d in own for c, v in d.items()}
    rows = json.loads((averaged / "cv_per_case.json").read_text())
    assert sorted(r["case"] for r in rows) == sorted(c for info in runs.values() for c in info["split"]["test"])
    assert "with the averaged weights" in json.loads((averaged / "model.json").read_text())["postprocess"]["how"]


def test_a_run_not_fine_tuned_from_the_model_is_refused(parent, tiny_dataset, tmp_path):
    scratch = tmp_path / "scratch"
    train_fold(tiny_dataset, 0, epochs=1, batch_size=4, seed=0, out=scratch / "fold_0", overrides=TINY_TRAINING,
               progress=False)
    with pytest.raises(InputError, match="did not start from"):
        export_model(scratch, tmp_path / "out", average_with=parent, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_model_whose_fold_saw_a_test_patient_of_the_run_is_refused(parent, child_run, tmp_path):
    """Averaging puts the model's fold into the network scored on the run's test patients: it must never have
    trained on them (nor chosen by them), else the cross-validation would score seen patients."""
    leaky = tmp_path / "leaky"
    shutil.copytree(parent, leaky)
    meta = json.loads((leaky / "model.json").read_text())
    test0 = json.loads((child_run / "fold_0" / "run.json").read_text())["split"]["test"]
    meta["folds"]["0"]["split"]["train"].append(test0[0])
    (leaky / "model.json").write_text(json.dumps(meta))
    # the copy holds the same weights, so the run counts as started from it; only the split stops it
    with pytest.raises(InputError, match=f"trained on or chose by 1 case.*{test0[0]}"):
        export_model(child_run, tmp_path / "out", average_with=leaky, progress=False)
    del meta["folds"]["0"]["split"]
    (leaky / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="records no split of fold 0"):
        export_model(child_run, tmp_path / "out", average_with=leaky, progress=False)


def test_averaging_needs_the_dataset_to_choose_post_processing_again(parent, child_run, tmp_path):
    moved = tmp_path / "run"  # a run whose dataset is no longer where run.json says
    shutil.copytree(child_run, moved)
    for k in (0, 1):
        info = json.loads((moved / f"fold_{k}" / "run.json").read_text())
        (moved / f"fold_{k}" / "run.json").write_text(json.dumps({**info, "dataset": str(tmp_path / "gone")}))
    assert export_model(moved, tmp_path / "plain", progress=False).is_dir()  # unaveraged: metrics copied instead
    with pytest.raises(InputError, match="dataset is needed"):
        export_model(moved, tmp_path / "out", average_with=parent, progress=False)
    assert not (tmp_path / "out").exists()


def test_the_full_network_is_averaged_with_the_parent_full_network(averaged, child_run, parent, tmp_path):
    target = tmp_path / "with_full"
    shutil.copytree(averaged, target)
    assert main(["export", str(child_run), str(target), "--add-full", "--average-with", str(parent)]) == 0
    got = _weights(target / "full.pt")
    want = _expect(child_run / "full" / "checkpoint_best.pt", parent / "full.pt", 0.5)
    assert all(torch.equal(got[n], w) for n, w in want.items())
    full = json.loads((target / "model.json").read_text())["full"]
    assert full["averaged_with"]["weight"] == 0.5
    assert full["recreate"][-1] == "orbitseg export RUN_FULL MODEL_DIR --add-full --average-with MODEL0 " \
                                   "--average-weight 0.5"
    # exported alone: averaged too, and no estimate from the run's unaveraged folds
    alone = export_model(child_run, tmp_path / "alone", full=True, average_with=parent, progress=False)
    assert all(torch.equal(_weights(alone / "full.pt")[n], w) for n, w in want.items())
    assert json.loads((alone / "model.json").read_text())["cv_estimate"]["dice"] is None


def test_average_weights_refuses_different_networks():
    a = {"w": torch.ones(2, 2), "n": torch.tensor(3)}
    avg = average_weights(a, {"w": torch.zeros(2, 2), "n": torch.tensor(3)}, weight_b=0.25)
    assert torch.equal(avg["w"], torch.full((2, 2), 0.75)) and avg["n"].item() == 3
    with pytest.raises(ValueError, match="one only"):
        average_weights(a, {"w": torch.ones(2, 2)}, weight_b=0.5)
    with pytest.raises(ValueError, match=r"\(2, 2\) in one, \(3,\)"):
        average_weights(a, {"w": torch.ones(3), "n": torch.tensor(3)}, weight_b=0.5)
    with pytest.raises(ValueError, match="no weight"):
        average_weights(a, {"w": torch.ones(2, 2), "n": torch.tensor(4)}, weight_b=0.5)
    with pytest.raises(ValueError, match="weight_b"):
        average_weights(a, a, weight_b=-0.1)
