"""Bring scans into the dataset layout (``import``) and validate a dataset (``check``)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orbitseg.constants import DATASET_JSON, DICOM_OUTPUTS, LABELS_TR, IMAGES_TR, IMAGES_TS, STRUCTURES, LABEL_NAMES
from orbitseg.errors import InputError, OrbitsegError
from orbitseg.io.atomic import atomic_dir
from orbitseg.io.formats import format_of, split_ending
from orbitseg.io.layout import (image_path, label_path, list_cases, make_dataset_json,
                                read_dataset_json, write_dataset_json)

#: stem suffixes that mark a label file in a flat source folder
_LABEL_MARKERS = ("_label", "_labels", "_seg", "_mask", "_segmentation")
_LABEL_FOLDERS = ("labels", "labelsTr", "masks", "segmentations")
_IMAGE_FOLDERS = ("images", "imagesTr", "scans")


@dataclass
class SourceCase:
    """A scan found in a source folder, with its label file when there is one."""

    case_id: str
    scan: Path  # file, or folder holding a DICOM series
    label: Path | None = None
    patient_id: str | None = None


def _case_id(stem: str) -> str:
    """A file-system and nnU-Net friendly case id."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "case"


def is_dicom_folder(path: Path) -> bool:
    """True for a folder holding (possibly nested) DICOM files."""
    from orbitseg.io.dicom import is_dicom_file

    return path.is_dir() and any(f.is_file() and is_dicom_file(f) for f in path.rglob("*"))


def scan_entries(folder: Path, *, skip_folders: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    """(stem, path) of the scan files (a known image ending) and DICOM series folders directly
    in ``folder``, sorted by name; hidden entries and the sub-folders named in ``skip_folders``
    are left out."""
    out: list[tuple[str, Path]] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if entry.name not in skip_folders and is_dicom_folder(entry):
                out.append((entry.name, entry))
            continue
        stem, ending = split_ending(entry.name)
        if ending:
            out.append((stem, entry))
    return out


def _scan_entries(folder: Path) -> dict[str, Path]:
    """case stem -> scan file or DICOM folder directly in ``folder`` (image/label folders skipped)."""
    return dict(scan_entries(folder, skip_folders=_LABEL_FOLDERS + _IMAGE_FOLDERS))


#: endings of a DICOM Segmentation file: orbitseg predict's, and any DICOM file (a SEG by its content)
_SEG_ENDINGS = (DICOM_OUTPUTS["dicom-seg"], ".dcm")


def _seg_entries(folder: Path) -> list[tuple[str, Path]]:
    """(stem, path) of the DICOM Segmentation files directly in ``folder`` (``CASE.seg.dcm``,
    ``CASE_seg.dcm``...: a ``.dcm`` file that is a SEG by its content, an image slice is not)."""
    from orbitseg.io.dicomseg import is_dicom_seg

    out = []
    for entry in sorted(folder.iterdir()):
        stem, ending = split_ending(entry.name, _SEG_ENDINGS)
        if ending and stem and not entry.name.startswith(".") and entry.is_file() and is_dicom_seg(entry):
            out.append((stem, entry))
    return out


def _label_entries(folder: Path) -> dict[str, Path]:
    """case stem -> label file of a labels folder: label files, DICOM-SEG files, and a folder (a PACS
    export) holding exactly one DICOM-SEG file."""
    from orbitseg.io.dicomseg import is_dicom_seg

    out = _scan_entries(folder)
    for stem, path in list(out.items()):
        if path.is_dir():
            segs = [f for f in sorted(path.rglob("*")) if f.is_file() and is_dicom_seg(f)]
            if len(segs) == 1:
                out[stem] = segs[0]
    out.update(_seg_entries(folder))
    return out


def find_source_cases(src: str | Path) -> list[SourceCase]:
    """Pair scans with label files in a source folder.

    Accepted layouts
    ----------------
    * ``SRC/images/`` (scan files or DICOM series folders) beside
      ``SRC/labels/`` with label files of the same stem;
    * a flat folder whose label files end in ``_label``, ``_seg``, ``_mask``
      (any supported ending, ``.seg.nrrd`` included) next to their scans.

    A DICOM Segmentation is a label file too: ``CASE.seg.dcm`` (as ``orbitseg
    predict`` names it), ``CASE_seg.dcm`` or, in ``labels/``, ``CASE.dcm`` or a
    folder ``CASE/`` holding one SEG (a PACS export); it is read on its scan's
    grid and must refer to that scan's series when the scan is DICOM.

    * a dataset (``SRC/dataset.json`` beside ``imagesTr/``: orbitseg's or
      nnU-Net's layout): its cases, labels and ``dataset.json`` patients.

    An optional ``SRC/patients.csv`` with columns ``case,patient`` says which
    scans belong to the same patient; otherwise each scan is its own patient.
    """
    src = Path(src)
    if not src.exists():
        raise InputError(src, "source folder does not exist")
    if not src.is_dir():
        raise InputError(src, "is not a folder; `orbitseg import` takes a folder of scans")
    if (src / DATASET_JSON).is_file() and (src / IMAGES_TR).is_dir():
        # a dataset (orbitseg / nnU-Net layout): its case ids and its patients, follow-up scans kept together
        return [SourceCase(c.case_id, c.image, c.label if c.label is not None and c.label.exists() else None,
                           c.patient_id) for c in list_cases(src)]
    img_dir = next((src / n for n in _IMAGE_FOLDERS if (src / n).is_dir()), None)
    lab_dir = next((src / n for n in _LABEL_FOLDERS if (src / n).is_dir()), None)
    scans: dict[str, Path]
    labels: dict[str, Path] = {}
    if img_dir is not None:
        scans = _scan_entries(img_dir)
        if lab_dir is not None:
            labels = _label_entries(lab_dir)
    else:
        scans = {}
        # a list, not _scan_entries' dict: a scan and its label may share a stem (case1.nii.gz, case1.seg.nrrd)
        segs = _seg_entries(src)
        for stem, path in scan_entries(src, skip_folders=_LABEL_FOLDERS + _IMAGE_FOLDERS) + segs:
            base = next((stem[: -len(m)] for m in _LABEL_MARKERS if stem.lower().endswith(m)), None)
            fmt = format_of(path)
            if base is not None or (fmt is not None and not fmt.reads_scan) or (stem, path) in segs:
                # e.g. a 3D Slicer .seg.nrrd, a DICOM-SEG
                labels[base if base is not None else stem] = path
            else:
                scans[stem] = path
    if not scans:
        raise InputError(src, "holds no scans (NIfTI, NRRD, MetaImage files or DICOM series folders)")
    orphans = sorted(set(labels) - set(scans))
    if orphans:
        raise InputError(src, f"label files without a scan: {', '.join(str(labels[o].name) for o in orphans)}")
    patients = _read_patients_csv(src / "patients.csv")
    cases = [SourceCase(_case_id(stem), path, labels.get(stem), patients.get(stem)) for stem, path in scans.items()]
    ids = [c.case_id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise InputError(src, f"several scans map to the same case id: {sorted(dup)}")
    return cases


def _read_patients_csv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"case", "patient"} <= set(rows[0]):
        raise InputError(path, "needs the columns 'case' and 'patient'")
    return {r["case"]: r["patient"] for r in rows}


def import_dataset(
    src: str | Path,
    dataset: str | Path,
    *,
    overwrite: bool = False,
    add: bool = False,
    prefix: str = "",
    series_uid: str | None = None,
    name: str | None = None,
    progress: bool = True,
) -> list[str]:
    """Convert a folder of scans (+ labels) into the nnU-Net layout, as NIfTI.

    Every scan is read with its geometry (DICOM series included), checked to be
    CT, and written as ``imagesTr/{case}_0000.nii.gz`` (labelled) or
    ``imagesTs/`` (unlabelled); labels are checked against their scan's grid and
    written as ``labelsTr/{case}.nii.gz``.  The dataset is built in a temporary
    folder and renamed into place only when every case succeeded, so a bad file
    leaves nothing behind.

    ``add=True`` adds the cases to the existing dataset ``dataset`` instead (e.g. another site's
    scans beside one's own, to train on both): converted in a temporary folder inside it, moved in
    only when every case succeeded, then ``dataset.json`` gains their patients and an ``imports``
    record.  ``prefix`` is put before every imported case id and patient id (``site2_``), so that
    two sources' ``case_001`` / ``patient_001`` stay apart; without it a patient id the dataset
    already holds is that patient (a follow-up scan).

    Returns
    -------
    the imported case ids

    Raises
    ------
    InputError
        naming every bad file and its problem (nothing is written); with ``add``, case ids the dataset
        already holds (nothing is written), or no dataset there.
    ExistsError
        ``dataset`` exists and neither ``overwrite`` nor ``add`` is given.
    """
    if add and overwrite:
        raise ValueError("add and overwrite exclude each other (add to the dataset, or replace it)")
    if prefix and not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
        raise InputError(None, f"prefix {prefix!r} may hold letters, digits, '_' and '-' only")
    cases = find_source_cases(src)
    for c in cases:
        c.case_id = prefix + c.case_id
    dataset = Path(dataset)
    if not add:
        with atomic_dir(dataset, overwrite=overwrite) as tmp:
            patients, n_train = _convert_cases(cases, tmp, src, series_uid, progress, prefix)
            info = make_dataset_json(patients, name=name or dataset.name, num_training=n_train,
                                     description=f"imported by orbitseg from {Path(src).resolve()}")
            write_dataset_json(tmp, info)
        return sorted(patients)
    info = read_dataset_json(dataset)
    held = {c.case_id for c in list_cases(dataset)}
    clash = sorted(held & {c.case_id for c in cases})
    if clash:
        raise InputError(dataset, f"already holds case(s) {', '.join(clash[:6])}{' ...' if len(clash) > 6 else ''}"
                                  " of the source; add them under a --prefix (e.g. site2_)")
    tmp = Path(tempfile.mkdtemp(prefix=".import-", suffix=".tmp", dir=dataset))
    try:
        patients, n_train = _convert_cases(cases, tmp, src, series_uid, progress, prefix)
        for folder in (IMAGES_TR, LABELS_TR, IMAGES_TS):
            if (tmp / folder).is_dir():
                (dataset / folder).mkdir(exist_ok=True)
                for f in sorted((tmp / folder).iterdir()):
                    os.replace(f, dataset / folder / f.name)
        info["patients"] = {**info.get("patients", {}), **patients}
        info["numTraining"] = sum(c.training for c in list_cases(dataset))
        entry = {"from": str(Path(src).resolve()), "prefix": prefix, "cases": len(patients), "labelled": n_train}
        origin = _synthetic_origin(Path(src))
        if origin is not None:  # a cohort of orbitseg's generator: what re-makes it (model.json's recreate)
            entry["synthetic"] = origin
        info.setdefault("imports", []).append(entry)
        write_dataset_json(dataset, info)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(patients)


def _synthetic_origin(src: Path) -> dict | None:
    """The generator record of a source made by ``orbitseg synth`` (its ``dataset.json["synthetic"]`` without
    the per-case list, with its patient count), else None."""
    if not (src / DATASET_JSON).is_file():
        return None
    try:
        synth = read_dataset_json(src).get("synthetic")
    except InputError:
        return None
    if not isinstance(synth, dict) or "seed" not in synth:
        return None
    out = {k: v for k, v in synth.items() if k != "cases"}
    cases = synth.get("cases")
    if isinstance(cases, dict):
        out["patients"] = len({v.get("patient") for v in cases.values() if isinstance(v, dict)})
    return out


def _convert_cases(cases: list[SourceCase], out: Path, src: str | Path, series_uid: str | None,
                   progress: bool, prefix: str = "") -> tuple[dict[str, str], int]:
    """Write ``cases`` into the layout under ``out``: ``(case id -> patient id, labelled cases)``; the
    patient is the source's (``patients.csv``, a dataset's ``dataset.json``), else the DICOM PatientID,
    else the case itself, with ``prefix`` before the first two (case ids carry it already).

    Raises
    ------
    InputError : naming every case that could not be read or checked (after trying them all)."""
    from tqdm import tqdm

    from orbitseg.io.read import read_label, read_scan
    from orbitseg.io.write import write_label, write_scan

    problems: list[str] = []
    patients: dict[str, str] = {}
    n_train = 0
    for case in tqdm(cases, desc="import", unit="scan", disable=not progress):
        try:
            scan = read_scan(case.scan, series_uid=series_uid)
            training = case.label is not None
            if training:
                labels = read_label(case.label, reference=scan, purpose="view")
                write_label(labels, label_path(out, case.case_id), reference=scan)
                n_train += 1
            write_scan(scan, image_path(out, case.case_id, training=training))
            known = case.patient_id or scan.meta.get("patient_id")
            patients[case.case_id] = prefix + str(known) if known else case.case_id
        except OrbitsegError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError(Path(src), "cannot import; nothing was written:\n  " + "\n  ".join(problems))
    return patients, n_train


@dataclass
class CaseCheck:
    """What `orbitseg check` found for one case."""

    case_id: str
    patient_id: str
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    volumes_ml: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # make the pair unusable
    warnings: list[str] = field(default_factory=list)  # worth a look, still usable

    @property
    def usable(self) -> bool:
        return not self.problems


def check_case(case_id: str, patient_id: str, image: Path, label: Path | None, training: bool) -> CaseCheck:
    """Read one scan/label pair and record its facts and problems (never raises for bad data)."""
    from orbitseg.io.read import read_label, read_scan

    rep = CaseCheck(case_id, patient_id)
    try:
        scan = read_scan(image)
    except OrbitsegError as exc:
        rep.problems.append(str(exc))
        return rep
    rep.size, rep.spacing = scan.geometry.size, scan.geometry.spacing
    if not training:
        return rep
    if label is None or not label.exists():
        rep.problems.append(f"{label}: label file missing")
        return rep
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an empty label is unusable for training
            lab = read_label(label, reference=scan, purpose="train")
    except (OrbitsegError, UserWarning) as exc:
        rep.problems.append(str(exc))
        return rep
    counts = np.bincount(lab.array.ravel(), minlength=4)
    rep.volumes_ml = {LABEL_NAMES[s]: float(counts[s]) * scan.geometry.voxel_volume_ml for s in STRUCTURES}
    missing = [LABEL_NAMES[s] for s in STRUCTURES if counts[s] == 0]
    if missing:
        rep.warnings.append(f"no voxels of {', '.join(missing)}")
    return rep


def check_dataset(dataset: str | Path, *, progress: bool = True) -> list[CaseCheck]:
    """Validate every scan/label pair of a dataset, one case at a time.

    Also reports label files without a scan and ``numTraining`` that disagrees
    with ``imagesTr/``.
    """
    from tqdm import tqdm

    dataset = Path(dataset)
    cases = list_cases(dataset)
    reports, other_labels = [], set()
    for c in tqdm(cases, desc="check", unit="case", disable=not progress):
        other = _other_label(c.label) if c.training and c.label is not None and not c.label.exists() else None
        rep = check_case(c.case_id, c.patient_id, c.image, other or c.label, c.training)
        if other is not None:  # e.g. a DICOM-SEG put there by hand: checked, but training reads c.label
            other_labels.add(other.name)
            rep.problems.append(f"{c.label}: missing; {other.name} was checked instead, but training reads "
                                f"{c.label.name}: bring the labels in with `orbitseg import` (it converts them)")
        reports.append(rep)
    from orbitseg.io.layout import read_dataset_json

    info = read_dataset_json(dataset)
    n_train = sum(c.training for c in cases)
    if info.get("numTraining") != n_train:
        reports.append(CaseCheck("(dataset.json)", "-", problems=[
            f"numTraining is {info.get('numTraining')} but {IMAGES_TR}/ holds {n_train} scans"]))
    lab_dir = dataset / LABELS_TR
    if lab_dir.is_dir():
        known = {c.label.name for c in cases if c.label is not None} | other_labels
        for f in sorted(lab_dir.iterdir()):
            if f.is_file() and f.name not in known and not f.name.startswith("."):
                reports.append(CaseCheck(f.name, "-", problems=[f"{f}: label without a scan in {IMAGES_TR}/"]))
    if not cases:
        reports.append(CaseCheck("(dataset)", "-", problems=[f"{dataset}: no scans in {IMAGES_TR}/ or {IMAGES_TS}/"]))
    return reports


def _other_label(label: Path) -> Path | None:
    """The case's label file beside ``label`` in another format orbitseg reads (a DICOM-SEG
    ``CASE.seg.dcm`` / ``CASE.dcm``, a ``.seg.nrrd``...), or None."""
    from orbitseg.io.formats import LABEL_READ_ENDINGS

    case_id, _ = split_ending(label.name)
    if not label.parent.is_dir():
        return None
    for f in sorted(label.parent.iterdir()):
        stem, ending = split_ending(f.name, LABEL_READ_ENDINGS + _SEG_ENDINGS)
        if stem == case_id and ending and f != label and f.is_file():
            return f
    return None


def format_check_table(reports: list[CaseCheck]) -> str:
    """The table `orbitseg check` prints."""
    head = f"{'case':<16} {'patient':<14} {'size':<15} {'spacing mm':<17} {'eye mL':>7} {'musc mL':>8} {'nerve mL':>8}  status"
    lines = [head, "-" * len(head)]
    for r in reports:
        size = "x".join(map(str, r.size)) if r.size else "-"
        sp = "x".join(f"{v:.2f}" for v in r.spacing) if r.spacing else "-"
        vols = [r.volumes_ml.get(LABEL_NAMES[s]) for s in STRUCTURES]
        vtxt = " ".join(f"{v:>{w}.2f}" if v is not None else f"{'-':>{w}}" for v, w in zip(vols, (7, 8, 8)))
        status = "ok" if r.usable and not r.warnings else ("UNUSABLE" if not r.usable else "warning")
        lines.append(f"{r.case_id:<16} {r.patient_id:<14} {size:<15} {sp:<17} {vtxt}  {status}")
        for p in r.problems:
            lines.append(f"    problem: {p}")
        for w in r.warnings:
            lines.append(f"    warning: {w}")
    bad = sum(not r.usable for r in reports)
    lines.append(f"{len(reports) - bad} usable, {bad} unusable")
    return "\n".join(lines)
