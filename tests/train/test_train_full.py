"""``orbitseg train --fold full`` (one model on every labelled case) and fine-tuning that refuses slices made
otherwise than its starting weights' (issue 20: the route to a new site)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from tiny import TINY_TRAINING


@pytest.fixture(scope="module")
def two_patients(tmp_path_factory):
    """Two labelled patients: too few for cross-validation (it needs four), enough for a full model."""
    from orbitseg.synth import make_cohort

    root = tmp_path_factory.mktemp("full") / "ds"
    make_cohort(root, patients=2, seed=3, small=True, workers=1)
    return root


def test_full_model_trains_on_every_labelled_case_without_splits(two_patients, tmp_path):
    from orbitseg.io.layout import list_cases
    from orbitseg.preprocess.dataset import preprocess_dataset
    from orbitseg.preprocess.pipeline import PreprocessConfig
    from orbitseg.predict import Segmenter
    from orbitseg.io.read import read_scan
    from orbitseg.runs.checkpoint import load_checkpoint
    from orbitseg.train import train
    from orbitseg.train.splits import SPLITS

    ds = tmp_path / "ds"
    shutil.copytree(two_patients, ds)
    preprocess_dataset(ds, PreprocessConfig(size=32), progress=False)
    runs = train(ds, "full", epochs=2, batch_size=4, seed=0, overrides=TINY_TRAINING, progress=False)
    assert runs == [ds / "runs" / "default" / "full"]
    run = runs[0]
    labelled = sorted(c.case_id for c in list_cases(ds) if c.training)
    info = json.loads((run / "run.json").read_text())
    assert info["fold"] == "full"
    assert sorted(info["split"]["train"]) == labelled and info["split"]["val"] == [] == info["split"]["test"]
    # what the loop actually read: every labelled case trained, nothing validated
    access = json.loads((run / "data_access.json").read_text())
    assert sorted(access["trained"]) == labelled and not access["validated"]
    assert not (ds / SPLITS).exists(), "the full model must not need (or write) a cross-validation split"
    # no validation to choose by: the model is the last epoch's
    best, last = load_checkpoint(run / "checkpoint_best.pt"), load_checkpoint(run / "checkpoint_last.pt")
    assert best["epoch"] == last["epoch"] == 2 and best["best_epoch"] == 2
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    # a full run resumes like a fold's (its records say fold "full"), here with one epoch more
    train(ds, "full", epochs=3, batch_size=4, seed=0, overrides=TINY_TRAINING, progress=False, resume=True)
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 3
    access = json.loads((run / "data_access.json").read_text())
    assert access["fold"] == "full" and [e["epoch"] for e in access["epochs"]] == [1, 2, 3]
    # predict takes the run folder as it is
    seg = Segmenter.load(run, engine="torch", precision="float32")
    scan = read_scan(next((ds / "imagesTr").iterdir()))
    assert seg.segment(scan).labels.shape == scan.shape


def test_fine_tuning_refuses_slices_made_otherwise_and_preprocess_like_fixes_it(two_patients, tmp_path):
    from orbitseg.errors import InputError
    from orbitseg.preprocess.dataset import preprocess_dataset
    from orbitseg.preprocess.pipeline import PreprocessConfig
    from orbitseg.pretrained import shipped_model_dir
    from orbitseg.runs.checkpoint import preprocess_of
    from orbitseg.train import train
    from orbitseg.train.data import read_manifest

    ds = tmp_path / "ds"
    shutil.copytree(two_patients, ds)
    preprocess_dataset(ds, PreprocessConfig(size=32), progress=False)
    shipped = shipped_model_dir()
    one_step = {"max_steps_per_epoch": 1, "threads": 1, "evaluate_test": False}
    with pytest.raises(InputError) as err:
        train(ds, "full", epochs=1, batch_size=2, init_from=shipped, overrides=one_step, progress=False)
    msg = str(err.value)
    assert "size 32 here, 80 there" in msg and f"--like {shipped}" in msg
    assert not (ds / "runs" / "default" / "full" / "checkpoint_last.pt").exists()

    # the command the message names (through the installed CLI where there is one, else the library)
    orbitseg = shutil.which("orbitseg")
    if orbitseg:
        r = subprocess.run([orbitseg, "preprocess", str(ds), "--like", "shipped", "--overwrite"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "size 80" in r.stdout
    else:
        preprocess_dataset(ds, preprocess_of(shipped), overwrite=True, progress=False)
    assert read_manifest(ds)[1] == preprocess_of(shipped)
    run = train(ds, "full", epochs=1, batch_size=2, init_from=shipped, overrides=one_step, progress=False)[0]
    info = json.loads((run / "run.json").read_text())
    # the shipped folder holds a full network beside its folds: the full model starts from it
    assert info["init_from"] == str(shipped / "full.pt") and info["init_report"]["shape_mismatch"] == []
    assert len(info["init_report"]["loaded"]) > 0 and info["init_report"]["missing"] == []


def test_sample_by_thickness_draws_a_thick_case_by_the_anatomy_it_covers(tiny_dataset, tmp_path):
    """``sampler_thickness`` (``train --sample-by-thickness``) reaches the loop's draw: with one case's slices
    recorded 20 times as thick as the others, that case fills most batches (about 80 % of them; 20 % by slice
    count; data_access.json counts the items the loop fetched); without the option it gets about its share of
    slices.  The option is recorded."""
    from orbitseg.train import train_fold

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    path = root / "preprocessed" / "manifest.json"
    manifest = json.loads(path.read_text())
    heavy = sorted(manifest["cases"])[0]
    for v in manifest["cases"][heavy]["vois"]:
        v["voi_spacing"][2] = 20.0 * v["voi_spacing"][2]
    path.write_text(json.dumps(manifest))
    n_slices = {c: sum(v["n_slices"] for v in e["vois"]) for c, e in manifest["cases"].items()}
    shares = {}
    for on in (False, True):
        out = tmp_path / f"run_{on}"
        train_fold(root, "full", epochs=1, batch_size=8, seed=0, out=out, progress=False,
                   overrides={**TINY_TRAINING, "max_steps_per_epoch": 10, "sampler_thickness": on})
        trained = json.loads((out / "data_access.json").read_text())["trained"]
        shares[on] = trained.get(heavy, 0) / sum(trained.values())
        assert json.loads((out / "run.json").read_text())["options"]["sampler_thickness"] is on
    assert shares[False] < 0.35 and shares[True] > 0.6, (shares, n_slices[heavy] / sum(n_slices.values()))
