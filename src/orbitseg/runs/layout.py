"""The one owner of the run-folder and model-folder layout.

A cross-validation **run folder** (``orbitseg train --fold all``; default ``DATASET/runs/PRESET``)::

    RUN/fold_k/run.json              how fold k was trained: preset, preprocessing, seeds, split, resumes, result
    RUN/fold_k/checkpoint_best.pt    weights of the best epoch on validation (what predict loads)
    RUN/fold_k/checkpoint_last.pt    the latest epoch (what --resume continues)
    RUN/fold_k/log.csv, curves.png   one row per epoch; its picture
    RUN/fold_k/data_access.json      the cases each epoch trained and validated on, read from the data itself
    RUN/fold_k/postprocess.json      post-processing chosen on the fold's validation cases
    RUN/fold_k/segmented/            the fold's test cases, segmented on each scan's grid
    RUN/fold_k/metrics/              their evaluation (orbitseg.evaluate)
    RUN/metrics/                     the four test folds scored together
    RUN/full/                        ``--fold full``: one model on every labelled case (same files as a fold
                                     folder; no validation or test part, so no metrics/ and no post-processing)

A **model folder** (``orbitseg export``; the shipped one is ``orbitseg/pretrained/default``)::

    MODEL/fold_k.pt                  float16 weights of fold k (orbitseg.runs.checkpoint.export_half)
    MODEL/postprocess.json           the folds' validation choices pooled
    MODEL/model.json                 how it was made, splits, CV metrics
    MODEL/cv_per_case.json, cv_summary.json

or, exported from ``RUN/full`` (``orbitseg export RUN MODEL --full``, or a run holding only ``full``)::

    MODEL/full.pt                    float16 weights of the one network trained on every labelled case
    MODEL/postprocess.json           the run's cross-validation folds' pooled choice, when it has folds
    MODEL/model.json                 how it was made; no metric of its own (it held no case out), the
                                     recipe's cross-validation estimate from the run's folds where they exist

A folder holding both ``fold_k`` and ``full`` networks (``orbitseg export RUN MODEL --add-full`` adds a full
network trained on exactly the folds' cases to their model folder) is read as its
folds (``all``: their ensemble); the full network only when asked for by name (``--folds full``): it is never
averaged with the folds.

The names live here and in :mod:`orbitseg.constants` (checkpoint and record names); the functions
below find folds and read the records, so no other module globs ``fold_*`` or parses ``run.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from orbitseg.constants import CHECKPOINT_BEST, CHECKPOINT_LAST, FULL_FOLD, METRICS_DIR, MODEL_JSON
from orbitseg.errors import InputError

__all__ = ["RUN_JSON", "TRAIN_LOCK", "LOG_CSV", "CURVES_PNG", "DATA_ACCESS_JSON", "SEGMENTED_DIR", "RUN_FILES",
           "RUN_DIRS",
           "POSTPROCESS_JSON", "CV_PER_CASE_JSON", "CV_SUMMARY_JSON", "fold_dir_name", "fold_file_name", "fold_number",
           "network_name", "full_run", "full_checkpoint", "run_dir_of", "holds_run", "fold_runs", "read_run_json",
           "fold_infos", "read_model_json", "SHIPPED_MODEL", "resolve_model", "model_checkpoints", "fold_init_source", "init_split",
           "dataset_identity", "init_dataset_identity"]

RUN_JSON = "run.json"
#: held (flock) by the process training in a fold folder, so that a second one is refused, not interleaved
TRAIN_LOCK = ".orbitseg-train.lock"
LOG_CSV = "log.csv"
CURVES_PNG = "curves.png"
#: which cases the run's training batches and validation passes read (orbitseg.train.data.DataAccess)
DATA_ACCESS_JSON = "data_access.json"
#: post-processing chosen on validation cases (a fold's own; a model folder's pooled over its folds)
POSTPROCESS_JSON = "postprocess.json"
#: a fold's test cases segmented by its best checkpoint
SEGMENTED_DIR = "segmented"
#: what a fold folder holds besides its sub-folders (removed when a run is started again with overwrite)
RUN_FILES: tuple[str, ...] = (CHECKPOINT_LAST, CHECKPOINT_BEST, LOG_CSV, CURVES_PNG, DATA_ACCESS_JSON, POSTPROCESS_JSON,
                              RUN_JSON)
#: a fold folder's sub-folders (segmented test cases and their metrics)
RUN_DIRS: tuple[str, ...] = (SEGMENTED_DIR, METRICS_DIR)
#: a model folder's cross-validation metrics: the exported weights re-scored on each fold's test cases
CV_PER_CASE_JSON, CV_SUMMARY_JSON = "cv_per_case.json", "cv_summary.json"

_FOLD = re.compile(r"fold_(\d+)(\.pt)?")


def fold_dir_name(fold: int | str) -> str:
    """``fold_k``: the folder of fold ``k`` in a run folder; ``full`` for the model trained on every
    labelled case (:data:`~orbitseg.constants.FULL_FOLD`)."""
    return FULL_FOLD if fold == FULL_FOLD else f"fold_{int(fold)}"


def fold_file_name(fold: int | str) -> str:
    """``fold_k.pt``: the weights of fold ``k`` in a model folder; ``full.pt`` for the model trained on
    every labelled case (:data:`~orbitseg.constants.FULL_FOLD`)."""
    return f"{FULL_FOLD}.pt" if fold == FULL_FOLD else f"fold_{int(fold)}.pt"


def fold_number(path: str | Path) -> int | None:
    """``k`` of a ``fold_k`` folder or a ``fold_k.pt`` file, else None."""
    m = _FOLD.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def network_name(path: str | Path) -> int | str | None:
    """Which network a model-folder file (``fold_k.pt``, ``full.pt``) or run sub-folder (``fold_k``, ``full``)
    holds: ``k``, :data:`~orbitseg.constants.FULL_FOLD`, or None."""
    name = Path(path).name
    return FULL_FOLD if name in (FULL_FOLD, fold_file_name(FULL_FOLD)) else fold_number(name)


def run_dir_of(dataset: str | Path, preset: str, fold: int | str) -> Path:
    """The default folder of fold ``fold`` of a run of ``preset`` on ``dataset``."""
    return Path(dataset) / "runs" / preset / fold_dir_name(fold)


def holds_run(run: str | Path) -> bool:
    """Whether a fold folder already has a checkpoint (what resume continues / overwrite replaces)."""
    run = Path(run)
    return (run / CHECKPOINT_LAST).exists() or (run / CHECKPOINT_BEST).exists()


def fold_runs(run_dir: str | Path) -> dict[int, Path]:
    """The trained folds of a cross-validation run: fold number -> ``fold_k`` folder (with
    ``checkpoint_best.pt`` and ``run.json``).

    Raises
    ------
    InputError
        ``run_dir`` is missing or holds no trained fold.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(run_dir, "run folder does not exist")
    found = {}
    for d in sorted(run_dir.glob("fold_*")):
        k = fold_number(d)
        if k is not None and d.is_dir() and (d / CHECKPOINT_BEST).is_file() and (d / RUN_JSON).is_file():
            found[k] = d
    if not found:
        raise InputError(run_dir, f"holds no trained fold (fold_*/{CHECKPOINT_BEST} with {RUN_JSON}); "
                                  "give the folder `orbitseg train --fold all` (or `--fold full`) wrote")
    return found


def full_run(run_dir: str | Path) -> Path | None:
    """The trained ``full`` model of a run (``checkpoint_best.pt`` with ``run.json``): ``run_dir/full``, or
    ``run_dir`` itself when it is that folder (``orbitseg train --fold full --out DIR`` writes into DIR);
    None when there is none."""
    run_dir = Path(run_dir)
    for d in (run_dir / fold_dir_name(FULL_FOLD), run_dir):
        if (d / CHECKPOINT_BEST).is_file() and (d / RUN_JSON).is_file():
            if d != run_dir or d.name == FULL_FOLD or read_run_json(d).get("fold") == FULL_FOLD:
                return d
    return None


def read_run_json(fold_dir: str | Path) -> dict:
    """A fold folder's ``run.json`` (refused by name when it is not valid JSON)."""
    path = Path(fold_dir) / RUN_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(path, f"is not valid JSON ({exc})") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None


def fold_infos(run_dir: str | Path) -> tuple[dict[int, Path], dict[int, dict]]:
    """A run's fold folders (:func:`fold_runs`) and their ``run.json`` records."""
    runs = fold_runs(run_dir)
    return runs, {k: read_run_json(d) for k, d in runs.items()}


def read_model_json(folder: str | Path) -> dict | None:
    """``folder``'s ``model.json`` when it is an exported model folder, else None."""
    path = Path(folder) / MODEL_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(path, f"is not valid JSON ({exc})") from None


#: the word that names the model shipped with orbitseg where a model path is asked for (``--init-from shipped``)
SHIPPED_MODEL = "shipped"


def resolve_model(model: str | Path | None) -> Path:
    """``model`` as a path; ``None`` or the word ``shipped`` (when no such file or folder exists here) is the
    model shipped with orbitseg (``orbitseg/pretrained/default``)."""
    from orbitseg.pretrained import shipped_model_dir

    if model is None or (str(model) == SHIPPED_MODEL and not Path(model).exists()):
        return shipped_model_dir()
    return Path(model)


def full_checkpoint(folder: Path) -> Path | None:
    """``folder``'s full network: ``full.pt`` of a model folder or ``full/checkpoint_best.pt`` of a run."""
    for cand in (folder / fold_file_name(FULL_FOLD), folder / fold_dir_name(FULL_FOLD) / CHECKPOINT_BEST):
        if cand.is_file():
            return cand
    return None


def model_checkpoints(model: str | Path | None, folds: str = "all") -> list[Path]:
    """Checkpoint files for ``model``: a checkpoint file, a fold folder, a cross-validation run
    folder (``fold_k/checkpoint_best.pt``) or a model folder (``fold_k.pt``); ``folds`` picks
    which folds to ensemble (``"all"`` or e.g. ``"0,2"``).  ``None`` means the model shipped
    with orbitseg.

    The network trained on every labelled case (``full.pt``, or ``full/checkpoint_best.pt`` of a run) is
    taken by ``folds="full"``, and by ``"all"`` only where the folder holds no fold: it saw every case the
    folds were tested on, so it is never averaged with them.

    Raises
    ------
    InputError
        ``model`` is missing, holds no checkpoint, or lacks a fold asked for.
    """
    model = resolve_model(model)
    if model.is_file():
        return [model]
    if not model.is_dir():
        raise InputError(model, "model does not exist (give a run folder or a checkpoint file)")
    if (model / CHECKPOINT_BEST).is_file():
        return [model / CHECKPOINT_BEST]
    found = {}
    for p in [*model.glob(f"fold_*/{CHECKPOINT_BEST}"), *model.glob("fold_*.pt")]:
        k = fold_number(p.parent if p.name == CHECKPOINT_BEST else p)
        if k is not None:
            found[k] = p
    full = full_checkpoint(model)
    if str(folds).strip() == FULL_FOLD:
        if full is None:
            raise InputError(model, f"holds no {FULL_FOLD} model ({fold_file_name(FULL_FOLD)} or "
                                    f"{fold_dir_name(FULL_FOLD)}/{CHECKPOINT_BEST}); trained folds: {sorted(found)}")
        return [full]
    if not found and full is not None and folds == "all":
        return [full]
    if not found and full is None:
        raise InputError(model, f"holds no {CHECKPOINT_BEST} (neither itself nor in fold_*/ or {FULL_FOLD}/) "
                                f"and no fold_*.pt or {fold_file_name(FULL_FOLD)}")
    try:
        wanted = sorted(found) if folds == "all" else [int(f) for f in str(folds).split(",")]
    except ValueError:
        raise InputError(model, f"folds must be 'all', '{FULL_FOLD}' or fold numbers like '0,2', "
                                f"got {folds!r}") from None
    missing = [f for f in wanted if f not in found]
    if missing:
        only_full = f"; it holds only the {FULL_FOLD} model (--folds all or {FULL_FOLD})" if not found else ""
        raise InputError(model, f"has no trained fold(s) {missing}; trained: {sorted(found)}{only_full}")
    return [found[f] for f in wanted]


def fold_init_source(folder: str | Path, fold: int | str) -> Path:
    """The weights fold ``fold`` starts from when ``init_from`` is a folder: that folder's own
    fold ``fold`` (``fold_k.pt`` of an exported model, or ``fold_k/checkpoint_best.pt`` of a run).
    The ``full`` model starts from the folder's own full network, else from its fold 0.  A folder
    holding no fold, only a full network (``full.pt`` / ``full/checkpoint_best.pt``), starts every
    fold from that network (the caller checks that it never saw the fold's test cases)."""
    folder = Path(folder)
    own = [fold_file_name(fold), f"{fold_dir_name(fold)}/{CHECKPOINT_BEST}"]
    if fold == FULL_FOLD:
        own += [fold_file_name(0), f"{fold_dir_name(0)}/{CHECKPOINT_BEST}"]
    for cand in own:
        if (folder / cand).is_file():
            return folder / cand
    full = full_checkpoint(folder)
    if full is not None and not [*folder.glob("fold_*.pt"), *folder.glob(f"fold_*/{CHECKPOINT_BEST}")]:
        return full
    raise InputError(folder, f"holds no weights for fold {fold} ({' or '.join(own[:2])}) nor only a "
                             f"{FULL_FOLD} model ({fold_file_name(FULL_FOLD)}); give a model folder from `orbitseg "
                             "export`, a run folder, or one checkpoint file")


def _init_record(source: Path) -> tuple[dict, int | str | None] | None:
    """What is recorded beside the weights in ``source``: (``model.json``, k) beside an exported ``fold_k.pt``
    (``k`` = ``full`` for ``full.pt``), or (``run.json``, None) beside a run's checkpoint; None when neither is
    there or it cannot be read."""
    try:
        k = network_name(source)
        if k is not None and source.suffix == ".pt" and (source.parent / MODEL_JSON).is_file():
            return json.loads((source.parent / MODEL_JSON).read_text(encoding="utf-8")), k
        if (source.parent / RUN_JSON).is_file():
            return json.loads((source.parent / RUN_JSON).read_text(encoding="utf-8")), None
    except (OSError, ValueError):
        pass
    return None


def init_split(source: str | Path) -> dict | None:
    """The split the weights in ``source`` were trained on, where it is recorded: ``model.json``
    beside an exported ``fold_k.pt`` or ``full.pt`` (every labelled case trains), or ``run.json`` beside a run's checkpoint; else None."""
    found = _init_record(Path(source))
    try:
        if found is not None:
            meta, k = found
            return meta["folds"][str(k)]["split"] if k is not None else meta["split"]
    except (KeyError, TypeError):
        pass
    return None


def dataset_identity(info: dict | None) -> tuple | None:
    """What tells two datasets apart for sure, from a ``dataset.json`` (or ``model.json["dataset"]``) record:
    ``("synthetic", seed, generator_version, small)`` for a cohort of orbitseg's generator (the same
    numbers give the same scans), ``("scans",)`` for any other dataset (nothing recorded tells two such
    datasets apart), None without a record."""
    if not isinstance(info, dict):
        return None
    synth = info.get("synthetic")
    if not isinstance(synth, dict) or "seed" not in synth:
        return ("scans",)
    return ("synthetic", int(synth["seed"]), str(synth.get("generator_version", "")), bool(synth.get("small", False)))


def init_dataset_identity(source: str | Path) -> tuple | None:
    """:func:`dataset_identity` of the dataset the weights in ``source`` were trained on: ``model.json``'s
    record beside an exported ``fold_k.pt`` / ``full.pt``, or the ``dataset.json`` of the dataset ``run.json`` names; None
    where neither is there."""
    from orbitseg.errors import OrbitsegError
    from orbitseg.io.layout import read_dataset_json

    found = _init_record(Path(source))
    try:
        if found is not None:
            meta, k = found
            return dataset_identity(meta.get("dataset") if k is not None else read_dataset_json(meta["dataset"]))
    except (OrbitsegError, KeyError, TypeError):
        pass
    return None
