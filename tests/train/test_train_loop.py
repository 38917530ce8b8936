"""A tiny training run: files on disk, refusal to overwrite, init-from."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from tiny import TINY_TRAINING

from orbitseg.errors import InputError
from orbitseg.model import build_model
from orbitseg.runs.checkpoint import load_network
from orbitseg.train import train, train_fold
from orbitseg.train.loop import load_init

TINY = {**TINY_TRAINING, "evaluate_test": True, "surface": False}  # these tests look at the test fold too


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    root = tiny_dataset
    out = tmp_path_factory.mktemp("run") / "fold_1"
    return root, train_fold(root, 1, epochs=1, batch_size=4, seed=0, out=out, overrides=TINY, progress=False)


def test_run_folder(run):
    root, r = run
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "log.csv", "curves.png", "run.json"):
        assert (r / name).is_file(), name
    rows = list(csv.DictReader(open(r / "log.csv")))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert {"train_loss", "val_dice_eyeball", "val_dice_muscles", "val_dice_nerve", "seconds"} <= set(rows[0])
    info = json.loads((r / "run.json").read_text())
    assert "git_commit" in info and info["seed"] == 0 and info["fold"] == 1
    assert info["preset"]["model"]["widths"] == [4, 8] and info["preset"]["training"]["loss"] == "dice_ce"
    assert info["preprocess"]["size"] == 32 and set(info["versions"]) >= {"python", "torch", "numpy", "orbitseg"}
    assert isinstance(info["command"], list)
    split = json.loads((root / "splits.json").read_text())["folds"][1]
    assert info["split"]["test"] == split["test"] and info["split"]["val"] == split["val"]
    assert not set(split["test"]) & set(split["train"] + split["val"])
    seg = sorted(p.name for p in (r / "segmented").iterdir())
    assert seg == [f"{c}.nii.gz" for c in split["test"]]
    summary = json.loads((r / "metrics" / "summary.json").read_text())
    assert summary["n_cases"] == len(split["test"])
    assert info["result"]["test"]["cases"] == len(split["test"])
    # post-processing was chosen on the validation cases only, and the test fold used it
    pp_choice = json.loads((r / "postprocess.json").read_text())
    assert pp_choice["cases"] == sorted(split["val"]) and set(pp_choice["rules"]) == {"eyeball", "muscles", "nerve"}
    assert info["result"]["postprocess"] == pp_choice["rules"]
    assert set(info["result"]["test"]["dice_before_postprocessing"]) == {"dice_eyeball", "dice_muscles", "dice_nerve"}
    model, pp = load_network(r / "checkpoint_best.pt")
    assert pp.size == 32 and model.widths == (4, 8)


def test_refuses_to_overwrite(run):
    root, r = run
    before = (r / "checkpoint_last.pt").read_bytes()
    with pytest.raises(InputError, match="resume"):
        train_fold(root, 1, epochs=1, batch_size=4, out=r, overrides=TINY, progress=False)
    assert (r / "checkpoint_last.pt").read_bytes() == before
    # resume of a finished run trains nothing more
    train_fold(root, 1, epochs=1, batch_size=4, out=r, overrides={**TINY, "evaluate_test": False},
               resume=True, progress=False)
    assert len(list(csv.DictReader(open(r / "log.csv")))) == 1
    assert json.loads((r / "run.json").read_text())["resumes"][-1]["epochs"] == 1


def test_a_folder_being_trained_is_refused_to_a_second_process(run, tmp_path):
    """Two trainings given one folder (e.g. the same --out in two shells) would interleave checkpoints and logs:
    while one holds the folder the other is refused by name, writing nothing, even with overwrite."""
    import os

    from orbitseg.io.atomic import exclusive_lock
    from orbitseg.runs.layout import TRAIN_LOCK

    root, r = run
    before = {p.name: p.read_bytes() for p in r.iterdir() if p.is_file()}
    with exclusive_lock(r / TRAIN_LOCK, what="training"):  # another process's hold, as flock sees it
        with pytest.raises(InputError, match=rf"{r.name}.*in use.*pid {os.getpid()}.*training"):
            train_fold(root, 1, epochs=1, batch_size=4, out=r, overrides=TINY, progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in r.iterdir() if p.is_file() and p.name != TRAIN_LOCK} == \
        {k: v for k, v in before.items() if k != TRAIN_LOCK}
    # released when the holder is done: the folder trains again
    fresh = train_fold(root, 1, epochs=1, batch_size=4, out=tmp_path / "f1", overrides=TINY_TRAINING, progress=False)
    with exclusive_lock(fresh / TRAIN_LOCK, what="training"):
        pass


def test_fold_all_refuses_up_front(run):
    """A later fold already trained (e.g. in parallel) is named before any fold trains, and nothing is written."""
    root, r = run
    parent = r.parent
    with pytest.raises(InputError, match=r"fold_1.*resume"):
        train(root, "all", epochs=1, batch_size=4, out=parent, overrides=TINY, progress=False)
    assert not (parent / "fold_0").exists()


def test_init_from_reports_loaded_and_skipped(run, tmp_path_factory):
    root, r = run
    other = build_model("default", widths=(4, 16), bottleneck_lstm_hidden=4, head_lstm_hidden=4, input_size=32)
    lines = []
    rep = load_init(other, r / "checkpoint_best.pt", log=lines.append)
    assert rep["loaded"] and rep["shape_mismatch"]
    assert "encoder.levels.0" in " ".join(rep["loaded"]) or any(k.startswith("encoder") for k in rep["loaded"])
    assert "loaded" in lines[0] and "shape mismatch" in lines[0]
    ck = torch.load(r / "checkpoint_best.pt", weights_only=True)["model"]
    for k in rep["loaded"]:
        assert torch.equal(other.state_dict()[k], ck[k])
    # a bare state_dict works too, and train_fold records the report
    bare = tmp_path_factory.mktemp("bare") / "weights.pt"
    torch.save(ck, bare)
    out = train_fold(root, 1, epochs=1, batch_size=4, out=tmp_path_factory.mktemp("init") / "f",
                     init_from=bare, overrides={**TINY, "widths": (4, 16), "max_steps_per_epoch": 1,
                                                "evaluate_test": False}, progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info["init_report"]["loaded"] and info["init_report"]["shape_mismatch"]


def test_distill_from_teaches_with_the_same_folds_network_and_is_recorded(run, tmp_path):
    """With a teacher the trained weights differ from the same seed's without one (the teacher's probabilities
    enter the loss); a run folder teaches with its own fold k; a teacher that saw the fold's test cases is
    refused by name."""
    root, r = run
    opts = {**TINY, "widths": (2, 4), "bottleneck_lstm_hidden": 2, "head_lstm_hidden": 2, "max_steps_per_epoch": 2,
            "evaluate_test": False}
    plain = train_fold(root, 1, epochs=1, batch_size=4, seed=0, out=tmp_path / "plain", overrides=opts,
                       progress=False)
    taught = train_fold(root, 1, epochs=1, batch_size=4, seed=0, out=tmp_path / "taught", overrides=opts,
                        distill_from=r.parent, progress=False)
    info = json.loads((taught / "run.json").read_text())
    assert info["distill_from"] == str(r / "checkpoint_best.pt") and info["options"]["distill_weight"] == 1.0
    a = torch.load(plain / "checkpoint_last.pt", weights_only=True)["model"]
    b = torch.load(taught / "checkpoint_last.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    leaky = tmp_path / "leaky"  # fold 1's network posing as fold 0: it trained on fold 0's test cases
    shutil.copytree(r, leaky / "fold_0")
    with pytest.raises(InputError, match=r"test case\(s\) of fold 0.*--distill-from"):
        train_fold(root, 0, epochs=1, batch_size=4, seed=0, out=tmp_path / "leak", overrides=opts,
                   distill_from=leaky, progress=False)
    # the network trained on every case learns from all the folds of a folder (none of them leaks a test case)
    folds = tmp_path / "folds"
    for k in (0, 1):
        shutil.copytree(r, folds / f"fold_{k}")
    full = train_fold(root, "full", epochs=1, batch_size=4, seed=0, out=tmp_path / "full", overrides=opts,
                      distill_from=folds, progress=False)
    assert json.loads((full / "run.json").read_text())["distill_from"] == [
        str(folds / f"fold_{k}" / "checkpoint_best.pt") for k in (0, 1)]


def test_bfloat16_training_is_recorded_kept_on_resume_and_differs_from_float32(run, tmp_path):
    """--precision bfloat16 really trains under autocast (other weights than float32 from the same seed),
    is written into run.json and the checkpoints, and a resume in another precision is refused."""
    root, r = run
    opts = {**TINY, "evaluate_test": False, "max_steps_per_epoch": 2}
    out = train_fold(root, 1, epochs=1, batch_size=4, seed=0, out=tmp_path / "bf16",
                     overrides={**opts, "precision": "bfloat16"}, progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info["options"]["precision"] == "bfloat16"
    ck = torch.load(out / "checkpoint_last.pt", weights_only=True)
    assert ck["precision"] == "bfloat16"
    f32 = train_fold(root, 1, epochs=1, batch_size=4, seed=0, out=tmp_path / "f32", overrides=opts, progress=False)
    w32 = torch.load(f32 / "checkpoint_last.pt", weights_only=True)["model"]
    assert any(not torch.equal(w32[k], ck["model"][k]) for k in w32)
    for k in w32:  # one small step apart, not another network
        torch.testing.assert_close(w32[k].float(), ck["model"][k].float(), atol=2e-2, rtol=0)
    before = (out / "checkpoint_last.pt").read_bytes()
    with pytest.raises(InputError, match="trained in bfloat16"):
        train_fold(root, 1, epochs=2, batch_size=4, out=out, overrides=opts, resume=True, progress=False)
    assert (out / "checkpoint_last.pt").read_bytes() == before
    with pytest.raises(ValueError, match="precision must be float32 or bfloat16"):
        train_fold(root, 1, epochs=1, out=tmp_path / "x", overrides={**opts, "precision": "auto"}, progress=False)


def test_init_from_a_folder_starts_each_fold_from_its_own_fold(run, tmp_path, capsys):
    """`--init-from FOLDER` fine-tunes fold k from the folder's fold k, and refuses weights that saw a test case."""
    import shutil

    root, r = run
    opts = {**TINY, "evaluate_test": False, "max_steps_per_epoch": 1}
    out = train_fold(root, 1, epochs=1, batch_size=4, out=tmp_path / "ft1", init_from=r.parent, overrides=opts,
                     progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info["init_from"] == str(r / "checkpoint_best.pt")
    assert info["init_report"]["loaded"] and not info["init_report"]["shape_mismatch"]
    # the run folder has no fold 0: named, and no run folder is started
    with pytest.raises(InputError, match="no weights for fold 0"):
        train_fold(root, 0, epochs=1, out=tmp_path / "ft0", init_from=r.parent, overrides=opts, progress=False)
    assert not (tmp_path / "ft0").exists()
    # an exported-model layout whose fold 0 was trained on fold 1's split: it saw fold 0's test patients
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(r / "checkpoint_best.pt", model / "fold_0.pt")
    with pytest.raises(InputError, match="records no split"):
        train_fold(root, 0, epochs=1, out=tmp_path / "ft0", init_from=model, overrides=opts, progress=False)
    split1 = json.loads((r / "run.json").read_text())["split"]
    (model / "model.json").write_text(json.dumps({"folds": {"0": {"split": split1}}}))
    test0 = json.loads((root / "splits.json").read_text())["folds"][0]["test"]
    with pytest.raises(InputError, match=rf"test case\(s\) of fold 0 \({sorted(test0)[0]}"):
        train_fold(root, 0, epochs=1, out=tmp_path / "ft0", init_from=model, overrides=opts, progress=False)
    assert not (tmp_path / "ft0").exists()
    # the same case names from another synthetic cohort (another seed) share no scan: accepted, and said
    ours = json.loads((root / "dataset.json").read_text())["synthetic"]
    other = {**ours, "seed": ours["seed"] + 1}
    (model / "model.json").write_text(json.dumps({"folds": {"0": {"split": split1}}, "dataset": {"synthetic": other}}))
    capsys.readouterr()
    out_other = train_fold(root, 0, epochs=1, batch_size=4, out=tmp_path / "ft_other", init_from=model, overrides=opts,
                           progress=True)
    assert json.loads((out_other / "run.json").read_text())["init_from"] == str(model / "fold_0.pt")
    said = capsys.readouterr().out
    assert f"trained on another dataset (synthetic, seed {other['seed']}" in said and "no shared scan" in said
    # recorded as the same cohort, the names are the same scans again: refused
    (model / "model.json").write_text(json.dumps({"folds": {"0": {"split": split1}}, "dataset": {"synthetic": ours}}))
    with pytest.raises(InputError, match=r"test case\(s\) of fold 0"):
        train_fold(root, 0, epochs=1, out=tmp_path / "ft0", init_from=model, overrides=opts, progress=False)
    # with fold 0's own split it is accepted
    (model / "model.json").write_text(json.dumps({"folds": {"0": {"split": {**split1, "train": [], "val": []}}}}))
    out0 = train_fold(root, 0, epochs=1, batch_size=4, out=tmp_path / "ft0", init_from=model, overrides=opts,
                      progress=False)
    assert json.loads((out0 / "run.json").read_text())["init_from"] == str(model / "fold_0.pt")
