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
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from orbitseg.constants import CHANNEL_SUFFIX, DICOM_OUTPUTS, FILE_ENDING, PREDICTION_JSON
from orbitseg.io.formats import LABEL_WRITE_ENDINGS, split_ending
from orbitseg.errors import InputError, OrbitsegError, OutputError
from orbitseg.io.atomic import remove_stale_temporaries, write_text_atomic


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


def check_output_folder(output: str | Path) -> Path:
    """Refuse an OUTPUT that cannot become the folder of results, before any scan is read.  Nothing is
    created: the folder is made with the first file written, so a run that writes nothing leaves none.

    Raises
    ------
    OutputError
        ``output`` is a file, lies under a file, or its nearest existing folder is not writable.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputError(output, "exists and is not a folder; OUTPUT is the folder the label files go to")
    anc = output
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(output, f"cannot be created: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(output, f"cannot be written: no permission to write in {anc}")
    return output


def dicom_uid_key(segmenter, settings: dict | None = None) -> str:
    """What makes a DICOM object's UIDs (:func:`dicom_output_uids`): the model files by their SHA-256 (not their
    path), preprocessing, post-processing, mirroring, the engine and precision, and orbitseg's version.
    ``settings``: ``segmenter.settings()`` when the caller has it already (it hashes the model files)."""
    from orbitseg import __version__

    settings = segmenter.settings() if settings is None else settings
    sums = [c.get("sha256") if isinstance(c, dict) else c for c in settings.get("checkpoints", [])]
    key = dict(settings, checkpoints=sums, engine=segmenter.engine.name,
               precision=segmenter.precision, orbitseg=__version__)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def dicom_output_uids(source_series_uid: str, uid_key: str, fmt: str) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the DICOM object ``fmt`` (``dicom-seg``, ``rtstruct``) made from
    series ``source_series_uid`` by the prediction ``uid_key`` (:func:`dicom_uid_key`): fixed, so a rerun
    writes the same object and a PACS stores it once; other settings or another series give other UIDs."""
    from pydicom.uid import generate_uid

    src = ["orbitseg", source_series_uid, uid_key, fmt]
    return str(generate_uid(entropy_srcs=[*src, "series"])), str(generate_uid(entropy_srcs=[*src, "instance"]))


def _write_outputs(labels, scan, targets: dict[str, Path], *, overwrite: bool, problems: list[str],
                   uid_key: str | None = None) -> list[Path]:
    """Write ``labels`` in every format of ``targets`` (format -> file); the files written.  A DICOM
    object for a scan that is not a DICOM series is named in ``problems``; the other formats go on.
    With ``uid_key`` the DICOM objects get fixed UIDs (:func:`dicom_output_uids`), else fresh ones."""
    from orbitseg.io.dicomseg import write_dicom_seg
    from orbitseg.io.rtstruct import write_rtstruct
    from orbitseg.io.write import write_label

    written = []
    for fmt, target in targets.items():
        if fmt in DICOM_OUTPUTS and not scan.meta.get("files"):
            problems.append(f"{scan.path}: not a DICOM series (format {scan.meta.get('format', 'unknown')}), so no "
                            f"{fmt} is written: it refers to the scan's DICOM slices; the other formats were written")
            continue
        uids = {}
        if fmt in DICOM_OUTPUTS and uid_key and scan.meta.get("series_uid"):
            uids = dict(zip(("series_instance_uid", "sop_instance_uid"),
                            dicom_output_uids(scan.meta["series_uid"], uid_key, fmt)))
        if fmt == "dicom-seg":
            write_dicom_seg(labels, scan, target, overwrite=overwrite, **uids)
        elif fmt == "rtstruct":
            write_rtstruct(labels, scan, target, overwrite=overwrite, **uids)
        else:
            write_label(labels, target, reference=scan, overwrite=overwrite)
        written.append(target)
    return written


def _read_output(target: Path, fmt: str, scan):
    """The labels of an output file already written (``--resume``), on ``scan``'s grid."""
    from orbitseg.io.read import read_label

    if fmt not in DICOM_OUTPUTS:
        return read_label(target, reference=scan)
    if fmt == "dicom-seg":
        from orbitseg.io.dicomseg import read_dicom_seg

        return read_dicom_seg(target, reference=scan)
    raise InputError(target, "an RTSTRUCT cannot be read back as labels; put a label format first in --format "
                             "to resume, or --overwrite")


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
    ending: str | Sequence[str] = FILE_ENDING,
    overwrite: bool = False,
    series_uid: str | None = None,
    postprocess: bool = True,
    mirror: bool = False,
    precision: str = "auto",
    engine: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> tuple[list[dict], list[str]]:
    """Segment every scan of ``input_path`` into ``output``; returns (measurement rows, problems).

    Scans are segmented and written one at a time, the next one read meanwhile (in a thread:
    decompression and DICOM decoding overlap the network), so memory holds two scans at most
    whatever the folder's size.  A scan that cannot be segmented (not CT, no orbit
    found, unreadable) is reported in ``problems`` and the others go on.
    ``postprocess=False`` writes the network's labels as they are, without the
    connected-component clean-up stored with the model (:func:`~orbitseg.predict.segmenter.model_postprocessing`);
    ``mirror=True`` adds left-right mirrored test-time augmentation (twice the network time).
    ``precision``: ``"auto"`` runs the network in bfloat16 on a CPU that does it in hardware
    (about twice as fast) and in float32 elsewhere; ``"float32"`` or ``"bfloat16"`` forces one.
    ``engine``: ``"auto"`` runs the fastest of PyTorch, ONNX Runtime and OpenVINO on this machine (measured
    once, :mod:`orbitseg.predict.engine`), ``"torch"``, ``"onnx"`` or ``"openvino"`` forces one; the first line
    printed says which.
    ``ending``: one output format or several, each a label-volume ending (``.nii.gz``, ``.seg.nrrd``, ...)
    or a DICOM object (``"dicom-seg"``, ``"rtstruct"``: :data:`~orbitseg.constants.DICOM_OUTPUTS`,
    written only for scans read from a DICOM series, which they reference slice by slice); the first
    is the file ``resume`` looks for.
    ``resume=True`` continues an interrupted run: label files already in ``output``
    are kept (and measured) instead of refused; it is refused when ``output``'s
    ``prediction.json`` was written with other model files or settings.  Each label file
    written gets an entry in ``prediction.json`` (:meth:`Segmenter.settings`, the precision,
    device and time), rewritten atomically after every scan.  ``measurements.csv`` is rewritten
    after every scan, so an interruption loses at most the scan in progress.
    """
    from tqdm import tqdm

    from orbitseg import __version__
    from orbitseg.evaluate.folders import rows_to_csv
    from orbitseg.evaluate.measure import MEASUREMENTS_CSV, orbit_measurements
    from orbitseg.evaluate.quality import flag_codes, flags_summary, quality_checks, quality_flags
    from orbitseg.io.dicom import acquisition_note, acquisition_record
    from orbitseg.io.read import read_scan
    from orbitseg.predict.core import ONE_GLOBE_MIDLINE, finder_midline
    from orbitseg.predict.segmenter import Segmenter, fold_limits, training_acquisition

    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume keeps existing label files, "
                         "overwrite replaces them")
    formats = [ending] if isinstance(ending, str) else list(dict.fromkeys(ending))
    known = (*LABEL_WRITE_ENDINGS, *DICOM_OUTPUTS)
    bad = [f for f in formats if f not in known]
    if bad or not formats:
        raise InputError(None, f"output format {', '.join(map(repr, bad)) or 'none'} is not one of {', '.join(known)}")
    inputs = find_inputs(input_path)
    output = check_output_folder(output)
    if output.is_dir():  # temporaries of a killed run: a label file or record half written
        remove_stale_temporaries(output)
    segmenter = Segmenter.load(model, folds=folds, device=device, precision=precision, mirror=mirror,
                               postprocess=postprocess, engine=engine, log=print if progress else lambda _: None)
    settings = segmenter.settings()
    sid = _settings_id(settings)
    train_acq = training_acquisition(segmenter)
    limits = fold_limits(segmenter)
    uid_key = dicom_uid_key(segmenter, settings) if any(f in DICOM_OUTPUTS for f in formats) else None
    record_path = output / PREDICTION_JSON
    record = _read_record(record_path) if record_path.exists() and not overwrite else {"settings": {}, "cases": {}}
    if resume and record["cases"] and sid not in record["settings"]:
        raise InputError(record_path, "was written by another prediction (other model files, preprocessing, "
                                      "post-processing or --mirror); --resume only continues the same one: use "
                                      "another OUTPUT folder, or --overwrite to replace its label files")
    record["settings"][sid] = settings
    record.update({"orbitseg": __version__, "command": list(sys.argv)})
    if progress:
        print(segmenter.describe())
        note = segmenter.speed_note()
        if note:
            print(note)
    rows, problems, kept = [], [], 0  # OUTPUT is created by the first file written (none: no folder left)

    def targets_of(item: ScanInput) -> dict[str, Path]:
        return {f: output / f"{item.case_id}{DICOM_OUTPUTS.get(f, f)}" for f in formats}

    def existing(item: ScanInput) -> list[Path]:
        return [t for t in targets_of(item).values() if t.exists()]

    def refused(there: list[Path]) -> bool:
        return bool(there) and not (overwrite or resume)

    reader = ThreadPoolExecutor(max_workers=1)  # reads the next scan while this one is segmented
    reads: dict[int, Future] = {}

    def read_ahead(k: int) -> None:
        while k < len(inputs) and refused(existing(inputs[k])):
            k += 1  # not read: it will be refused
        if k < len(inputs) and k not in reads:
            reads[k] = reader.submit(read_scan, inputs[k].path, series_uid=series_uid)

    try:
        for index, item in enumerate(tqdm(inputs, desc="predict", unit="scan", disable=not progress)):
            targets = targets_of(item)
            target = targets[formats[0]]
            there = existing(item)
            if refused(there):
                problems.append(f"{there[0]}: already exists; pass --overwrite to replace it or --resume to keep it")
                continue
            keep = resume and len(there) == len(targets)
            read_ahead(index)
            pending = reads.pop(index)
            read_ahead(index + 1)
            try:
                # also for a kept file: the clinical measurements need its bone, and its measurements must
                # equal those of the run that wrote it
                scan = pending.result()
                if keep:
                    labels = _read_output(target, formats[0], scan)
                    measured = orbit_measurements(labels, scan, clinical=True,
                                                  midline_fallback=lambda: finder_midline(scan))
                    kept += 1
                else:
                    note = acquisition_note(scan.meta)  # tilt corrected, slice blocks joined, series picked
                    if note and progress:
                        tqdm.write(f"{item.case_id}: {note}")
                    seg = segmenter.segment(scan, fold_agreement=True)  # the fold-disagreement flag
                    if progress and seg.orbit_midline is not None and seg.orbit_midline[1] == ONE_GLOBE_MIDLINE:
                        tqdm.write(f"{item.case_id}: one globe found; the other orbit's box is its mirror image "
                                   "across the head's midline (measurements.csv: midline_from head_symmetry)")
                    labels = seg.labels
                    # once: the flags use its midline
                    measured = orbit_measurements(labels, scan, clinical=True, midline_fallback=seg.orbit_midline)
                    agreement = seg.fold_agreement  # None with one network: no fold check
                    flags = quality_flags(labels, scan, agreement=agreement, training_acquisition=train_acq,
                                          measurements=measured, fold_limits=limits)
                    del seg
                    written = _write_outputs(labels, scan, targets, overwrite=overwrite or resume, problems=problems,
                                             uid_key=uid_key)
                    if not written:
                        continue
                    record["cases"][item.case_id] = {
                        "scan": str(Path(item.path).resolve()), "labels": written[0].name,
                        "outputs": [t.name for t in written], "settings": sid,
                        "precision": segmenter.precision, "device": str(device), "engine": segmenter.engine.name,
                        "engine_files": segmenter.engine.files(), "quality": flags,
                        "quality_checks": quality_checks(fold_check=agreement is not None,
                                                         training_acquisition=train_acq),
                        **acquisition_record(scan.meta),
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                    write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")
            except OutputError:
                raise  # the next scans could not be written either
            except OrbitsegError as exc:
                problems.append(str(exc))
                continue
            if keep:  # the flags recorded with it, or the anatomy's
                flags = record["cases"].get(item.case_id, {}).get("quality")
                flags = (quality_flags(labels, scan, training_acquisition=train_acq, measurements=measured)
                         if flags is None else flags)
            if flags:
                tqdm.write(f"warning: {item.case_id}: {flags_summary(flags)} (prediction.json has what to do)", file=sys.stderr)
            # with the clinical columns (docs/measurements.md)
            for r in measured:
                side = r["side"] if r["side"] in ("right", "left") else None
                mine = [f for f in flags if side is None or f["side"] in (side, "both")]
                rows.append({"case": item.case_id, "scan": str(item.path), **r, "flags": flags_summary(mine),
                             "flag_codes": flag_codes(mine)})
            write_text_atomic(output / MEASUREMENTS_CSV, rows_to_csv(rows, digits=4))
    finally:  # an error that stops the run (output unwritable, Ctrl-C) leaves no read behind
        reader.shutdown(cancel_futures=True)
    if progress and kept:
        print(f"kept {kept} existing label file(s) (resume)")
    return rows, problems
