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

From a run's ``full/`` (``orbitseg train --fold full``: one network on every labelled case,
nnU-Net's ``-f all``) it writes instead ``full.pt`` and its ONNX graphs, ``model.json`` and, when the
run also holds cross-validation folds of the same recipe (preset, preprocessing, dataset), their pooled
``postprocess.json``.  That network held no case out, so it has **no metric of its own**; ``model.json``
records the folds' cross-validation result as the estimate for the recipe (``cv_estimate``), never as
``cv_metrics``.  A run holding only ``full/`` exports it; a run holding both exports its folds unless
``full=True`` (``orbitseg export RUN MODEL --full``).  :func:`add_full_network` (``orbitseg export RUN MODEL
--add-full``) puts a full network beside the folds of an existing model folder when it was trained on exactly
their cases with their network and preprocessing (as nnU-Net keeps ``fold_all`` beside its folds): ``--folds
full`` then picks it, and it is never averaged with the folds.

The folder appears complete or not at all, and an existing one is replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from orbitseg.constants import (AVERAGE_WEIGHT, CHECKPOINT_BEST, DATASET_JSON, FILE_ENDING, FULL_FOLD, MODEL_JSON,
                                SHORT_NAMES, STRUCTURES)
from orbitseg.errors import InputError
from orbitseg.evaluate.quality import TRAINING_ACQUISITION_KEY
from orbitseg.io.atomic import atomic_dir
from orbitseg.preprocess.pipeline import PreprocessConfig
from orbitseg.io.read import file_sha256
from orbitseg.predict.engine import onnx_available, write_engine_files
from orbitseg.runs.checkpoint import export_half, recipe_difference
from orbitseg.runs.layout import (CV_PER_CASE_JSON, CV_SUMMARY_JSON, LOG_CSV, POSTPROCESS_JSON, fold_file_name,
                                  fold_infos, fold_init_source, fold_runs, full_run, network_name, read_model_json,
                                  read_run_json)

__all__ = ["export_model", "add_full_network", "describe_export"]



def _trained_epochs(infos: dict) -> int:
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
             progress: bool, choices: dict[int, dict] | None = None) -> tuple[list[dict], list[dict]]:
    """Score the exported float16 folds on their own test cases (each post-processed with its
    fold's validation choice: ``choices[k]``, else the run's): per-case rows and summary rows."""
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
            choice = (read_postprocessing(runs[k]) if choices is None else choices[k]) or dict(NO_POSTPROCESSING)
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
              parent: tuple[list[str], str | None] | None = None, fold: str = "all", out: str = "RUN",
              export: str = "orbitseg export RUN MODEL_DIR") -> list[str]:
    """Commands that re-create the model from nothing (the dataset as DATA).  ``parent``: the
    commands that re-create the folder the run was fine-tuned from fold by fold, and the name
    they give it (:func:`_parent_commands`); they come first and make DATA (a name None: commands
    that come first without being fine-tuned from).  ``fold``, ``out``: ``train``'s ``--fold`` and
    ``--out``; ``export``: the last command."""
    cmds = list(parent[0]) if parent else []
    synth = (dataset_info or {}).get("synthetic")
    if synth and not parent:
        cmds.append(_synth_command("DATA", synth))
    imported = False
    for c in _import_commands(dataset_info):  # cases added to the dataset (`import --add`) after the parent's
        if c not in cmds:
            cmds.append(c)
            imported = True
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
    elif imported:  # the added cases' slices (the others are kept: same settings)
        cmds.append(preprocess)
    options = info.get("options") or {}
    precision = options.get("precision", "float32")
    thickness = " --sample-by-thickness" if options.get("sampler_thickness") else ""
    slabs = float((options.get("thick_slabs") or {}).get("p", 0.0))  # SlabParams' dict; absent in older runs
    thickness += f" --thick-slabs {slabs:g}" if slabs else ""
    # a split grown with the dataset (train --extend-splits): every earlier patient kept its fold and role
    extend = " --extend-splits" if "--extend-splits" in (info.get("command") or []) else ""
    # the folds' own seed where the run trained them with another (train --split-seed; absent in older runs)
    split_seed = (f" --split-seed {info['split_seed']}" if fold != FULL_FOLD and info.get("split_seed") is not None
                  and info["split_seed"] != info["seed"] else "")
    for i, e in enumerate(_epoch_stages(info, epochs)):
        cmds.append(f"orbitseg train DATA --fold {fold}{'' if i else extend} --preset {info['preset_name']} "
                    f"--epochs {e} --seed {info['seed']}{split_seed} --out {out}"
                    + (f" --precision {precision}" if precision != "float32" else "") + thickness
                    + (" --resume" if i else f" --init-from {parent[1]}" if parent and parent[1] else ""))
    cmds.append(export)
    return cmds


def _synth_command(target: str, synth: dict) -> str:
    """``orbitseg synth`` re-making the cohort a ``dataset.json["synthetic"]`` record describes."""
    n = synth.get("patients") or len({v["patient"] for v in (synth.get("cases") or {}).values()}) or None
    variety = synth.get("variety")
    return (f"orbitseg synth {target} --seed {synth['seed']}" + (f" --patients {n}" if n else "")
            + (f" --variety {variety}" if variety and variety != "default" else "")
            # the clinical generator's version, since a newer one draws other scans from the same seed
            + (f" --generator-version {synth['generator_version']}"
               if variety and variety != "default" and synth.get("generator_version") else "")
            + (" --small" if synth.get("small") else ""))


def _import_commands(dataset_info: dict | None) -> list[str]:
    """The ``orbitseg import --add`` commands behind a dataset's ``imports`` record, in order: a source made by
    ``orbitseg synth`` is re-made first (as IMPORT1, IMPORT2 ...), any other by the folder it came from."""
    cmds = []
    for n, entry in enumerate((dataset_info or {}).get("imports") or [], start=1):
        src = entry.get("from", f"IMPORT{n}")
        if isinstance(entry.get("synthetic"), dict) and "seed" in entry["synthetic"]:
            src = f"IMPORT{n}"
            cmds.append(_synth_command(src, entry["synthetic"]))
        prefix = f" --prefix {entry['prefix']}" if entry.get("prefix") else ""
        cmds.append(f"orbitseg import {src} DATA --add{prefix}")
    return cmds


def _init_source(info: dict) -> tuple[Path, int | str] | None:
    """(the folder, which network of it) a network's ``--init-from`` weights were: a model folder's ``fold_k.pt`` /
    ``full.pt``, or a run folder's ``fold_k`` / ``full`` best checkpoint; None for anything else."""
    src = Path(info.get("init_from") or "")
    if src.suffix == ".pt" and network_name(src) is not None:
        return src.parent, network_name(src)
    if src.name == CHECKPOINT_BEST and network_name(src.parent) is not None:
        return src.parent.parent, network_name(src.parent)
    return None


def _started_from_full(info: dict) -> bool:
    """Whether a network's ``--init-from`` weights were a folder's full network (``full.pt`` or a run's ``full/``)."""
    found = _init_source(info)
    return found is not None and found[1] == FULL_FOLD


def _init_parent(infos: dict) -> Path | None:
    """The model or run folder that every network of a run started from as ``train --init-from FOLDER``
    picks (:func:`~orbitseg.runs.layout.fold_init_source`: fold k from its fold k, or from its one full
    network; the full model from its full network, else its fold 0), or None."""
    parents = set()
    for k, info in infos.items():
        found = _init_source(info)
        if found is None:
            return None
        parent, which = found
        src = Path(info["init_from"])
        # a full network from fold 0: what --init-from FOLDER took before the folder held a full network of its
        # own (e.g. the one added from this very run)
        full_from_fold0 = k == FULL_FOLD and which == 0
        try:  # the folder is here: exactly what --init-from FOLDER takes
            if fold_init_source(parent, k).resolve() != src.resolve() and not full_from_fold0:
                return None
        except InputError:  # gone or moved: by the names alone
            if which not in (k, FULL_FOLD) and not full_from_fold0:
                return None
        parents.add(parent)
    return parents.pop() if len(parents) == 1 else None


def _parent_commands(parent: Path, dataset_info: dict | None, *, from_full: bool = False) -> tuple[list[str], str]:
    """The commands that re-create ``parent`` (its ``model.json``, or its run folders), with its
    run and model folders renamed RUN0 / MODEL0 (and theirs RUN00 / MODEL00 ...), and the name
    the child run's ``--init-from`` uses.  ``from_full``: the child started from the parent's full network, so
    the commands are those that re-create it too (``model.json["full"]["recreate"]``) where recorded."""
    import re

    meta = read_model_json(parent)
    if meta is not None:
        cmds = meta.get("recreate") or []
        if from_full and isinstance(meta.get(FULL_FOLD), dict) and meta[FULL_FOLD].get("recreate"):
            cmds = meta[FULL_FOLD]["recreate"]
        name = "MODEL0"
    else:
        full = full_run(parent)
        if full is not None and not _holds_folds(parent):  # a run holding only full/
            infos, fold, run_out = {FULL_FOLD: read_run_json(full)}, FULL_FOLD, "RUN/full"
        else:
            infos, fold, run_out = fold_infos(parent)[1], "all", "RUN"
        grand = _init_parent(infos)
        first = infos[FULL_FOLD] if fold == FULL_FOLD else infos[min(infos)]
        cmds = _recreate(dataset_info, first, _trained_epochs(infos), fold=fold, out=run_out,
                         parent=None if grand is None else _parent_commands(
                             grand, dataset_info, from_full=fold == FULL_FOLD and _started_from_full(first)))[:-1]
        name = "RUN0"
    if not cmds:
        raise InputError(parent, "records no commands that re-create it (model.json 'recreate')")
    rename = [(r"\bRUN(0*)\b", r"RUN\g<1>0"), (r"\bRUN(0*)_FULL\b", r"RUN\g<1>0_FULL"),
              (r"\bMODEL(0+)\b", r"MODEL\g<1>0"), (r"\bMODEL_DIR\b", "MODEL0")]
    out = []
    for c in cmds:
        for pat, rep in rename:
            c = re.sub(pat, rep, c)
        out.append(c)
    return out, name


def _parent_summary(parent: Path, infos: dict) -> dict:
    """What ``model.json`` says of the folder a run was fine-tuned from fold by fold."""
    meta = read_model_json(parent) or {}
    sources = {k: Path(i["init_from"]) for k, i in infos.items()}
    if all(network_name(s if s.name != CHECKPOINT_BEST else s.parent) == k for k, s in sources.items()):
        how = "each fold k started from that folder's fold k" if FULL_FOLD not in infos else \
            "the full network started from that folder's full network"
    else:
        how = "; ".join(f"{'the full network' if k == FULL_FOLD else f'fold {k}'} started from that folder's "
                        f"{s.relative_to(parent)}" for k, s in sources.items())
    out = {"folder": str(parent.resolve()), "how": how, "name": meta.get("name"),
           "cv_dice": (meta.get("cv_metrics") or {}).get("dice")}
    if meta.get("cv_estimate"):  # a full model: its recipe's estimate, not its own
        out["cv_estimate_dice"] = meta["cv_estimate"].get("dice")
    return out


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


def _holds_folds(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a trained cross-validation fold."""
    try:
        fold_runs(run_dir)  # (a fold whose run.json is broken still counts, and is named where it is read)
        return True
    except InputError:
        return False


def _run_choices(runs: dict[int, Path]) -> list[dict | None]:
    """Each fold's post-processing choice as its run wrote it (``postprocess.json``), or None."""
    from orbitseg.predict.postprocess import read_postprocessing

    return [read_postprocessing(d) for d in runs.values()]


def _pooled_postprocessing(choices: list[dict | None], tmp: Path) -> dict | None:
    """The folds' post-processing ``choices`` pooled over their validation cases, written into ``tmp``; None (and
    nothing written) unless every fold chose one."""
    from orbitseg.predict.postprocess import pool_choices, write_postprocessing

    if not all(c is not None for c in choices):
        return None
    pooled = pool_choices(choices)
    write_postprocessing(tmp, pooled)
    return pooled


def _dataset(first: dict, dataset: str | Path | None) -> tuple[Path, dict | None]:
    """Where the run's dataset is (``dataset`` or the path run.json records) and its ``dataset.json``
    (None when it is not there; refused when ``dataset`` was given and is no dataset)."""
    from orbitseg.io.layout import read_dataset_json

    ds = Path(dataset) if dataset is not None else Path(first.get("dataset", ""))
    if (ds / DATASET_JSON).is_file():
        return ds, read_dataset_json(ds)
    if dataset is not None:
        raise InputError(ds, "is not a dataset folder (no dataset.json)")
    return ds, None


def _cv_metrics(folder: Path, run_dir: Path, runs: dict[int, Path], infos: dict[int, dict], ds: Path,
                ds_info: dict | None, progress: bool, choices: dict[int, dict] | None = None
                ) -> tuple[list[dict] | None, list[dict] | None, str]:
    """The cross-validation metrics of the folds whose float16 weights are in ``folder`` (``fold_k.pt``):
    re-scored on each fold's test patients where the dataset is here, else copied from ``RUN/metrics/``
    (None when neither); and how they were made."""
    if ds_info is not None:
        rows, summary = _rescore(folder, runs, infos, ds, progress, choices)
        return rows, summary, ("the exported float16 weights re-scored on CPU: each fold's test patients, "
                               "post-processed with the rules chosen on that fold's own validation cases; 3D, in "
                               "each scan's geometry")
    copied = _copied_metrics(run_dir)
    rows, summary = copied if copied is not None else (None, None)
    return rows, summary, "copied from the run's metrics/ (float32 checkpoints; the dataset was not found to re-score)"


def _dice_of(summary: list[dict]) -> dict:
    dice = _means(summary)
    return {SHORT_NAMES[s]: dice.get(f"dice_{SHORT_NAMES[s]}") for s in STRUCTURES} | {"all": dice.get("dice_all")}


def _provenance(runs: dict, infos: dict) -> dict:
    """Where and with which code the networks were trained (``model.json``'s ``trained_on``, ``code_commit``)."""
    return {
        "trained_on": sorted({f"{i['options'].get('device', '?')}, {i['result'].get('epochs')} epochs, "
                              f"{_train_seconds(runs[k], i) / 60:.0f} min" for k, i in infos.items()
                              if "options" in i and "result" in i}),
        "code_commit": sorted({str(i.get("git_commit")) for i in infos.values()}),
    }


def _common_meta(runs: dict, infos: dict, ds: Path, ds_info: dict | None) -> dict:
    """What ``model.json`` says alike of folds and of a full model: training time and machine, code, dataset,
    the acquisition of its training scans."""
    return {
        **_provenance(runs, infos),
        "dataset": None if ds_info is None else {
            "name": ds_info.get("name"), "cases": ds_info.get("numTraining"),
            "synthetic": None if "synthetic" not in ds_info else {
                k: ds_info["synthetic"][k] for k in ("seed", "generator_version", "variety", "small")
                if k in ds_info["synthetic"]},
            **({"imports": ds_info["imports"]} if ds_info.get("imports") else {})},
        TRAINING_ACQUISITION_KEY: None if ds_info is None else _training_acquisition(ds, ds_info),
    }


def _records(infos: dict) -> dict:
    """Each network's split, result, seeds, command, resumes and versions from its ``run.json``."""
    return {str(k): {key: i.get(key) for key in ("split", "result", "seed", "split_seed", "command", "resumes",
                                                 "versions")} for k, i in infos.items()}


def _engine(tmp: Path, weights: list[str]) -> dict[str, str]:
    """The ONNX engine's graphs beside the weights they were made from: file name -> SHA-256."""
    files = {}
    if onnx_available():
        for w in weights:
            files.update({p.name: file_sha256(p) for p in write_engine_files(tmp / w).values()})
    return files


def _average_partner(partner: str | Path, infos: dict, run_dir: Path) -> tuple[Path, dict]:
    """The model folder whose networks ``--average-with`` averages in, checked against the run's networks
    ``infos`` (fold k or ``full`` -> run.json): each started from that folder's own network of the same name
    (``train --init-from FOLDER``), so their average is a network (weights from one basin); and, for folds, the
    folder's fold k never trained on or chose by a case the run's fold k tests or validates on, so the averaged
    fold's cross-validation and post-processing choice stay on patients it never saw.  Returns (the folder, its
    model.json).

    Raises
    ------
    InputError
        ``partner`` is no model folder, lacks a network, a network did not start from it, or its fold k saw
        a test or validation case of the run's fold k (or it records no splits to show it did not).
    """
    from orbitseg.runs.layout import resolve_model

    folder = resolve_model(partner)
    meta = read_model_json(folder) if folder.is_dir() else None
    if meta is None:
        raise InputError(folder, "is no model folder (model.json and fold_k.pt, as `orbitseg export` writes) to "
                                 "average with")
    for k, info in infos.items():
        own = folder / fold_file_name(k)
        what = "full network" if k == FULL_FOLD else f"fold {k}"
        if not own.is_file():
            raise InputError(folder, f"holds no {what} ({own.name}) to average the run's {what} with")
        src = Path(info.get("init_from") or "")
        same = src.is_file() and (src.resolve() == own.resolve() or file_sha256(src) == file_sha256(own))
        if not same:
            raise InputError(run_dir, f"its {what} did not start from {own} (it started from "
                                      f"{info.get('init_from') or 'scratch'}); weights are averaged only with the "
                                      "network they were fine-tuned from (`train --init-from` that folder)")
        if k == FULL_FOLD:
            continue
        split = ((meta.get("folds") or {}).get(str(k)) or {}).get("split")
        if not split:
            raise InputError(folder, f"records no split of fold {k} (model.json 'folds'), so it cannot be shown "
                                     f"that it never saw the run's fold {k} test and validation patients")
        seen = set(split.get("train", [])) | set(split.get("val", []))
        mine = info["split"]
        leak = sorted((set(mine["test"]) & seen) | (set(mine["val"]) & set(split.get("train", []))))
        if leak:
            raise InputError(folder, f"its fold {k} trained on or chose by {len(leak)} case(s) the run's fold {k} "
                                     f"tests or validates on ({', '.join(leak[:5])}); averaging would put them into "
                                     "the network scored on them")
    return folder, meta


def _averaging(partner: tuple[Path, dict] | None, average: tuple[str | Path, float] | None,
               network: int | str) -> dict:
    """:func:`~orbitseg.runs.checkpoint.export_half`'s averaging arguments for ``network`` (fold k or full): the
    partner folder's network of that name and its share, or none."""
    if partner is None:
        return {}
    return {"average_with": partner[0] / fold_file_name(network), "average_weight": average[1]}


def _check_weight(weight: float) -> float:
    """``--average-weight`` as a float strictly between 0 and 1 (0 or 1 would be no average)."""
    if not 0.0 < float(weight) < 1.0:
        raise InputError(None, f"--average-weight must lie between 0 and 1 (the earlier model's share), got {weight}")
    return float(weight)


def _average_record(folder: Path, meta: dict, weight: float, networks: str) -> dict:
    """``model.json["averaged_with"]``."""
    return {"folder": str(folder.resolve()), "name": meta.get("name"), "weight": weight,
            "how": f"{networks}: (1 - {weight:g}) x the run's network + {weight:g} x that folder's network of the "
                   "same name, which the run's network was fine-tuned from (weight-space averaging, WiSE-FT: "
                   "Wortsman et al. 2022); float16"}


def _re_choose(tmp: Path, runs: dict[int, Path], infos: dict[int, dict], ds: Path,
               progress: bool) -> dict[int, dict | None]:
    """Each averaged fold's post-processing, chosen again on that fold's validation cases with its averaged
    weights (``tmp/fold_k.pt``); None for a fold none of whose validation cases could be read."""
    from orbitseg.predict.segmenter import Segmenter
    from orbitseg.train.scoring import choose_postprocessing_with

    log = print if progress else (lambda _msg: None)
    return {k: choose_postprocessing_with(ds, Segmenter.load(tmp / fold_file_name(k), precision="float32",
                                                             postprocess=False),
                                          list(infos[k]["split"]["val"]), log) for k in runs}


def export_model(run_dir: str | Path, out: str | Path, *, name: str | None = None,
                 dataset: str | Path | None = None, overwrite: bool = False, progress: bool = True,
                 full: bool | None = None, average_with: str | Path | None = None,
                 average_weight: float = AVERAGE_WEIGHT) -> Path:
    """Write the model folder ``out`` from the cross-validation run ``run_dir`` (see the module
    docstring).  ``dataset``: where the run's dataset is now (default: the path its run.json
    records); when it is not there, the run's own CV metrics are copied instead of re-scored.
    ``full``: export the run's ``full`` model (True), its folds (False), or (None) the folds where there
    are any, else the full model.  ``average_with``: a model folder the run's networks were fine-tuned from
    (``train --init-from``); each exported network is then ``(1 - average_weight)`` x the run's +
    ``average_weight`` x that folder's network of the same name (weight-space averaging, WiSE-FT), and the folds'
    post-processing is chosen again on their validation cases with the averaged weights (the dataset is needed;
    see :func:`_average_partner` for what is checked).  Returns ``out``.

    Raises
    ------
    InputError
        ``run_dir`` holds no trained fold (nor full model), not what ``full`` asks for, folds of different
        networks; ``out`` exists without ``overwrite``; ``dataset`` is no dataset; ``average_with`` cannot be
        averaged with (see :func:`_average_partner`), or the dataset is not there to re-choose post-processing.
    """
    run_dir, out = Path(run_dir), Path(out)
    average = None if average_with is None else (average_with, _check_weight(average_weight))
    if not run_dir.is_dir():
        raise InputError(run_dir, "run folder does not exist")
    full_dir = full_run(run_dir)
    if full is None:
        full = full_dir is not None and not _holds_folds(run_dir)
    if full:
        if full_dir is None:
            raise InputError(run_dir, f"holds no {FULL_FOLD} model ({FULL_FOLD}/{CHECKPOINT_BEST} with run.json); "
                                      f"train one with `orbitseg train DATA --fold {FULL_FOLD}`")
        return _export_full(run_dir, full_dir, out, name=name, dataset=dataset, overwrite=overwrite,
                            progress=progress, average=average)
    return _export_folds(run_dir, out, name=name, dataset=dataset, overwrite=overwrite, progress=progress,
                         average=average)


def _export_folds(run_dir: Path, out: Path, *, name: str | None, dataset: str | Path | None, overwrite: bool,
                  progress: bool, average: tuple[str | Path, float] | None = None) -> Path:
    """:func:`export_model` of a run's cross-validation folds (``average``: (folder, its share) to average with)."""
    from orbitseg.evaluate.folders import to_json
    runs, infos = fold_infos(run_dir)
    presets = {json.dumps(i.get("preset", {}).get("model"), sort_keys=True) for i in infos.values()}
    if len(presets) > 1:
        raise InputError(run_dir, "its folds were trained with different networks; export one run at a time")
    if out.exists() and not overwrite:
        raise InputError(out, "already exists; choose a new folder or pass --overwrite to replace that model")
    first = infos[min(infos)]
    ds, ds_info = _dataset(first, dataset)
    partner = None
    if average is not None:
        partner = _average_partner(average[0], infos, run_dir)
        if ds_info is None:
            raise InputError(ds, "is not the run's dataset (no dataset.json): averaged folds choose their "
                                 "post-processing again on their validation cases, so the dataset is needed "
                                 "(--dataset)")

    parent = _init_parent(infos)
    parent_cmds = None if parent is None else _parent_commands(parent, ds_info)
    export_cmd = "orbitseg export RUN MODEL_DIR"
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for k, d in runs.items():
            export_half(d / CHECKPOINT_BEST, tmp / fold_file_name(k), **_averaging(partner, average, k))
        engine_files = _engine(tmp, [fold_file_name(k) for k in runs])
        choices = None if partner is None else _re_choose(tmp, runs, infos, ds, progress)
        pooled = _pooled_postprocessing(_run_choices(runs) if choices is None else list(choices.values()), tmp)
        if partner is not None:
            # the folder the folds started from is the one they are averaged with (checked): its re-made name
            partner_name = parent_cmds[1] if parent_cmds else "MODEL0"
            export_cmd += f" --average-with {partner_name} --average-weight {average[1]:g}"
        rows, summary, how = _cv_metrics(tmp, run_dir, runs, infos, ds, ds_info, progress, choices)
        if rows is not None:
            (tmp / CV_PER_CASE_JSON).write_text(to_json(rows), encoding="utf-8")
            (tmp / CV_SUMMARY_JSON).write_text(to_json(summary), encoding="utf-8")
        epochs = _trained_epochs(infos)
        common = _common_meta(runs, infos, ds, ds_info)
        meta = {
            "name": name or out.name,
            "description": f"SEQ-UNET '{first['preset_name']}' preset: the {len(runs)} fold model(s) of a "
                           "cross-validation by patient; `orbitseg predict` averages their probabilities",
            "recreate": _recreate(ds_info, first, epochs, parent=parent_cmds, export=export_cmd),
            "init_from": None if parent is None else _parent_summary(parent, infos),
            **({} if partner is None else {"averaged_with": _average_record(
                partner[0], partner[1], average[1], "each fold k's weights")}),
            "source_run": str(run_dir.resolve()),
            **common,
            "weights": "float16 (checkpoint_best.pt of each fold: chosen on its validation patients"
                       + ("" if partner is None else "; averaged with the folder in averaged_with") + ")",
            "weights_sha256": {fold_file_name(k): file_sha256(tmp / fold_file_name(k)) for k in runs},
            "engine": None if not engine_files else {
                "onnx": engine_files, "how": "ONNX graphs of each fold (float32), each recording the SHA-256 of its "
                                             "fold_k.pt; `orbitseg predict --engine onnx|openvino|auto` runs them"},
            "postprocess": None if pooled is None else {
                "rules": pooled["rules"], "file": POSTPROCESS_JSON,
                "how": f"chosen per structure on the folds' validation cases pooled ({len(pooled.get('cases', []))}), "
                       + ("" if partner is None else "with the averaged weights, ")
                       + "never a test fold; `orbitseg predict --no-postprocess` turns it off"},
            "cv_metrics": None if rows is None else {
                "files": [CV_SUMMARY_JSON, CV_PER_CASE_JSON], "how": how, "dice": _dice_of(summary)},
            "folds": _records(infos),
        }
        (tmp / MODEL_JSON).write_text(to_json(meta), encoding="utf-8")
    return out


def _matching_folds(cv_dir: Path, info: dict) -> tuple[dict[int, Path], dict[int, dict], str | None]:
    """The cross-validation folds in ``cv_dir`` trained with the full model's recipe (network, preprocessing,
    dataset), and None; or no folds and why none is used."""
    if not _holds_folds(cv_dir):
        return {}, {}, f"the run holds no cross-validation fold beside {FULL_FOLD}/"
    runs, infos = fold_infos(cv_dir)
    for key in ("preset", "preprocess", "dataset"):
        mine = json.dumps(info.get(key), sort_keys=True)
        other = [k for k, i in infos.items() if json.dumps(i.get(key), sort_keys=True) != mine]
        if other:
            return {}, {}, (f"the run's fold(s) {other} were trained with another {key} than the {FULL_FOLD} model, "
                            "so their result is no estimate for it")
    return runs, infos, None


def _export_full(run_dir: Path, full_dir: Path, out: Path, *, name: str | None, dataset: str | Path | None,
                 overwrite: bool, progress: bool, average: tuple[str | Path, float] | None = None) -> Path:
    """:func:`export_model` of a run's ``full`` model (see the module docstring; ``average``: (folder, its share)
    to average the network with, refused where the run's folds would give the estimate: they are not averaged)."""
    import shutil

    from orbitseg.evaluate.folders import to_json

    if out.exists() and not overwrite:
        raise InputError(out, "already exists; choose a new folder or pass --overwrite to replace that model")
    info = read_run_json(full_dir)
    ds, ds_info = _dataset(info, dataset)
    cv_dir = run_dir  # full_dir is run_dir/full or run_dir itself
    weights = fold_file_name(FULL_FOLD)
    partner = None if average is None else _average_partner(average[0], {FULL_FOLD: info}, full_dir)
    if partner is None:
        cv_runs, cv_infos, no_cv = _matching_folds(cv_dir, info)
    else:  # the run's folds are no estimate for an averaged network; export the folds averaged, then --add-full
        cv_runs, cv_infos, no_cv = {}, {}, (f"an averaged {FULL_FOLD} network has no estimate from unaveraged folds; "
                                            "export the folds with --average-with, then this network with --add-full")
    cases, patients = len(info["split"]["train"]), len(info["split"].get("train_patients") or [])
    with atomic_dir(out, overwrite=overwrite) as tmp:
        export_half(full_dir / CHECKPOINT_BEST, tmp / weights, **_averaging(partner, average, FULL_FOLD))
        engine_files = _engine(tmp, [weights])
        pooled, estimate = None, None
        if cv_runs:
            pooled = _pooled_postprocessing(_run_choices(cv_runs), tmp)
            scratch = tmp / ".cv_folds"  # the folds' float16 weights, re-scored as a fold export does, then gone
            scratch.mkdir()
            for k, d in cv_runs.items():
                export_half(d / CHECKPOINT_BEST, scratch / fold_file_name(k))
            rows, summary, how = _cv_metrics(scratch, cv_dir, cv_runs, cv_infos, ds, ds_info, progress)
            shutil.rmtree(scratch)
            if summary is not None:
                estimate = {"dice": _dice_of(summary), "cases": len(rows),
                            "how": f"the estimate for this recipe, from the {len(cv_runs)} cross-validation folds of "
                                   f"the run (each scored on test patients it never saw), not this network: "
                                   + how.replace("the exported float16 weights", "the folds' weights as float16"),
                            "source_folds": {str(k): str(d.resolve()) for k, d in cv_runs.items()},
                            "folds": _records(cv_infos)}
            else:
                no_cv = "the run's cross-validation folds were not scored (no dataset to re-score, no metrics/)"
        parent = _init_parent({FULL_FOLD: info})
        own_parent = None if parent is None else _parent_commands(parent, ds_info, from_full=_started_from_full(info))
        cv_parent = _init_parent(cv_infos) if estimate is not None else None
        if estimate is not None and (parent is None or parent == cv_parent):
            # the folds that give the estimate are re-created first, and export --full picks the full model
            cv_cmds = _recreate(ds_info, cv_infos[min(cv_infos)], _trained_epochs(cv_infos),
                                parent=None if cv_parent is None else _parent_commands(cv_parent, ds_info))[:-1]
            recreate = _recreate(ds_info, info, _trained_epochs({FULL_FOLD: info}),
                                 parent=(cv_cmds, None if own_parent is None else own_parent[1]),
                                 fold=FULL_FOLD, out="RUN/full", export="orbitseg export RUN MODEL_DIR --full")
        else:  # the network alone (the estimate's folds record their own commands)
            recreate = _recreate(ds_info, info, _trained_epochs({FULL_FOLD: info}), parent=own_parent,
                                 fold=FULL_FOLD, out="RUN/full", export="orbitseg export RUN MODEL_DIR" + (
                                     "" if partner is None else f" --full --average-with "
                                     f"{own_parent[1] if own_parent else 'MODEL0'} --average-weight {average[1]:g}"))
        meta = {
            "name": name or out.name,
            "description": f"SEQ-UNET '{info['preset_name']}' preset: 1 network trained on all {cases} labelled "
                           f"cases ({patients} patients) of its dataset (`orbitseg train --fold {FULL_FOLD}`, "
                           "nnU-Net's -f all); no case was held out, so it has no metric of its own",
            "networks": FULL_FOLD,
            "recreate": recreate,
            "init_from": None if parent is None else _parent_summary(parent, {FULL_FOLD: info}),
            **({} if partner is None else {"averaged_with": _average_record(
                partner[0], partner[1], average[1], "the network's weights")}),
            "source_run": str(full_dir.resolve()),
            **_common_meta({FULL_FOLD: full_dir}, {FULL_FOLD: info}, ds, ds_info),
            "weights": f"float16 ({CHECKPOINT_BEST} of the {FULL_FOLD} model: its last epoch, since no validation "
                       "case could choose one" + ("" if partner is None else "; averaged with the folder in "
                                                                           "averaged_with") + ")",
            "weights_sha256": {weights: file_sha256(tmp / weights)},
            "engine": None if not engine_files else {
                "onnx": engine_files, "how": f"ONNX graphs of the network (float32), each recording the SHA-256 of "
                                             f"{weights}; `orbitseg predict --engine onnx|openvino|auto` runs them"},
            "postprocess": {"rules": None, "how": f"none: the {FULL_FOLD} model has no validation case to choose it "
                                                  f"on, and {no_cv or 'not every fold of the run chose one'}"}
            if pooled is None else {
                "rules": pooled["rules"], "file": POSTPROCESS_JSON,
                "how": f"chosen per structure on the validation cases of the run's {len(cv_runs)} cross-validation "
                       f"folds pooled ({len(pooled.get('cases', []))}), with those fold networks: the {FULL_FOLD} "
                       "model has no validation case of its own; `orbitseg predict --no-postprocess` turns it off"},
            "cv_metrics": None,
            "cv_estimate": estimate if estimate is not None else {
                "dice": None, "how": f"none: {no_cv}"},
            "folds": _records({FULL_FOLD: info}),
        }
        # run.json's best_val_dice of an unvalidated run is a placeholder (0.0), no metric: not carried over
        meta["folds"][FULL_FOLD]["result"] = {k: v for k, v in (info.get("result") or {}).items()
                                              if k != "best_val_dice"}
        (tmp / MODEL_JSON).write_text(to_json(meta), encoding="utf-8")
    return out


def _folds_cases(meta: dict) -> set[str] | None:
    """Every case the folds of a model folder's ``model.json`` were made from (train, validation and test of
    each fold), or None when it records no splits."""
    splits = [(f or {}).get("split") for f in (meta.get("folds") or {}).values()]
    if not splits or any(not sp for sp in splits):
        return None
    return {c for sp in splits for part in ("train", "val", "test") for c in sp.get(part, [])}


def _cases_mismatch(meta: dict, trained: set[str]) -> str | None:
    """Why a full network trained on ``trained`` is not trained on exactly the cases the folds of a model folder's
    ``meta`` were made from, or None when it is."""
    cases = _folds_cases(meta)
    if cases is None:
        return "its model.json records no splits"
    if cases != trained:
        return f"{len(trained - cases)} case(s) not in the folds, {len(cases - trained)} of theirs missing"
    return None


def _same_folds(a: Path, b: Path) -> bool:
    """Whether two model folders hold the same fold networks (a copy of a folder counts as that folder)."""
    if a.resolve() == b.resolve():
        return True
    fa, fb = sorted(a.glob("fold_*.pt")), sorted(b.glob("fold_*.pt"))
    return bool(fa) and [f.name for f in fa] == [f.name for f in fb] and all(
        file_sha256(x) == file_sha256(y) for x, y in zip(fa, fb))


def add_full_network(run_dir: str | Path, model_dir: str | Path, *, overwrite: bool = False,
                     dataset: str | Path | None = None, average_with: str | Path | None = None,
                     average_weight: float = AVERAGE_WEIGHT) -> Path:
    """Add the ``full`` network of ``run_dir`` (``orbitseg train --fold full``) to the fold model folder
    ``model_dir``: ``full.pt`` (float16) beside ``fold_k.pt``, its ONNX graphs where the folds have theirs,
    and a ``"full"`` record in ``model.json`` (how it was made; no metric of its own).  ``--folds full`` then
    takes it alone; ``all`` stays the folds' ensemble, and the folds' files are not changed.

    It must have been trained on exactly the cases the folds were made from (their train, validation and test
    patients together), with the folds' network and preprocessing: then the folds' pooled post-processing and
    their cross-validation are the recipe's, and the quality flags' training acquisition is its own.  The
    folder is replaced as a whole (never half written).  ``average_with`` / ``average_weight``: the network is
    averaged with that folder's full network, which it was fine-tuned from (as :func:`export_model`'s; the folds
    of ``model_dir`` are typically averaged with the same folder).

    Raises
    ------
    InputError
        ``model_dir`` is no fold model folder, ``run_dir`` holds no full network, they differ in cases,
        network or preprocessing, ``model_dir`` holds a full network already (without ``overwrite``), or
        ``average_with`` cannot be averaged with.
    """
    from orbitseg.runs.checkpoint import read_training_checkpoint

    run_dir, model_dir = Path(run_dir), Path(model_dir)
    meta = read_model_json(model_dir) if model_dir.is_dir() else None
    folds = sorted(model_dir.glob("fold_*.pt")) if meta is not None else []
    if not folds or meta.get("networks") == FULL_FOLD:
        raise InputError(model_dir, "is no fold model folder (fold_k.pt and model.json, as `orbitseg export` "
                                    "writes); export the full network on its own with --full")
    if read_model_json(run_dir) is not None:  # a model folder: its full network, carried over unchanged
        if average_with is not None:
            raise InputError(run_dir, "is a model folder: its full network is carried over as it is, never averaged")
        return _carry_full_network(run_dir, model_dir, meta, folds, overwrite=overwrite)
    full_dir = full_run(run_dir)
    if full_dir is None:
        raise InputError(run_dir, f"holds no {FULL_FOLD} model ({FULL_FOLD}/{CHECKPOINT_BEST} with run.json); "
                                  f"train one with `orbitseg train DATA --fold {FULL_FOLD}`")
    weights = fold_file_name(FULL_FOLD)
    if (model_dir / weights).exists() and not overwrite:
        raise InputError(model_dir, f"already holds a {FULL_FOLD} network ({weights}); pass --overwrite to replace it")
    info = read_run_json(full_dir)
    average = None if average_with is None else (average_with, _check_weight(average_weight))
    partner = None if average is None else _average_partner(average[0], {FULL_FOLD: info}, full_dir)
    what = recipe_difference(read_training_checkpoint(full_dir / CHECKPOINT_BEST), read_training_checkpoint(folds[0]))
    if what is not None:
        raise InputError(full_dir, f"was trained with another {what} than the folds of {model_dir}; export it on "
                                   "its own (orbitseg export RUN MODEL --full)")
    trained = set(info["split"]["train"])
    why = _cases_mismatch(meta, trained)
    if why is not None:
        raise InputError(full_dir, f"was not trained on the cases the folds of {model_dir} were made from ({why}); "
                                   "export it on its own (orbitseg export RUN MODEL --full)")
    _, ds_info = _dataset(info, dataset)
    parent = _init_parent({FULL_FOLD: info})
    epochs = _trained_epochs({FULL_FOLD: info})
    folds_cmds, add = list(meta.get("recreate") or []), "orbitseg export RUN_FULL MODEL_DIR --add-full"
    # (an averaged network started from the folder it is averaged with: checked; that folder's re-made name)
    averaged = "" if partner is None else " --average-with {} --average-weight " + f"{average[1]:g}"
    if parent is None or _same_folds(parent, model_dir):  # from these folds (or nothing): after their commands
        train_cmds = _recreate(ds_info, info, epochs, parent=(folds_cmds, None if parent is None else "MODEL_DIR"),
                               fold=FULL_FOLD, out="RUN_FULL", export=add + averaged.format("MODEL_DIR"))
    else:  # started elsewhere: that folder's commands, the folds' and the full network's
        p_cmds, p_name = _parent_commands(parent, ds_info, from_full=_started_from_full(info))
        k = next((i for i, (a, b) in enumerate(zip(folds_cmds, p_cmds)) if a != b), min(len(folds_cmds), len(p_cmds)))
        # the folds grew from the same ancestors (e.g. both from an earlier model): that folder is re-made whole
        # before the folds' own steps, which may add cases to DATA (import --add) that it was not trained on
        chain = p_cmds + folds_cmds[k:] if k else folds_cmds + p_cmds
        train_cmds = _recreate(ds_info, info, epochs, parent=(chain, p_name), fold=FULL_FOLD, out="RUN_FULL",
                               export=add + averaged.format(p_name))
    record = _records({FULL_FOLD: info})[FULL_FOLD]
    record["result"] = {k: v for k, v in (record.get("result") or {}).items() if k != "best_val_dice"}
    n_patients = len(info["split"].get("train_patients") or [])

    def full_record(path: Path) -> dict:
        return {
            "description": f"1 network trained on all {len(trained)} cases ({n_patients} patients) the folds were "
                           f"made from (`orbitseg train --fold {FULL_FOLD}`, nnU-Net's -f all); `--folds "
                           f"{FULL_FOLD}` runs it alone, it is never averaged with the folds; no case was held out, "
                           "so it has no metric of its own (the folds' cross-validation is the recipe's estimate)",
            "weights": weights, "sha256": file_sha256(path),
            "recreate": train_cmds,
            "init_from": None if parent is None else _parent_summary(parent, {FULL_FOLD: info}),
            **({} if partner is None else {"averaged_with": _average_record(
                partner[0], partner[1], average[1], "the network's weights")}),
            "source_run": str(full_dir.resolve()),
            **_provenance({FULL_FOLD: full_dir}, {FULL_FOLD: info}),
            "postprocess": "the folds' pooled choice (postprocess.json), chosen with the fold networks: the "
                           f"{FULL_FOLD} network has no validation case of its own",
            "run": record,
        }

    _put_full_network(model_dir, meta, lambda path: export_half(full_dir / CHECKPOINT_BEST, path,
                                                                **_averaging(partner, average, FULL_FOLD)), full_record)
    return model_dir


def _carry_full_network(source: Path, model_dir: Path, meta: dict, folds: list[Path], *, overwrite: bool) -> Path:
    """:func:`add_full_network` from a model folder ``source``: its ``full.pt`` copied beside the folds of
    ``model_dir`` byte for byte, with its ``model.json["full"]`` record (``carried_from`` added).  For folds
    fine-tuned from ``source`` that keep its full network: the same cases, network and preprocessing are
    checked as for a run's full network; the recreate commands re-make ``source`` with its full network, then the
    folds' own steps, then this export."""
    import shutil

    from orbitseg.runs.checkpoint import read_training_checkpoint

    weights = fold_file_name(FULL_FOLD)
    src_meta = read_model_json(source) or {}
    record = src_meta.get(FULL_FOLD)
    if not isinstance(record, dict) or not (source / weights).is_file():
        raise InputError(source, f"holds no {FULL_FOLD} network ({weights} with a '{FULL_FOLD}' record in its "
                                 f"{MODEL_JSON}) to carry over")
    if record.get("sha256") and file_sha256(source / weights) != record["sha256"]:
        raise InputError(source / weights, f"does not match the SHA-256 its {MODEL_JSON} records")
    if (model_dir / weights).exists() and not overwrite:
        raise InputError(model_dir, f"already holds a {FULL_FOLD} network ({weights}); pass --overwrite to replace it")
    parent = (meta.get("init_from") or {}).get("folder")
    if parent is None or Path(parent).resolve() != source.resolve():
        raise InputError(model_dir, f"its folds were not fine-tuned from {source} (model.json init_from: {parent}), "
                                    f"so that folder's {FULL_FOLD} network is not theirs to carry")
    what = recipe_difference(read_training_checkpoint(source / weights), read_training_checkpoint(folds[0]))
    if what is not None:
        raise InputError(source, f"its {FULL_FOLD} network was trained with another {what} than the folds of "
                                 f"{model_dir}")
    why = _cases_mismatch(meta, set(((record.get("run") or {}).get("split") or {}).get("train") or []))
    if why is not None:
        raise InputError(source, f"its {FULL_FOLD} network was not trained on the cases the folds of {model_dir} "
                                 f"were made from ({why})")
    src_cmds, name = _parent_commands(source, None, from_full=True)
    folds_cmds = list(meta.get("recreate") or [])
    # the folds' commands begin by re-making ``source``'s folds, every one of them also a step (in order) of the
    # commands that re-make ``source`` with its full network: those run once, then the folds' own steps
    k, j = 0, 0
    while k < len(folds_cmds) and folds_cmds[k] in src_cmds[j:]:
        j = src_cmds.index(folds_cmds[k], j) + 1
        k += 1
    recreate = src_cmds + folds_cmds[k:] + [f"orbitseg export {name} MODEL_DIR --add-full"]
    _put_full_network(model_dir, meta, lambda path: shutil.copy2(source / weights, path), lambda path: {
        **record, "recreate": recreate,
        "carried_from": {"folder": str(source.resolve()), "name": src_meta.get("name"),
                         "how": f"the {FULL_FOLD} network of that folder, unchanged, beside folds fine-tuned from "
                                "its folds"}})
    return model_dir


def _put_full_network(model_dir: Path, meta: dict, write_weights: Callable[[Path], object],
                      full_record: Callable[[Path], dict]) -> None:
    """Replace the fold model folder ``model_dir`` as a whole (never half written) by its files with a full network:
    ``write_weights(path)`` writes ``full.pt``, its ONNX graphs are built where the folds have theirs, and
    ``model.json`` gets ``meta`` with ``meta["full"] = full_record(path)`` and the new weights' SHA-256."""
    import shutil

    from orbitseg.evaluate.folders import to_json

    weights = fold_file_name(FULL_FOLD)
    with atomic_dir(model_dir, overwrite=True) as tmp:
        stale = {weights, *(p.name for p in model_dir.glob(f"{FULL_FOLD}.*.onnx"))}
        for p in model_dir.iterdir():
            if p.is_file() and p.name not in stale:
                shutil.copy2(p, tmp / p.name)
        write_weights(tmp / weights)
        # graphs beside the weights only where the folds have theirs (else all are built on first use)
        engine_files = _engine(tmp, [weights]) if meta.get("engine") else {}
        if engine_files:
            meta["engine"]["onnx"] = {k: v for k, v in meta["engine"]["onnx"].items()
                                      if not k.startswith(f"{FULL_FOLD}.")} | engine_files
        if isinstance(meta.get("weights_sha256"), dict):
            meta["weights_sha256"][weights] = file_sha256(tmp / weights)
        meta[FULL_FOLD] = full_record(tmp / weights)
        (tmp / MODEL_JSON).write_text(to_json(meta), encoding="utf-8")


def describe_export(out: str | Path) -> str:
    """A few lines on an exported model folder: folds (or the full model), size, CV Dice."""
    out = Path(out)
    meta = json.loads((out / MODEL_JSON).read_text(encoding="utf-8"))
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1e6

    def dice(d: dict) -> str:
        return ", ".join(f"{k} {v:.3f}" for k, v in d.items() if isinstance(v, float) and np.isfinite(v))

    if meta.get("networks") == FULL_FOLD:
        n = len(meta["folds"][FULL_FOLD]["split"]["train"])
        est = (meta.get("cv_estimate") or {}).get("dice")
        lines = [f"model {meta['name']}: 1 network trained on all {n} labelled cases ({FULL_FOLD}), {size:.1f} MB "
                 f"-> {out}", "no metric of its own (no case held out); "
                 + (f"cross-validation estimate of the recipe (its folds, not this network): Dice {dice(est)}" if est
                    else "no cross-validation estimate")]
    else:
        lines = [f"model {meta['name']}: {len(meta['folds'])} fold(s), {size:.1f} MB -> {out}"]
        cv = meta.get("cv_metrics")
        if cv:
            lines.append("cross-validation Dice: " + dice(cv["dice"]))
        if meta.get(FULL_FOLD):
            lines.append(f"and a {FULL_FOLD} network trained on every case (`--folds {FULL_FOLD}`: one network "
                         "instead of the ensemble; no metric of its own)")
    if (meta.get("postprocess") or {}).get("rules"):
        lines.append("post-processing: " + ", ".join(f"{k} {v}" for k, v in meta["postprocess"]["rules"].items()))
    return "\n".join(lines)
