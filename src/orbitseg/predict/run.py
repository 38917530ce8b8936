"""``orbitseg predict``: segment a scan, a folder of scans or DICOM series, one scan at a time.

Every output label file is written on its own scan's grid (NIfTI by default,
Slicer ``.seg.nrrd`` on request), so it opens aligned on the scan; per-orbit
volumes and left/right asymmetry go to ``measurements.csv`` beside them, and
``prediction.json`` says what made each label file (model files and their
SHA-256, preprocessing, post-processing, precision, orbitseg version).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orbitseg.constants import CHANNEL_SUFFIX, CHECKPOINT_BEST, FILE_ENDING, PREDICTION_JSON, split_ending
from orbitseg.errors import InputError, OrbitsegError
from orbitseg.io.atomic import write_text_atomic


@dataclass(frozen=True)
class ScanInput:
    case_id: str
    path: Path  # a file, or a folder holding a DICOM series


def find_inputs(path: str | Path) -> list[ScanInput]:
    """The scans named by ``path``: one file, one DICOM series folder, or a folder of either.

    Raises
    ------
    InputError
        ``path`` is missing or holds no scan.
    """
    from orbitseg.io.dataset import scan_entries
    from orbitseg.io.dicom import is_dicom_file

    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_file():
        stem, ending = split_ending(path.name)
        return [ScanInput(stem if ending else path.stem, path)]
    direct_dicom = any(f.is_file() and is_dicom_file(f) for f in path.iterdir())
    if direct_dicom:
        return [ScanInput(path.name, path)]
    out = [ScanInput(stem.removesuffix(CHANNEL_SUFFIX) if entry.is_file() else stem, entry)  # nnU-Net channel
           for stem, entry in scan_entries(path)]
    if not out:
        raise InputError(path, "holds no scans (NIfTI, NRRD, MetaImage files or DICOM series folders)")
    return out


def model_checkpoints(model: str | Path | None, folds: str = "all") -> list[Path]:
    """Checkpoint files for ``model``: a checkpoint file, a fold folder, a cross-validation run
    folder (``fold_k/checkpoint_best.pt``) or a shipped model folder (``fold_k.pt``);
    ``folds`` picks which folds to ensemble (``"all"`` or e.g. ``"0,2"``).  ``None`` means the
    model shipped with orbitseg."""
    from orbitseg.pretrained import shipped_model_dir

    model = shipped_model_dir() if model is None else Path(model)
    if model.is_file():
        return [model]
    if not model.is_dir():
        raise InputError(model, "model does not exist (give a run folder or a checkpoint file)")
    if (model / CHECKPOINT_BEST).is_file():
        return [model / CHECKPOINT_BEST]
    found = {}
    for p in [*model.glob(f"fold_*/{CHECKPOINT_BEST}"), *model.glob("fold_*.pt")]:
        k = (p.parent.name if p.name == CHECKPOINT_BEST else p.stem).split("_")[1]
        if k.isdigit():
            found[int(k)] = p
    if not found:
        raise InputError(model, f"holds no {CHECKPOINT_BEST} (neither itself nor in fold_*/) and no fold_*.pt")
    wanted = sorted(found) if folds == "all" else [int(f) for f in str(folds).split(",")]
    missing = [f for f in wanted if f not in found]
    if missing:
        raise InputError(model, f"has no trained fold(s) {missing}; trained: {sorted(found)}")
    return [found[f] for f in wanted]


def model_postprocessing(checkpoints: list[Path]) -> tuple[dict, str]:
    """The post-processing stored with ``checkpoints`` and a line saying what it is.

    Each checkpoint's folder may hold ``postprocess.json`` (chosen on that run's validation
    cases; the shipped model's folder holds one pooled over its four folds).  One folder:
    its choice; several (a cross-validation run's folds): their validation cases pooled.  A
    model without the file (trained before orbitseg chose post-processing) gets none."""
    from orbitseg.predict.postprocess import NO_POSTPROCESSING, pool_choices, read_postprocessing

    folders = list(dict.fromkeys(Path(c).parent for c in checkpoints))
    choices = [read_postprocessing(f) for f in folders]
    if any(c is None for c in choices):
        lacking = [str(f) for f, c in zip(folders, choices) if c is None]
        return dict(NO_POSTPROCESSING), f"no post-processing ({', '.join(lacking)} hold(s) no postprocess.json)"
    choice = choices[0] if len(choices) == 1 else pool_choices(choices)
    rules = ", ".join(f"{k} {v}" for k, v in choice["rules"].items())
    return choice, f"post-processing chosen on {len(choice.get('cases', []))} validation case(s): {rules}"


def prediction_settings(checkpoints: list[Path], config, postprocessing: dict | None, mirror: bool) -> dict:
    """What decides a prediction's labels, for ``prediction.json``: the model files (path and
    SHA-256), the preprocessing they were trained with, the post-processing rules (None when
    turned off) and mirrored test-time augmentation.  (The precision is recorded per scan: it
    moves Dice by about 1e-4 and ``auto`` depends on the machine.)"""
    from orbitseg.io.read import file_sha256

    return {"checkpoints": [{"path": str(Path(c).resolve()), "sha256": file_sha256(c)} for c in checkpoints],
            "preprocess": config.to_dict(), "postprocess": postprocessing, "mirror": bool(mirror)}


def _settings_id(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and isinstance(record.get("cases"), dict):
            return record
    except (OSError, ValueError):
        pass
    raise InputError(path, "is not a prediction record orbitseg can read; move it away (or pass --overwrite)")


def predict_inputs(
    input_path: str | Path,
    output: str | Path,
    *,
    model: str | Path | None = None,
    folds: str = "all",
    device: str = "cpu",
    ending: str = FILE_ENDING,
    overwrite: bool = False,
    series_uid: str | None = None,
    postprocess: bool = True,
    mirror: bool = False,
    precision: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> tuple[list[dict], list[str]]:
    """Segment every scan of ``input_path`` into ``output``; returns (measurement rows, problems).

    Scans are read, segmented and written one at a time, so memory does not
    grow with the folder.  A scan that cannot be segmented (not CT, no orbit
    found, unreadable) is reported in ``problems`` and the others go on.
    ``postprocess=False`` writes the network's labels as they are, without the
    connected-component clean-up stored with the model (:func:`model_postprocessing`);
    ``mirror=True`` adds left-right mirrored test-time augmentation (twice the network time).
    ``precision``: ``"auto"`` runs the network in bfloat16 on a CPU that does it in hardware
    (about twice as fast) and in float32 elsewhere; ``"float32"`` or ``"bfloat16"`` forces one.
    ``resume=True`` continues an interrupted run: label files already in ``output``
    are kept (and measured) instead of refused; it is refused when ``output``'s
    ``prediction.json`` was written with other model files or settings.  Each label file
    written gets an entry in ``prediction.json`` (:func:`prediction_settings`, the precision,
    device and time), rewritten atomically after every scan.  ``measurements.csv`` is rewritten
    after every scan, so an interruption loses at most the scan in progress.
    """
    from tqdm import tqdm

    from orbitseg import __version__
    from orbitseg.evaluate.folders import rows_to_csv
    from orbitseg.evaluate.measure import MEASUREMENTS_CSV, orbit_measurements
    from orbitseg.io.read import read_label, read_scan
    from orbitseg.io.write import write_label
    from orbitseg.predict.core import load_model, predict_scan
    from orbitseg.predict.postprocess import NO_POSTPROCESSING, apply_postprocessing

    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume keeps existing label files, "
                         "overwrite replaces them")
    if ending not in (".nii.gz", ".nii", ".seg.nrrd", ".nrrd"):
        raise InputError(None, f"output format {ending!r} is not one of .nii.gz, .nii, .seg.nrrd, .nrrd")
    from orbitseg.model import resolve_precision

    precision = resolve_precision(precision, device)
    inputs = find_inputs(input_path)
    ckpts = model_checkpoints(model, folds)
    loaded = [load_model(c, device) for c in ckpts]
    models = [m for m, _ in loaded]
    configs = {repr(c.to_dict()) for _, c in loaded}
    if len(configs) > 1:
        raise InputError(Path(model), "the fold models were trained with different preprocessing; cannot ensemble")
    config = loaded[0][1]
    choice, how = model_postprocessing(ckpts) if postprocess else (dict(NO_POSTPROCESSING), "no post-processing (turned off)")
    output = Path(output)
    settings = prediction_settings(ckpts, config, choice["rules"] if postprocess else None, mirror)
    sid = _settings_id(settings)
    record_path = output / PREDICTION_JSON
    record = _read_record(record_path) if record_path.exists() and not overwrite else {"settings": {}, "cases": {}}
    if resume and record["cases"] and sid not in record["settings"]:
        raise InputError(record_path, "was written by another prediction (other model files, preprocessing, "
                                      "post-processing or --mirror); --resume only continues the same one: use "
                                      "another OUTPUT folder, or --overwrite to replace its label files")
    record["settings"][sid] = settings
    record.update({"orbitseg": __version__, "command": list(sys.argv)})
    if progress:
        print(f"{how}; network in {precision}")
    output.mkdir(parents=True, exist_ok=True)
    rows, problems, kept = [], [], 0
    for item in tqdm(inputs, desc="predict", unit="scan", disable=not progress):
        target = output / f"{item.case_id}{ending}"
        if target.exists() and not (overwrite or resume):
            problems.append(f"{target}: already exists; pass --overwrite to replace it or --resume to keep it")
            continue
        try:
            if target.exists() and resume:
                labels = read_label(target)
                kept += 1
            else:
                scan = read_scan(item.path, series_uid=series_uid)
                labels, _ = predict_scan(models, scan, config, device, mirror=mirror, precision=precision)
                labels = apply_postprocessing(labels, choice)
                write_label(labels, target, reference=scan, overwrite=overwrite)
                record["cases"][item.case_id] = {
                    "scan": str(Path(item.path).resolve()), "labels": target.name, "settings": sid,
                    "precision": precision, "device": str(device),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")
        except OrbitsegError as exc:
            problems.append(str(exc))
            continue
        for r in orbit_measurements(labels):
            rows.append({"case": item.case_id, "scan": str(item.path), **r})
        write_text_atomic(output / MEASUREMENTS_CSV, rows_to_csv(rows, digits=4))
    if progress and kept:
        print(f"kept {kept} existing label file(s) (resume)")
    return rows, problems
