"""Package a cross-validation run as a compact model folder that ``orbitseg predict --model`` takes.

``orbitseg export RUN_DIR OUT`` writes, from ``RUN_DIR/fold_k/`` (``checkpoint_best.pt``,
``run.json``, ``postprocess.json``):

* ``fold_k.pt``: the fold's best weights as float16 (a quarter of a training checkpoint:
  no optimizer state), with the preset and preprocessing they need;
* ``postprocess.json``: the folds' post-processing choices pooled over their validation
  cases (never a test fold);
* ``cv_per_case.json`` / ``cv_summary.json``: the exported float16 weights re-scored on each
  fold's own test patients, post-processed with that fold's validation choice, in 3D in
  each scan's geometry (needs the dataset; without it, the run's own CV metrics are copied);
* ``model.json``: how it was made (commands to re-create it, seeds, splits, code commit,
  versions, results), what the shipped model ``orbitseg/pretrained/default`` holds.

The folder appears complete or not at all, and an existing one is replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from orbitseg.constants import CHECKPOINT_BEST, DATASET_JSON, FILE_ENDING, MODEL_JSON, SHORT_NAMES, STRUCTURES
from orbitseg.errors import InputError
from orbitseg.evaluate.quality import TRAINING_ACQUISITION_KEY
from orbitseg.io.atomic import atomic_dir
from orbitseg.preprocess.pipeline import PreprocessConfig
from orbitseg.io.read import file_sha256
from orbitseg.predict.engine import onnx_available, write_engine_files
from orbitseg.runs.checkpoint import export_half
from orbitseg.runs.layout import (CV_PER_CASE_JSON, CV_SUMMARY_JSON, LOG_CSV, POSTPROCESS_JSON, fold_dir_name,
                                  fold_file_name, fold_infos, read_model_json)

__all__ = ["export_model", "describe_export"]



def _trained_epochs(infos: dict[int, dict]) -> int:
    """The most epochs any fold of a run trained."""
    return max(i.get("result", {}).get("epochs", 0) for i in infos.values())


def _train_seconds(fold_dir: Path, info: dict) -> float:
    """A fold's training time summed over its epochs from ``log.csv``, so time spent before a
    resume counts (runs written before run.json did so recorded only the last segment)."""
    try:
        with open(fold_dir / LOG_CSV, newline="", encoding="utf-8") as fh:
            return sum(float(r["seconds"]) for r in csv.DictReader(fh))
    except (OSError, KeyError, ValueError):
        return float(info.get("result", {}).get("train_seconds", 0.0))


def _rescore(folder: Path, runs: dict[int, Path], infos: dict[int, dict], dataset: Path,
             progress: bool) -> tuple[list[dict], list[dict]]:
    """Score the exported float16 folds on their own test cases (each post-processed with its
    fold's validation choice): per-case rows and summary rows."""
    from tqdm.auto import tqdm

    from orbitseg.evaluate.folders import evaluate_folders
    from orbitseg.io.layout import list_cases
    from orbitseg.io.write import write_label
    from orbitseg.predict.postprocess import NO_POSTPROCESSING, read_postprocessing
    from orbitseg.predict.segmenter import Segmenter
    from orbitseg.train.scoring import segment_cases

    labelled = {c.case_id for c in list_cases(dataset) if c.training and c.label is not None and c.label.exists()}
    tests = {k: infos[k]["split"]["test"] for k in sorted(runs)}
    missing = [c for cases in tests.values() for c in cases if c not in labelled]
    if missing:
        raise InputError(dataset, f"lacks the scan or label of test case(s) {', '.join(missing[:10])}; "
                                  "give the dataset the run was trained on (--dataset)")
    fold_of = {}
    with tempfile.TemporaryDirectory(prefix=".rescore_", dir=folder.parent) as tmp:
        pred, truth = Path(tmp) / "pred", Path(tmp) / "truth"
        pred.mkdir(), truth.mkdir()
        bar = tqdm(total=sum(map(len, tests.values())), desc="re-scoring float16 folds", unit="scan",
                   disable=not progress)
        for k, cases in tests.items():
            choice = read_postprocessing(runs[k]) or dict(NO_POSTPROCESSING)
            segmenter = Segmenter.load(folder / fold_file_name(k), precision="float32", postprocess=choice)
            for case, scan, seg, label in segment_cases(dataset, segmenter, cases):
                write_label(seg.labels, pred / f"{case}{FILE_ENDING}", reference=scan)
                os.symlink(label.resolve(), truth / label.name)  # labelsTr/{case}{ending}
                fold_of[case] = k
                bar.update()
        bar.close()
        rows, summary = evaluate_folders(pred, truth, None, fold_of=fold_of)
    # the temporary prediction / symlink paths mean nothing once the folder is gone
    return [{k: v for k, v in r.items() if k not in ("pred", "truth")} for r in rows], summary


def _copied_metrics(run_dir: Path) -> tuple[list[dict], list[dict]] | None:
    """The CV metrics `orbitseg train --fold all` wrote into RUN_DIR/metrics/, if any."""
    from orbitseg.evaluate.folders import METRICS_DIR, PER_CASE_JSON, SUMMARY_JSON

    try:
        rows = json.loads((run_dir / METRICS_DIR / PER_CASE_JSON).read_text(encoding="utf-8"))
        summary = json.loads((run_dir / METRICS_DIR / SUMMARY_JSON).read_text(encoding="utf-8"))["summary"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rows, summary


def _epoch_stages(info: dict, epochs: int) -> list[int]:
    """The ``--epochs`` of the first training call and of each resume that lengthened the run
    (its cosine schedule was recomputed there), e.g. ``[40, 60]``; ``[epochs]`` for one call."""
    stages = [int(info.get("preset", {}).get("training", {}).get("epochs") or epochs)]
    for entry in info.get("resumes") or []:
        e = entry.get("epochs")
        argv = entry.get("argv") or []
        if e is None and "--epochs" in argv[:-1]:  # resumes recorded before run.json kept "epochs"
            e = argv[argv.index("--epochs") + 1]
        if e is not None and int(e) > stages[-1]:
            stages.append(int(e))
    return stages


def _recreate(dataset_info: dict | None, info: dict, epochs: int, *,
              parent: tuple[list[str], str] | None = None) -> list[str]:
    """Commands that re-create the model from nothing (the dataset as DATA).  ``parent``: the
    commands that re-create the folder the run was fine-tuned from fold by fold, and the name
    they give it (:func:`_parent_commands`); they come first and make DATA."""
    cmds = list(parent[0]) if parent else []
    synth = (dataset_info or {}).get("synthetic")
    if synth and not parent:
        n = len({v["patient"] for v in synth.get("cases", {}).values()}) or None
        cmds.append(f"orbitseg synth DATA --seed {synth['seed']}" + (f" --patients {n}" if n else "")
                    + (" --small" if synth.get("small") else ""))
    pp = PreprocessConfig.from_dict(info.get("preprocess", {})).to_dict()
    default = PreprocessConfig().to_dict()
    extra = "".join(f" --{key.replace('_', '-')} {pp[key]:g}" if isinstance(pp[key], float) else
                    f" --{key.replace('_', '-')} {pp[key]}"
                    for key in ("size", "seq_len", "level", "width", "aspect") if pp[key] != default[key])
    preprocess = f"orbitseg preprocess DATA{extra}"
    done = [c for c in cmds if c.startswith("orbitseg preprocess DATA")]
    if not done:
        cmds.append(preprocess)
    elif done[-1].removesuffix(" --overwrite") != preprocess:  # the parent's slices were made otherwise
        cmds.append(preprocess + " --overwrite")
    precision = (info.get("options") or {}).get("precision", "float32")
    for i, e in enumerate(_epoch_stages(info, epochs)):
        cmds.append(f"orbitseg train DATA --fold all --preset {info['preset_name']} --epochs {e} "
                    f"--seed {info['seed']} --out RUN" + (f" --precision {precision}" if precision != "float32" else "")
                    + (" --resume" if i else f" --init-from {parent[1]}" if parent else ""))
    cmds.append("orbitseg export RUN MODEL_DIR")
    return cmds


def _init_parent(infos: dict[int, dict]) -> Path | None:
    """The model or run folder that every fold k of a run started from its fold k
    (``train --init-from FOLDER``), or None."""
    parents = set()
    for k, info in infos.items():
        src = Path(info.get("init_from") or "")
        if src.name == fold_file_name(k):
            parents.add(src.parent)
        elif src.name == CHECKPOINT_BEST and src.parent.name == fold_dir_name(k):
            parents.add(src.parent.parent)
        else:
            return None
    return parents.pop() if len(parents) == 1 else None


def _parent_commands(parent: Path, dataset_info: dict | None) -> tuple[list[str], str]:
    """The commands that re-create ``parent`` (its ``model.json``, or its run folders), with its
    run and model folders renamed RUN0 / MODEL0 (and theirs RUN00 / MODEL00 ...), and the name
    the child run's ``--init-from`` uses."""
    import re

    meta = read_model_json(parent)
    if meta is not None:
        cmds = meta.get("recreate") or []
        name = "MODEL0"
    else:
        _, infos = fold_infos(parent)
        grand = _init_parent(infos)
        cmds = _recreate(dataset_info, infos[min(infos)], _trained_epochs(infos),
                         parent=None if grand is None else _parent_commands(grand, dataset_info))[:-1]
        name = "RUN0"
    if not cmds:
        raise InputError(parent, "records no commands that re-create it (model.json 'recreate')")
    rename = [(r"\bRUN(0*)\b", r"RUN\g<1>0"), (r"\bMODEL(0+)\b", r"MODEL\g<1>0"), (r"\bMODEL_DIR\b", "MODEL0")]
    out = []
    for c in cmds:
        for pat, rep in rename:
            c = re.sub(pat, rep, c)
        out.append(c)
    return out, name


def _parent_summary(parent: Path) -> dict:
    """What ``model.json`` says of the folder a run was fine-tuned from fold by fold."""
    meta = read_model_json(parent) or {}
    return {"folder": str(parent.resolve()), "how": "each fold k started from that folder's fold k",
            "name": meta.get("name"), "cv_dice": (meta.get("cv_metrics") or {}).get("dice")}


def _means(summary: list[dict]) -> dict[str, float]:
    return {r["metric"]: r["mean"] for r in summary
            if r.get("group") == "all" and str(r.get("metric", "")).startswith("dice_")}


def _training_acquisition(dataset: Path, ds_info: dict) -> dict | None:
    """What the model's training scans were like (slice thickness, pixel size, field of view, obliquity, head
    pose, HU inside the labelled eyeballs and muscles), for the quality flags of its predictions."""
    from orbitseg.evaluate.quality import acquisition_of, acquisition_range
    from orbitseg.io.layout import list_cases
    from orbitseg.io.read import read_label, read_scan

    acqs = []
    for c in list_cases(dataset):
        if c.training and c.label is not None and c.label.exists():
            scan = read_scan(c.image)
            acqs.append(acquisition_of(scan, read_label(c.label, reference=scan)))
    return acquisition_range(acqs, f"the {len(acqs)} labelled scans of dataset {ds_info.get('name')}") if acqs else None


def export_model(run_dir: str | Path, out: str | Path, *, name: str | None = None,
                 dataset: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Write the model folder ``out`` from the cross-validation run ``run_dir`` (see the module
    docstring).  ``dataset``: where the run's dataset is now (default: the path its run.json
    records); when it is not there, the run's own CV metrics are copied instead of re-scored.
    Returns ``out``."""
    from orbitseg.evaluate.folders import to_json
    from orbitseg.io.layout import read_dataset_json
    from orbitseg.predict.postprocess import pool_choices, read_postprocessing, write_postprocessing

    run_dir, out = Path(run_dir), Path(out)
    runs, infos = fold_infos(run_dir)
    presets = {json.dumps(i.get("preset", {}).get("model"), sort_keys=True) for i in infos.values()}
    if len(presets) > 1:
        raise InputError(run_dir, "its folds were trained with different networks; export one run at a time")
    if out.exists() and not overwrite:
        raise InputError(out, "already exists; choose a new folder or pass --overwrite to replace that model")
    first = infos[min(infos)]
    ds = Path(dataset) if dataset is not None else Path(first.get("dataset", ""))
    ds_info = None
    if (ds / DATASET_JSON).is_file():
        ds_info = read_dataset_json(ds)
    elif dataset is not None:
        raise InputError(ds, "is not a dataset folder (no dataset.json)")

    parent = _init_parent(infos)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        engine_files = {}
        for k, d in runs.items():
            export_half(d / CHECKPOINT_BEST, tmp / fold_file_name(k))
            if onnx_available():  # the ONNX engine's graphs beside the weights they were made from
                engine_files.update({p.name: file_sha256(p) for p in
                                     write_engine_files(tmp / fold_file_name(k)).values()})
        choices = [read_postprocessing(d) for d in runs.values()]
        pooled = pool_choices(choices) if all(c is not None for c in choices) else None
        if pooled is not None:
            write_postprocessing(tmp, pooled)
        if ds_info is not None:
            rows, summary = _rescore(tmp, runs, infos, ds, progress)
            how = ("the exported float16 weights re-scored on CPU: each fold's test patients, post-processed with "
                   "the rules chosen on that fold's own validation cases; 3D, in each scan's geometry")
        else:
            copied = _copied_metrics(run_dir)
            rows, summary = copied if copied is not None else (None, None)
            how = "copied from the run's metrics/ (float32 checkpoints; the dataset was not found to re-score)"
        if rows is not None:
            (tmp / CV_PER_CASE_JSON).write_text(to_json(rows), encoding="utf-8")
            (tmp / CV_SUMMARY_JSON).write_text(to_json(summary), encoding="utf-8")
        train_acq = None if ds_info is None else _training_acquisition(ds, ds_info)
        epochs = _trained_epochs(infos)
        dice = {} if summary is None else _means(summary)
        meta = {
            "name": name or out.name,
            "description": f"SEQ-UNET '{first['preset_name']}' preset: the {len(runs)} fold model(s) of a "
                           "cross-validation by patient; `orbitseg predict` averages their probabilities",
            "recreate": _recreate(ds_info, first, epochs, parent=None if parent is None
                                  else _parent_commands(parent, ds_info)),
            "init_from": None if parent is None else _parent_summary(parent),
            "source_run": str(run_dir.resolve()),
            "trained_on": sorted({f"{i['options'].get('device', '?')}, {i['result'].get('epochs')} epochs, "
                                  f"{_train_seconds(runs[k], i) / 60:.0f} min" for k, i in infos.items()
                                  if "options" in i and "result" in i}),
            "code_commit": sorted({str(i.get("git_commit")) for i in infos.values()}),
            "dataset": None if ds_info is None else {
                "name": ds_info.get("name"), "cases": ds_info.get("numTraining"),
                "synthetic": None if "synthetic" not in ds_info else {
                    k: ds_info["synthetic"][k] for k in ("seed", "generator_version", "small") if k in ds_info["synthetic"]}},
            TRAINING_ACQUISITION_KEY: train_acq,
            "weights": "float16 (checkpoint_best.pt of each fold: chosen on its validation patients)",
            "weights_sha256": {fold_file_name(k): file_sha256(tmp / fold_file_name(k)) for k in runs},
            "engine": None if not engine_files else {
                "onnx": engine_files, "how": "ONNX graphs of each fold (float32), each recording the SHA-256 of its "
                                             "fold_k.pt; `orbitseg predict --engine onnx|openvino|auto` runs them"},
            "postprocess": None if pooled is None else {
                "rules": pooled["rules"], "file": POSTPROCESS_JSON,
                "how": f"chosen per structure on the folds' validation cases pooled ({len(pooled.get('cases', []))}), "
                       "never a test fold; `orbitseg predict --no-postprocess` turns it off"},
            "cv_metrics": None if rows is None else {
                "files": [CV_SUMMARY_JSON, CV_PER_CASE_JSON], "how": how,
                "dice": {SHORT_NAMES[s]: dice.get(f"dice_{SHORT_NAMES[s]}") for s in STRUCTURES}
                | {"all": dice.get("dice_all")}},
            "folds": {str(k): {key: i.get(key) for key in ("split", "result", "seed", "split_seed", "command",
                                                          "resumes", "versions")} for k, i in infos.items()},
        }
        (tmp / MODEL_JSON).write_text(to_json(meta), encoding="utf-8")
    return out


def describe_export(out: str | Path) -> str:
    """A few lines on an exported model folder: folds, size, CV Dice."""
    out = Path(out)
    meta = json.loads((out / MODEL_JSON).read_text(encoding="utf-8"))
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6
    lines = [f"model {meta['name']}: {len(meta['folds'])} fold(s), {size:.1f} MB -> {out}"]
    cv = meta.get("cv_metrics")
    if cv:
        lines.append("cross-validation Dice: " + ", ".join(
            f"{k} {v:.3f}" for k, v in cv["dice"].items() if isinstance(v, float) and np.isfinite(v)))
    if meta.get("postprocess"):
        lines.append("post-processing: " + ", ".join(f"{k} {v}" for k, v in meta["postprocess"]["rules"].items()))
    return "\n".join(lines)
