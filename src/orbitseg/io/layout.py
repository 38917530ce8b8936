"""The nnU-Net v2 dataset layout that users already know.

::

    DATASET/
      dataset.json            channel_names, labels, numTraining, file_ending, patients
      imagesTr/{case}_0000.nii.gz
      labelsTr/{case}.nii.gz
      imagesTs/{case}_0000.nii.gz   (unlabelled scans)

``dataset.json`` also maps every case to its patient id (``"patients"``) so
that cross-validation splits keep all scans of a patient in one fold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orbitseg.constants import (
    CHANNEL_SUFFIX,
    DATASET_JSON,
    FILE_ENDING,
    IMAGES_TR,
    IMAGES_TS,
    LABEL_NAMES,
    LABELS_TR,
)
from orbitseg.errors import InputError
from orbitseg.io.atomic import write_text_atomic
from orbitseg.io.formats import split_ending


@dataclass(frozen=True)
class Case:
    """One scan of a dataset and, when labelled, its label file."""

    case_id: str
    patient_id: str
    image: Path
    label: Path | None
    training: bool  # True for imagesTr, False for imagesTs


def image_path(root: str | Path, case_id: str, *, training: bool = True, ending: str = FILE_ENDING) -> Path:
    """Path of a case's CT scan in the layout."""
    return Path(root) / (IMAGES_TR if training else IMAGES_TS) / f"{case_id}{CHANNEL_SUFFIX}{ending}"


def label_path(root: str | Path, case_id: str, *, ending: str = FILE_ENDING) -> Path:
    """Path of a case's label volume in the layout."""
    return Path(root) / LABELS_TR / f"{case_id}{ending}"


def make_dataset_json(
    patients: dict[str, str],
    *,
    name: str,
    description: str = "",
    num_training: int | None = None,
    extra: dict | None = None,
) -> dict:
    """Build the content of ``dataset.json``.

    Parameters
    ----------
    patients : case id -> patient id, for every case (training and test)
    name : dataset name
    num_training : number of labelled cases (default: all of ``patients``)
    extra : further keys to record (e.g. how a synthetic cohort was made)
    """
    info = {
        "name": name,
        "description": description,
        "channel_names": {"0": "CT"},
        "labels": {v: k for k, v in LABEL_NAMES.items()},
        "numTraining": len(patients) if num_training is None else num_training,
        "file_ending": FILE_ENDING,
        "patients": dict(sorted(patients.items())),
    }
    if extra:
        info.update(extra)
    return info


def write_dataset_json(root: str | Path, info: dict) -> Path:
    """Write ``dataset.json`` atomically (it is metadata, so it is replaced)."""
    return write_text_atomic(Path(root) / DATASET_JSON, json.dumps(info, indent=2) + "\n")


def read_dataset_json(root: str | Path) -> dict:
    """Read and sanity-check ``dataset.json``.

    Raises
    ------
    InputError
        missing folder or file, invalid JSON, or labels that are not ours.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset folder does not exist")
    path = root / DATASET_JSON
    if not path.is_file():
        raise InputError(path, "missing; a dataset needs dataset.json (see `orbitseg import`)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not valid JSON ({exc})") from None
    labels = info.get("labels")
    expected = {v: k for k, v in LABEL_NAMES.items()}
    if labels is not None and {k: int(v) for k, v in labels.items()} != expected:
        raise InputError(path, f"labels {labels} differ from orbitseg's {expected}")
    return info


def list_cases(root: str | Path) -> list[Case]:
    """Every case of a dataset, training cases first, sorted by id.

    The patient of a case comes from ``dataset.json["patients"]``; a case not
    listed there is its own patient.
    """
    root = Path(root)
    info = read_dataset_json(root)
    ending = info.get("file_ending", FILE_ENDING)
    patients = info.get("patients", {})
    cases = []
    for folder, training in ((IMAGES_TR, True), (IMAGES_TS, False)):
        d = root / folder
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            stem, end = split_ending(f.name)
            if end != ending or not stem.endswith(CHANNEL_SUFFIX):
                continue
            case_id = stem[: -len(CHANNEL_SUFFIX)]
            lab = label_path(root, case_id, ending=ending) if training else None
            cases.append(Case(case_id, str(patients.get(case_id, case_id)), f, lab, training))
    return cases
