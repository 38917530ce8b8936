"""orbitseg export of a ``full`` model (``train --fold full``, nnU-Net's ``-f all``): the network trained on
every labelled case becomes a model folder with no metric of its own, that predict and --init-from take."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from tiny import TINY_TRAINING

from orbitseg.cli import main
from orbitseg.errors import InputError
from orbitseg.io.layout import list_cases
from orbitseg.io.read import file_sha256, read_scan
from orbitseg.predict import Segmenter
from orbitseg.runs.layout import model_checkpoints
from orbitseg.train import train_fold
from orbitseg.train.export import export_model


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    """Two tiny cross-validation folds and the full model of the same recipe, as `train --fold all` and
    `train --fold full` lay them out in one run folder."""
    run = tmp_path_factory.mktemp("full") / "run"
    for k in (0, 1, "full"):
        train_fold(tiny_dataset, k, epochs=1, batch_size=4, seed=0, out=run / f"{'fold_' if k != 'full' else ''}{k}",
                   overrides=TINY_TRAINING, progress=False)
    return run


@pytest.fixture(scope="module")
def folds_model(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "folds"
    export_model(run, out, progress=False)
    return out


@pytest.fixture(scope="module")
def full_model(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "full"
    assert main(["export", str(run), str(out), "--full", "--name", "tinyfull"]) == 0
    return out


def test_a_run_holding_folds_and_full_exports_its_folds_by_default(folds_model):
    names = sorted(p.name for p in folds_model.iterdir())
    assert "fold_0.pt" in names and "fold_1.pt" in names and not [n for n in names if n.startswith("full")]
    assert json.loads((folds_model / "model.json").read_text())["cv_metrics"]["dice"]["all"] is not None


def test_full_export_is_the_one_network_in_float16_with_its_graphs(run, full_model, folds_model, tiny_dataset, capsys):
    from orbitseg.predict.engine import _recorded_sha

    assert sorted(p.name for p in full_model.iterdir()) == [
        "full.encoder.onnx", "full.pt", "full.sequences.onnx", "model.json", "postprocess.json"]
    meta = json.loads((full_model / "model.json").read_text())
    assert meta["weights_sha256"] == {"full.pt": file_sha256(full_model / "full.pt")}
    assert meta["engine"]["onnx"] == {p.name: file_sha256(p) for p in full_model.glob("*.onnx")}
    assert {_recorded_sha(p) for p in full_model.glob("*.onnx")} == {meta["weights_sha256"]["full.pt"]}
    half = torch.load(full_model / "full.pt", weights_only=True)
    assert half["fold"] == "full" and {v.dtype for v in half["model"].values() if v.is_floating_point()} == {
        torch.float16}
    # the graphs beside the weights are the ones the ONNX engine runs (looked up by the stem "full")
    lines = []
    seg = Segmenter.load(full_model, engine="onnx", log=lines.append)
    assert seg.engine.files()[0]["path"].startswith(str(full_model.resolve())) and not lines
    # the post-processing line says whose validation cases chose it (the full model has none)
    assert "of the cross-validation folds" in seg.describe()
    assert "cross-validation" not in Segmenter.load(folds_model).describe()
    # and the float16 network gives the full run's checkpoint's probabilities
    scan = read_scan(next(c for c in list_cases(tiny_dataset) if c.training).image)
    p16 = Segmenter.load(full_model, precision="float32").segment(scan, probabilities=True).probabilities.values
    p32 = Segmenter.load(run / "full", precision="float32").segment(scan, probabilities=True).probabilities.values
    assert np.abs(p16 - p32).max() < 0.02
    fold0 = Segmenter.load(run / "fold_0", precision="float32").segment(scan, probabilities=True).probabilities.values
    assert np.abs(fold0 - p32).max() > 0.05  # (the comparison tells networks apart)


def test_model_json_says_what_the_full_model_is_and_claims_no_metric_of_its_own(run, full_model, folds_model,
                                                                                 tiny_dataset, capsys):
    meta = json.loads((full_model / "model.json").read_text())
    labelled = sorted(c.case_id for c in list_cases(tiny_dataset) if c.training)
    assert meta["networks"] == "full" and meta["name"] == "tinyfull"
    assert sorted(meta["folds"]["full"]["split"]["train"]) == labelled and meta["folds"]["full"]["split"]["test"] == []
    assert f"all {len(labelled)} labelled cases" in meta["description"] and "no metric of its own" in meta["description"]
    assert meta["cv_metrics"] is None

    def dice_keys(d, path=""):  # every key naming a Dice, wherever it sits
        if isinstance(d, dict):
            return [p for k, v in d.items() for p in ([f"{path}/{k}"] if "dice" in k.lower() else [])
                    + dice_keys(v, f"{path}/{k}")]
        return []

    # the recipe's estimate (and its folds' records), nothing of its own
    assert [k for k in dice_keys(meta) if not k.startswith("/cv_estimate/")] == []
    assert not (full_model / "cv_summary.json").exists() and not (full_model / "cv_per_case.json").exists()
    # the folds' cross-validation, recorded as the recipe's estimate: the very numbers the folds' export records
    est = meta["cv_estimate"]
    assert est["dice"] == json.loads((folds_model / "model.json").read_text())["cv_metrics"]["dice"]
    assert "not this network" in est["how"] and set(est["folds"]) == {"0", "1"}
    # post-processing: the folds' pooled validation choice, said to be theirs
    assert json.loads((full_model / "postprocess.json").read_text()) == json.loads(
        (folds_model / "postprocess.json").read_text())
    assert meta["postprocess"]["rules"] == json.loads((folds_model / "model.json").read_text())["postprocess"]["rules"]
    assert "cross-validation folds" in meta["postprocess"]["how"]
    cmds = meta["recreate"]
    assert cmds[0] == "orbitseg synth DATA --seed 0 --patients 4 --small"
    assert [c.split(" --preset")[0] for c in cmds if c.startswith("orbitseg train")] == [
        "orbitseg train DATA --fold all", "orbitseg train DATA --fold full"]
    assert "--out RUN/full" in cmds[-2] and cmds[-1] == "orbitseg export RUN MODEL_DIR --full"
    assert meta["training_acquisition"] is not None
    from orbitseg.train.export import describe_export

    text = describe_export(full_model)
    assert f"1 network trained on all {len(labelled)} labelled cases" in text and "no metric of its own" in text
    assert "estimate" in text


def test_a_run_holding_only_full_exports_it_without_an_option(run, tmp_path, tiny_dataset):
    only = tmp_path / "only"
    shutil.copytree(run / "full", only / "full")
    model = export_model(only, tmp_path / "m", progress=False)
    meta = json.loads((model / "model.json").read_text())
    assert meta["networks"] == "full" and (model / "full.pt").is_file()
    # nothing to estimate the recipe or choose post-processing with: said so, nothing invented
    assert meta["cv_estimate"]["dice"] is None and "no cross-validation fold" in meta["cv_estimate"]["how"]
    assert meta["postprocess"]["rules"] is None and not (model / "postprocess.json").exists()
    assert meta["recreate"][-2:] == [
        "orbitseg train DATA --fold full --preset default --epochs 1 --seed 0 --out RUN/full",
        "orbitseg export RUN MODEL_DIR"]
    # the folder train --fold full --out DIR wrote, given itself, exports too
    assert json.loads((export_model(only / "full", tmp_path / "m2", progress=False) / "model.json").read_text())[
        "networks"] == "full"


def test_full_is_refused_by_name_where_there_is_none(run, tmp_path):
    folds_only = tmp_path / "folds_only"
    for k in (0, 1):
        shutil.copytree(run / f"fold_{k}", folds_only / f"fold_{k}", ignore=shutil.ignore_patterns("segmented"))
    with pytest.raises(InputError, match="holds no full model"):
        export_model(folds_only, tmp_path / "m", full=True)
    assert main(["export", str(folds_only), str(tmp_path / "m"), "--full"]) == 2
    assert not (tmp_path / "m").exists()


def test_predict_with_the_full_model_records_full_pt(full_model, run, tiny_dataset, tmp_path):
    from orbitseg.predict.run import predict_inputs

    case = next(c for c in list_cases(tiny_dataset) if c.training)
    rows, problems = predict_inputs(case.image, tmp_path / "pred", model=full_model, engine="torch", progress=False)
    assert problems == [] and rows
    record = json.loads((tmp_path / "pred" / "prediction.json").read_text())
    (settings,) = record["settings"].values()
    assert settings["checkpoints"] == [{"path": str((full_model / "full.pt").resolve()),
                                        "sha256": file_sha256(full_model / "full.pt")}]
    assert settings["postprocess"] == json.loads((full_model / "postprocess.json").read_text())["rules"]
    assert [p.name for p in model_checkpoints(full_model)] == ["full.pt"]
    # a run folder holding folds and full: `--folds full` on the command line takes the full network alone
    assert main(["predict", str(case.image), str(tmp_path / "pred_run"), "--model", str(run), "--folds", "full",
                 "--engine", "torch"]) == 0
    record = json.loads((tmp_path / "pred_run" / "prediction.json").read_text())
    assert [c["path"] for s in record["settings"].values() for c in s["checkpoints"]] == [
        str((run / "full" / "checkpoint_best.pt").resolve())]


def test_init_from_a_full_model(full_model, run, tiny_dataset, tmp_path):
    """A full model saw every case of its dataset: no cross-validation fold of that dataset may start from
    it; on another dataset every fold may; the full model of its own dataset may."""
    from orbitseg.train.loop import _per_fold_init
    from orbitseg.train.splits import fold_split, full_split, read_splits

    with pytest.raises(InputError, match="full model: it was trained on every case"):
        train_fold(tiny_dataset, 1, epochs=1, init_from=full_model, out=tmp_path / "f1", overrides=TINY_TRAINING,
                   progress=False)
    assert not (tmp_path / "f1").exists()
    only = tmp_path / "only"  # a run folder holding only full/: the same (run.json names the dataset)
    shutil.copytree(run / "full", only / "full")
    with pytest.raises(InputError, match="full model"):
        _per_fold_init(only, 0, fold_split(read_splits(tiny_dataset), 0), lambda _: None, tiny_dataset)
    # another dataset (another synthetic cohort): every fold starts from the full network
    other = tmp_path / "other"
    other.mkdir()
    info = json.loads((tiny_dataset / "dataset.json").read_text())
    info["synthetic"]["seed"] = 99
    (other / "dataset.json").write_text(json.dumps(info))
    assert _per_fold_init(full_model, 0, fold_split(read_splits(tiny_dataset), 0), lambda _: None, other) == full_model / "full.pt"
    # a full model of this dataset from it: continued training, and its provenance is exported
    child = train_fold(tiny_dataset, "full", epochs=1, batch_size=4, init_from=full_model, out=tmp_path / "child",
                       overrides=TINY_TRAINING, progress=False)
    assert json.loads((child / "run.json").read_text())["init_from"] == str(full_model / "full.pt")
    assert _per_fold_init(full_model, "full", full_split(tiny_dataset), lambda _: None, tiny_dataset) == \
        full_model / "full.pt"
    meta = json.loads((export_model(child, tmp_path / "m", progress=False) / "model.json").read_text())
    assert meta["init_from"]["folder"] == str(full_model.resolve())
    assert "full network started from that folder's full network" in meta["init_from"]["how"]
    assert meta["init_from"]["cv_estimate_dice"] == json.loads((full_model / "model.json").read_text())[
        "cv_estimate"]["dice"]
    assert meta["recreate"][-3:] == [
        "orbitseg export RUN0 MODEL0 --full",
        "orbitseg train DATA --fold full --preset default --epochs 1 --seed 0 --out RUN/full --init-from MODEL0",
        "orbitseg export RUN MODEL_DIR"]
    # from a run folder holding only full/: its commands re-create that run, then the fine-tuning from it
    child = train_fold(tiny_dataset, "full", epochs=1, batch_size=4, init_from=only, out=tmp_path / "child2",
                       overrides=TINY_TRAINING, progress=False)
    meta = json.loads((export_model(child, tmp_path / "m2", progress=False) / "model.json").read_text())
    assert meta["recreate"][2:] == [
        "orbitseg train DATA --fold full --preset default --epochs 1 --seed 0 --out RUN0/full",
        "orbitseg train DATA --fold full --preset default --epochs 1 --seed 0 --out RUN/full --init-from RUN0",
        "orbitseg export RUN MODEL_DIR"]


@pytest.fixture(scope="module")
def both_model(run, folds_model, tmp_path_factory):
    """The folds' model folder with the run's full network added (`orbitseg export RUN MODEL --add-full`)."""
    out = tmp_path_factory.mktemp("models") / "both"
    shutil.copytree(folds_model, out)
    assert main(["export", str(run), str(out), "--add-full"]) == 0
    return out


def _digests(folder):
    return {p.name: file_sha256(p) for p in folder.iterdir() if p.is_file()}


def test_add_full_puts_the_full_network_beside_the_untouched_folds(run, folds_model, full_model, both_model,
                                                                   tiny_dataset):
    before, after = _digests(folds_model), _digests(both_model)
    # the folds, their graphs, post-processing and CV files as they were; the full network and its graphs added
    assert {k: after[k] for k in before if k != "model.json"} == {k: v for k, v in before.items() if k != "model.json"}
    assert sorted(set(after) - set(before)) == ["full.encoder.onnx", "full.pt", "full.sequences.onnx"]
    mine, theirs = (torch.load(m / "full.pt", weights_only=True)["model"] for m in (both_model, full_model))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs) and mine.keys() == theirs.keys()  # `--full`'s
    meta = json.loads((both_model / "model.json").read_text())
    old = json.loads((folds_model / "model.json").read_text())
    assert {k: v for k, v in meta.items() if k not in ("full", "engine", "weights_sha256")} == {
        k: v for k, v in old.items() if k not in ("engine", "weights_sha256")}
    assert meta["full"]["sha256"] == meta["weights_sha256"]["full.pt"] == after["full.pt"]
    assert meta["engine"]["onnx"] == {n: d for n, d in after.items() if n.endswith(".onnx")}
    assert "no metric of its own" in meta["full"]["description"]
    assert "best_val_dice" not in meta["full"]["run"]["result"]
    assert sorted(meta["full"]["run"]["split"]["train"]) == sorted(
        c.case_id for c in list_cases(tiny_dataset) if c.training)
    cmds = meta["full"]["recreate"]
    assert cmds[:len(old["recreate"])] == old["recreate"]  # the folds first, then the full network
    (train_full,) = [c for c in cmds[len(old["recreate"]):] if c.startswith("orbitseg train DATA --fold full")]
    assert "--init-from" not in train_full  # this one started from random weights
    assert cmds[-1] == "orbitseg export RUN_FULL MODEL_DIR --add-full"
    # `all` stays the folds' ensemble; `full` is the full network alone, labelling as its own model folder does
    assert [p.name for p in model_checkpoints(both_model)] == ["fold_0.pt", "fold_1.pt"]
    assert [p.name for p in model_checkpoints(both_model, "full")] == ["full.pt"]
    scan = read_scan(next(c for c in list_cases(tiny_dataset) if c.training).image)
    mixed = Segmenter.load(both_model, folds="full", engine="torch", precision="float32").segment(scan)
    alone = Segmenter.load(full_model, engine="torch", precision="float32").segment(scan)
    np.testing.assert_array_equal(mixed.labels.array, alone.labels.array)
    from orbitseg.train.export import describe_export

    assert "--folds full" in describe_export(both_model) and "2 fold(s)" in describe_export(both_model)


def test_add_full_refuses_other_cases_a_second_full_network_and_a_full_model_folder(run, folds_model, full_model,
                                                                                  both_model, tmp_path):
    from orbitseg.train.export import add_full_network

    before = _digests(both_model)
    assert main(["export", str(run), str(both_model), "--add-full"]) == 2  # holds one: not without --overwrite
    assert _digests(both_model) == before
    assert main(["export", str(run), str(both_model), "--add-full", "--overwrite"]) == 0
    mine, theirs = (torch.load(m / "full.pt", weights_only=True)["model"] for m in (both_model, full_model))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # the same network, written anew
    assert {k: v for k, v in _digests(both_model).items() if not k.startswith("full.") and k != "model.json"} == {
        k: v for k, v in before.items() if not k.startswith("full.") and k != "model.json"}
    # folds made from other cases than the full network saw: their CV and post-processing are not its recipe's
    other = tmp_path / "other"
    shutil.copytree(folds_model, other)
    meta = json.loads((other / "model.json").read_text())
    meta["folds"]["0"]["split"]["test"] = meta["folds"]["0"]["split"]["test"][1:]
    meta["folds"]["1"]["split"]["train"] = [c for c in meta["folds"]["1"]["split"]["train"]
                                            if c not in json.loads((folds_model / "model.json").read_text())[
                                                "folds"]["0"]["split"]["test"][:1]]
    (other / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="not trained on the cases the folds"):
        add_full_network(run, other)
    assert not (other / "full.pt").exists()
    with pytest.raises(InputError, match="is no fold model folder"):
        add_full_network(run, full_model)
    # a full network made from slices prepared otherwise cannot stand beside these folds
    moved = tmp_path / "moved"
    shutil.copytree(run / "full", moved / "full")
    ckpt = torch.load(moved / "full" / "checkpoint_best.pt", weights_only=False)
    ckpt["preprocess"] = {**ckpt["preprocess"], "size": ckpt["preprocess"]["size"] * 2}
    torch.save(ckpt, moved / "full" / "checkpoint_best.pt")
    with pytest.raises(InputError, match="another preprocessing than the folds"):
        add_full_network(moved, other)
    with pytest.raises(SystemExit):  # --full (on its own) and --add-full (beside the folds) exclude each other
        main(["export", str(run), str(tmp_path / "x"), "--full", "--add-full"])


def test_the_speed_note_offers_the_full_network_where_the_model_has_one(both_model, folds_model, monkeypatch):
    import orbitseg.model as model
    import orbitseg.model.slice_inference as si

    for where in (model, si):
        monkeypatch.setattr(where, "native_bfloat16", lambda: False)
    note = Segmenter.load(both_model, precision="auto", engine="torch").speed_note()
    assert "--folds full runs the one network" in note and "--folds 0,1" in note
    assert "--folds full" not in Segmenter.load(folds_model, precision="auto", engine="torch").speed_note()


def test_a_full_network_fine_tuned_from_the_folds_it_joins_recreates_after_them(folds_model, tiny_dataset, tmp_path):
    """`train --fold full --init-from MODEL` then `export --add-full` into MODEL (or a copy of it): the record's
    commands are the folds' own, once, then the full network's training from them."""
    from orbitseg.train.export import add_full_network

    child = train_fold(tiny_dataset, "full", epochs=1, batch_size=4, seed=0, init_from=folds_model,
                       out=tmp_path / "runf" / "full", overrides=TINY_TRAINING, progress=False)
    target = tmp_path / "copy"
    shutil.copytree(folds_model, target)  # a copy: the same folds, another path
    meta = json.loads((add_full_network(child.parent, target) / "model.json").read_text())
    folds_cmds = json.loads((folds_model / "model.json").read_text())["recreate"]
    assert meta["full"]["recreate"] == folds_cmds + [
        "orbitseg train DATA --fold full --preset default --epochs 1 --seed 0 --out RUN_FULL --init-from MODEL_DIR",
        "orbitseg export RUN_FULL MODEL_DIR --add-full"]
    assert meta["full"]["init_from"]["how"] == "the full network started from that folder's fold_0.pt"


def test_folds_and_full_network_fine_tuned_from_one_model_recreate_it_once(both_model, tiny_dataset, tmp_path):
    """A model's folds fine-tuned fold by fold from an earlier model and its full network from that model's full
    network (`export --add-full`): the record re-makes the earlier model once, its full network included, before
    the new folds' steps, then the new full network from it."""
    from orbitseg.train.export import add_full_network

    run = tmp_path / "run2"
    for k in (0, 1):
        train_fold(tiny_dataset, k, epochs=1, batch_size=4, seed=0, init_from=both_model, out=run / f"fold_{k}",
                   overrides=TINY_TRAINING, progress=False)
    train_fold(tiny_dataset, "full", epochs=1, batch_size=4, seed=0, init_from=both_model, out=run / "full",
               overrides=TINY_TRAINING, progress=False)
    model = export_model(run, tmp_path / "model2", progress=False)
    folds_cmds = json.loads((model / "model.json").read_text())["recreate"]
    meta = json.loads((add_full_network(run, model) / "model.json").read_text())
    cmds = meta["full"]["recreate"]
    assert len(cmds) == len(set(cmds)), cmds  # nothing made twice (the earlier model's steps were, before)
    assert cmds[0] == folds_cmds[0] and cmds[-2:] == [
        "orbitseg train DATA --fold full --preset default --epochs 1 --seed 0 --out RUN_FULL --init-from MODEL0",
        "orbitseg export RUN_FULL MODEL_DIR --add-full"]
    # the earlier model's full network (the new one starts from it) is made before the new folds' training
    made = cmds.index("orbitseg export RUN0_FULL MODEL0 --add-full")
    assert made < cmds.index(next(c for c in folds_cmds if c.startswith("orbitseg train DATA --fold all")
                                  and "--init-from MODEL0" in c))
    assert set(folds_cmds) <= set(cmds)


def test_add_full_from_a_model_folder_carries_its_full_network_beside_folds_fine_tuned_from_it(
        run, both_model, folds_model, tiny_dataset, tmp_path):
    """Folds fine-tuned from a model that keep its full network (`orbitseg export MODEL NEW --add-full`)."""
    tuned_run = tmp_path / "tuned"
    for k in (0, 1):
        train_fold(tiny_dataset, k, epochs=1, batch_size=4, seed=1, split_seed=0, out=tuned_run / f"fold_{k}",
                   init_from=both_model, overrides=TINY_TRAINING, progress=False)
    tuned = tmp_path / "tuned_model"
    export_model(tuned_run, tuned, progress=False)
    folds_before = _digests(tuned)
    assert main(["export", str(both_model), str(tuned), "--add-full"]) == 0
    after = _digests(tuned)
    assert after["full.pt"] == _digests(both_model)["full.pt"]  # byte for byte
    assert {k: v for k, v in after.items() if not k.startswith("full.") and k != "model.json"} == {
        k: v for k, v in folds_before.items() if k != "model.json"}
    meta, src = (json.loads((m / "model.json").read_text()) for m in (tuned, both_model))
    assert meta["full"]["carried_from"]["folder"] == str(both_model.resolve())
    assert meta["full"]["run"] == src["full"]["run"] and meta["full"]["sha256"] == after["full.pt"]
    cmds = meta["full"]["recreate"]
    # the source with its full network once (renamed MODEL0), the fine-tune of the folds, then this export
    assert [c for c in cmds if "--fold full" in c] == [src["full"]["recreate"][-2].replace("RUN_FULL", "RUN0_FULL")]
    assert cmds[-2:] == [meta["recreate"][-1], "orbitseg export MODEL0 MODEL_DIR --add-full"]
    assert len(cmds) == len(set(cmds))  # no step of the source re-made twice
    assert [c for c in cmds if "--init-from MODEL0" in c] == [c for c in meta["recreate"] if "--init-from MODEL0" in c]
    scan = read_scan(next(c for c in list_cases(tiny_dataset) if c.training).image)
    mine = Segmenter.load(tuned, folds="full", engine="torch", precision="float32").segment(scan)
    theirs = Segmenter.load(both_model, folds="full", engine="torch", precision="float32").segment(scan)
    np.testing.assert_array_equal(mine.labels.array, theirs.labels.array)
    # refused: a second one without --overwrite, a source without a full network, averaging, altered weights
    assert main(["export", str(both_model), str(tuned), "--add-full"]) == 2
    from orbitseg.train.export import add_full_network

    with pytest.raises(InputError, match="holds no full network"):
        add_full_network(folds_model, tuned, overwrite=True)
    with pytest.raises(InputError, match="never averaged"):
        add_full_network(both_model, tuned, overwrite=True, average_with=both_model)
    altered = tmp_path / "altered"
    shutil.copytree(both_model, altered)
    with pytest.raises(InputError, match="not fine-tuned from"):  # a copy elsewhere is not the folds' parent
        add_full_network(altered, tuned, overwrite=True)
    (altered / "full.pt").write_bytes((altered / "full.pt").read_bytes() + b"\0")
    with pytest.raises(InputError, match="does not match the SHA-256"):
        add_full_network(altered, tuned, overwrite=True)
    assert _digests(tuned) == after
