"""``orbitseg preprocess``: every case of a dataset, one at a time, resumable.

Writes, for each orbit of each labelled case::

    DATASET/VOIs/{case}_{side}_0000.nii.gz      cropped scan (overlays the original in any viewer)
    DATASET/VOIs/{case}_{side}.nii.gz           cropped labels
    DATASET/preprocessed/scans/{case}_{side}.nii.gz   sequences: (size, size, seq_len, n) windowed [0, 1]
    DATASET/preprocessed/masks/{case}_{side}.nii.gz   centre-slice targets: (size, size, n) labels
    DATASET/preprocessed/store/{case}_{side}_image.npy      (n, size, size) float16, memory-mappable
    DATASET/preprocessed/store/{case}_{side}_fractions.npy  (n, C-1, size, size) uint8 soft labels x 255
    DATASET/preprocessed/manifest.json          config + patient, side, crop box (mm and index), spacing per VOI

Sequences are stored once as slices (``store``); a sequence is the slice
indices :func:`orbitseg.preprocess.fit.sequence_indices` gives, so every
slice of a VOI is a centre exactly once, labelled or not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from orbitseg.constants import CHANNEL_SUFFIX, FILE_ENDING
from orbitseg.errors import InputError
from orbitseg.io.atomic import atomic_path, write_text_atomic
from orbitseg.io.layout import list_cases
from orbitseg.preprocess.fit import sequence_indices
from orbitseg.preprocess.pipeline import PreparedVOI, PreprocessConfig, prepare_scan

MANIFEST = "manifest.json"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


#: the paper's preprocessed sequences and masks are NIfTI files written with nibabel, whatever FILE_ENDING is
_NIFTI = ".nii.gz"


def _save_nifti(path: Path, array: np.ndarray, zooms: tuple[float, ...]) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, np.diag(list(zooms[:3]) + [1.0]))
    img.header.set_zooms(zooms)
    with atomic_path(path, overwrite=True) as tmp:
        nib.save(img, str(tmp))


def _write_voi(root: Path, out: Path, key: str, prep: PreparedVOI, config: PreprocessConfig) -> dict:
    from orbitseg.io.write import write_label, write_scan

    write_scan(prep.voi, root / "VOIs" / f"{key}{CHANNEL_SUFFIX}{FILE_ENDING}", overwrite=True)
    write_label(prep.voi_labels, root / "VOIs" / f"{key}{FILE_ENDING}", overwrite=True)
    n = prep.images.shape[0]
    seq = sequence_indices(n, config.seq_len)
    (py, px), sz = prep.fit.pixel_spacing, prep.voi.spacing[2]
    # NIfTI axes (x=column, y=row, ...): transpose from (n, [t,] row, col)
    _save_nifti(out / "scans" / f"{key}{_NIFTI}",
                np.transpose(prep.images[seq], (3, 2, 1, 0)).astype(np.float32), (px, py, sz, 1.0))
    hard = prep.fractions.argmax(axis=1).astype(np.uint8)
    _save_nifti(out / "masks" / f"{key}{_NIFTI}", np.transpose(hard, (2, 1, 0)), (px, py, sz))
    _save_npy(out / "store" / f"{key}_image.npy", prep.images.astype(np.float16))
    _save_npy(out / "store" / f"{key}_fractions.npy",
              np.round(prep.fractions[:, 1:] * 255).astype(np.uint8))
    return {
        "key": key,
        "side": prep.box.side,
        "n_slices": int(n),
        "voi_spacing": list(prep.voi.spacing),
        "box": prep.box.to_dict(),
        "fit": prep.fit.to_dict(),
        "labelled_slices": int((hard > 0).reshape(n, -1).any(axis=1).sum()),
    }


def labels_outside_vois(labels_canonical: np.ndarray, preps: list[PreparedVOI]) -> int:
    """Number of labelled voxels (canonical grid) not covered by any VOI."""
    covered = np.zeros(labels_canonical.shape, dtype=bool)
    for p in preps:
        covered[p.box.slices()] = True
    return int(((labels_canonical > 0) & ~covered).sum())


def preprocess_case(root: Path, out: Path, case, config: PreprocessConfig) -> dict:
    """Preprocess one labelled case; returns its manifest entry."""
    from orbitseg.io.orient import to_canonical
    from orbitseg.io.read import read_label, read_scan

    scan = read_scan(case.image)
    labels = read_label(case.label, reference=scan, purpose="train")
    preps = prepare_scan(scan, config, labels)
    outside = labels_outside_vois(to_canonical(labels).array, preps)
    vois = [_write_voi(root, out, f"{case.case_id}_{p.box.side}", p, config) for p in preps]
    return {
        "case": case.case_id,
        "patient": case.patient_id,
        "scan": str(case.image.relative_to(root)),
        "scan_spacing": list(scan.spacing),
        "labelled_voxels_outside_vois": outside,
        "vois": vois,
    }


def _worker(args):
    root, out, case, config = args
    try:
        return case.case_id, preprocess_case(root, out, case, config), None
    except InputError as exc:
        return case.case_id, None, str(exc)


def preprocess_dataset(
    dataset: str | Path,
    config: PreprocessConfig = PreprocessConfig(),
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Preprocess every labelled case of ``dataset``; resumable.

    Cases already in the manifest (with the same config) are skipped unless
    ``overwrite``.  The manifest is rewritten atomically after each case, so
    an interruption loses at most the case in progress.

    Returns
    -------
    the manifest (dict)

    Raises
    ------
    InputError
        the dataset is missing, a previous run used another config (pass
        ``overwrite``), or some cases failed (the others are kept).
    """
    from tqdm import tqdm

    root = Path(dataset)
    cases = [c for c in list_cases(root) if c.training]
    if not cases:
        raise InputError(root, "no labelled cases in imagesTr/ to preprocess")
    out = root / "preprocessed"
    mpath = out / MANIFEST
    manifest = {"config": config.to_dict(), "cases": {}}
    if mpath.exists() and not overwrite:
        old = json.loads(mpath.read_text())
        was = PreprocessConfig.from_dict(old.get("config", {})).to_dict()  # older manifests lack newer keys
        differ = [f"{k} {was[k]} (asked {v})" for k, v in manifest["config"].items() if was.get(k) != v]
        if differ:
            raise InputError(mpath, f"was made with another configuration ({', '.join(differ)}); "
                                    "pass --overwrite to redo it")
        old["config"] = manifest["config"]
        manifest = old
    todo = [c for c in cases if c.case_id not in manifest["cases"]]
    failures = []
    jobs = [(root, out, c, config) for c in todo]
    bar = tqdm(total=len(cases), initial=len(cases) - len(todo), desc="preprocess", unit="case",
               disable=not progress)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, maxtasksperchild=4) as pool:
            results = pool.imap_unordered(_worker, jobs)
            _collect(results, manifest, mpath, failures, bar)
    else:
        _collect(map(_worker, jobs), manifest, mpath, failures, bar)
    bar.close()
    if failures:
        raise InputError(root, f"{len(failures)} case(s) failed (the others are saved):\n  " + "\n  ".join(failures))
    return manifest


def _collect(results, manifest, mpath, failures, bar) -> None:
    for case_id, entry, err in results:
        if err:
            failures.append(err)
        else:
            manifest["cases"][case_id] = entry
            manifest["cases"] = dict(sorted(manifest["cases"].items()))
            write_text_atomic(mpath, json.dumps(manifest, indent=1) + "\n")
        bar.update(1)
