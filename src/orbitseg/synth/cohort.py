"""Write a synthetic cohort: the nnU-Net layout (default) or a mixed-format "scanner export".

Every patient draws its anatomy and first acquisition from its own generator,
spawned from ``np.random.SeedSequence(seed)``, so a cohort is byte-identical for
a seed whatever the number of worker processes.  Some patients get a second
(follow-up) scan of the same anatomy with a new acquisition and pose, so that
splitting by patient matters.
"""

from __future__ import annotations

import csv
import io
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from orbitseg.errors import ExistsError
from orbitseg.synth.params import (CLINICAL_VERSION, GENERATOR_VERSION, VARIETIES, PatientParams, sample_followup,
                                   sample_patient)

_CASE_RE = re.compile(r"^(?:\.)?orbit_\d{3,}")
#: raw-export formats: image ending, label ending
RAW_FORMATS = {"nifti": (".nii.gz", ".nii.gz"), "nrrd": (".nrrd", ".nrrd"), "mha": (".mha", ".nrrd"),
               "dicom": ("", ".nrrd")}


def plan_cohort(patients: int = 46, *, seed: int = 0, small: bool = False, followup_fraction: float = 0.15,
                variety: str = "default", clinical_version: str = CLINICAL_VERSION
                ) -> list[tuple[str, str, PatientParams, str]]:
    """(case_id, patient_id, params, raw format) of every scan, in order; cheap (no rendering)."""
    if variety not in VARIETIES:
        raise ValueError(f"unknown cohort variety {variety!r}; choose one of {', '.join(VARIETIES)}")
    plan = []
    children = np.random.SeedSequence(seed).spawn(patients)
    case = 0
    for p, child in enumerate(children):
        rng = np.random.default_rng(child)
        params = sample_patient(rng, small=small, variety=variety, clinical_version=clinical_version)
        scans = [params]
        if rng.random() < followup_fraction:
            scans.append(sample_followup(params, rng))
        for sp in scans:
            case += 1
            fmt = str(rng.choice(list(RAW_FORMATS), p=[0.4, 0.25, 0.15, 0.2]))
            plan.append((f"orbit_{case:03d}", f"patient_{p + 1:03d}", sp, fmt))
    return plan


def _summary(params: PatientParams) -> dict:
    a, s = params.anatomy, params.scan
    return {
        "spacing": [round(s.spacing_xy, 4), round(s.spacing_xy, 4), s.slice_thickness],
        "matrix": list(s.matrix) + [s.n_slices],
        "direction": s.direction_kind,
        "head_rotation_deg": [round(v, 2) for v in s.head_rotation],
        "noise_sigma": round(s.noise_sigma, 1),
        "globe_radius": [round(a.left.globe_radius, 2), round(a.right.globe_radius, 2)],
        "proptosis": [round(a.left.proptosis, 2), round(a.right.proptosis, 2)],
        "ted": [round(a.left.ted, 2), round(a.right.ted, 2)],
        **_clinical_summary(params),
    }


def _clinical_summary(params: PatientParams) -> dict:
    """What the clinical variant drew for a scan (nothing for the default cohort)."""
    c = params.clinical
    if c is None:
        return {}
    return {"kernel": c.kernel, "contrast": c.contrast, "age_group": c.age_group, "iol": list(c.iol),
            "silicone_oil": list(c.silicone), "floor_fracture": c.fracture, "fillings": len(c.metal),
            "fov_cut": c.fov_cut, "gantry_tilt_deg": round(c.gantry_tilt, 1)}


def _write_dicom(ct, labels, folder: Path, case_id: str, patient_id: str, overwrite: bool):
    """Write ``ct`` as a DICOM series; return ``labels`` on the grid the series reads back as.

    A DICOM series cannot store a left-handed grid (slices are ordered along
    row x column), so a reversed-slice scan comes back with its k axis flipped:
    same voxels, same physical points, another grid.  Labels exported with it
    must sit on that grid, as a viewer's export would.
    """
    from orbitseg.io.orient import canonical_geometry, from_canonical, to_canonical
    from orbitseg.io.read import read_scan
    from orbitseg.io.volume import Volume
    from orbitseg.io.write import write_dicom_series

    write_dicom_series(ct, folder, overwrite=overwrite, patient_id=patient_id, series_description=case_id,
                       series_uid=f"orbitseg-synth-{patient_id}-{case_id}")
    grid = read_scan(folder, check=False).geometry
    if not grid.differences(labels.geometry):
        return labels
    canon = to_canonical(labels)
    if canonical_geometry(grid).differences(canon.geometry):
        raise RuntimeError(f"{folder}: DICOM series grid does not hold the same voxels as the scan")
    return Volume(from_canonical(canon.array, grid), grid)


def write_tilted_dicom(params: PatientParams, folder: Path, case_id: str, patient_id: str, overwrite: bool):
    """Render ``params`` as a gantry-tilted DICOM series (``params.clinical.gantry_tilt``) in ``folder``;
    return its labels on the grid the series reads back as (``io.dicom`` resamples tilt onto an orthogonal
    grid), taken nearest from the labels rendered on the tilted slices (0 outside them)."""
    from orbitseg.io.read import read_scan
    from orbitseg.io.volume import Volume
    from orbitseg.io.write import write_dicom_series
    from orbitseg.synth.anatomy import render_tilted

    ct, labels, positions = render_tilted(params, params.clinical.gantry_tilt)
    write_dicom_series(ct, folder, overwrite=overwrite, patient_id=patient_id, series_description=case_id,
                       series_uid=f"orbitseg-synth-{patient_id}-{case_id}", positions=positions)
    grid = read_scan(folder, check=False).geometry
    # slice k of the series: origin + i * sx * row + j * sy * col + k * table step * z
    M = np.column_stack([ct.geometry.matrix[:, 0] * ct.geometry.spacing[0],
                         ct.geometry.matrix[:, 1] * ct.geometry.spacing[1], positions[1] - positions[0]])
    Minv = np.linalg.inv(M)
    nx, ny, nz = grid.size
    src = np.asarray(labels.array)
    out = np.zeros((nz, ny, nx), np.uint8)
    jj, ii = np.mgrid[:ny, :nx]
    for k in range(nz):
        ijk = np.column_stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)]).astype(float)
        idx = np.rint((grid.index_to_physical(ijk) - positions[0]) @ Minv.T).astype(int)
        ok = np.all((idx >= 0) & (idx < [src.shape[2], src.shape[1], src.shape[0]]), axis=1)
        flat = np.zeros(ii.size, np.uint8)
        flat[ok] = src[idx[ok, 2], idx[ok, 1], idx[ok, 0]]
        out[k] = flat.reshape(ny, nx)
    return Volume(out, grid)


def _render_and_write(task) -> tuple[str, str]:
    from orbitseg.io.layout import image_path, label_path
    from orbitseg.io.write import write_label, write_scan
    from orbitseg.synth.anatomy import render_patient

    case_id, patient_id, params, fmt, out, raw, overwrite = task
    out = Path(out)
    if raw and fmt == "dicom" and params.clinical is not None and params.clinical.gantry_tilt:
        labels = write_tilted_dicom(params, out / "images" / case_id, case_id, patient_id, overwrite)
        write_label(labels, out / "labels" / f"{case_id}{RAW_FORMATS[fmt][1]}", overwrite=overwrite)
        return case_id, "dicom (gantry tilt)"
    ct, labels = render_patient(params)
    if not raw:
        write_scan(ct, image_path(out, case_id), overwrite=overwrite)
        write_label(labels, label_path(out, case_id), overwrite=overwrite)
        return case_id, "nifti"
    img_end, lab_end = RAW_FORMATS[fmt]
    if fmt == "dicom":
        labels = _write_dicom(ct, labels, out / "images" / case_id, case_id, patient_id, overwrite)
    else:
        write_scan(ct, out / "images" / f"{case_id}{img_end}", overwrite=overwrite)
    write_label(labels, out / "labels" / f"{case_id}{lab_end}", overwrite=overwrite)
    return case_id, fmt


def _existing(out: Path, raw: bool) -> list[Path]:
    names = ("images", "labels", "patients.csv") if raw else ("imagesTr", "labelsTr", "dataset.json")
    return [out / n for n in names if (out / n).exists()]


def _clear_previous(out: Path, raw: bool) -> None:
    """Remove our own earlier output (files named orbit_*), nothing else."""
    import shutil

    for sub in (("images", "labels") if raw else ("imagesTr", "labelsTr")):
        d = out / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            if _CASE_RE.match(f.name):
                shutil.rmtree(f) if f.is_dir() else f.unlink()


def make_cohort(out, *, patients: int = 46, seed: int = 0, small: bool = False, workers: int | None = None,
                overwrite: bool = False, raw: bool = False, followup_fraction: float = 0.15,
                name: str = "OrbitSynth", variety: str = "default", clinical_version: str = CLINICAL_VERSION
                ) -> list[tuple[str, str]]:
    """Generate and write a synthetic cohort; returns ``[(case_id, patient_id), ...]``.

    Parameters
    ----------
    out : output folder
    patients : number of patients (some have two scans)
    seed : cohort seed; the same seed gives byte-identical arrays
    small : coarse, small grids (for tests)
    workers : processes (default ``os.cpu_count()``; 1 = no pool)
    overwrite : replace an earlier cohort in ``out``
    raw : write a mixed-format scanner export (``images/``, ``labels/``, ``patients.csv``)
        instead of the nnU-Net layout (``imagesTr/``, ``labelsTr/``, ``dataset.json``)
    followup_fraction : probability that a patient has a second scan
    variety : "default" (the cohort the shipped model was made from; byte-identical per seed as before the
        clinical variant existed) or "clinical" (:func:`orbitseg.synth.params.sample_clinical_patient`: pose,
        slices, kernels, dose, contrast, metal, age, disease, implants, fractures)
    clinical_version : the clinical variety's generator version (one of
        :data:`orbitseg.synth.params.CLINICAL_VERSIONS`; default the newest), so that an earlier clinical cohort
        can be made again as it was

    Raises
    ------
    ExistsError
        ``out`` already holds a cohort and ``overwrite`` is False.
    """
    from orbitseg.io.atomic import write_text_atomic
    from orbitseg.io.layout import make_dataset_json, write_dataset_json

    out = Path(out)
    found = _existing(out, raw)
    if found and not overwrite:
        raise ExistsError(found[0])
    if overwrite:
        _clear_previous(out, raw)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_cohort(patients, seed=seed, small=small, followup_fraction=followup_fraction, variety=variety,
                       clinical_version=clinical_version)
    tasks = [(c, p, prm, fmt, str(out), raw, overwrite) for c, p, prm, fmt in plan]
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    if workers == 1 or len(tasks) == 1:
        done = [_render_and_write(t) for t in tasks]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as ex:
            # biggest scans first keeps both workers busy to the end
            order = sorted(range(len(tasks)), key=lambda i: -_cost(plan[i][2]))
            futures = {i: ex.submit(_render_and_write, tasks[i]) for i in order}
            done = [futures[i].result() for i in range(len(tasks))]
    cases = [(c, p) for c, p, _, _ in plan]
    if raw:
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["case", "patient"])
        wr.writerows(cases)
        write_text_atomic(out / "patients.csv", buf.getvalue())
    else:
        info = make_dataset_json(
            dict(cases), name=name,
            description="Synthetic orbital CT (orbitseg.synth): eyeball, extraocular muscles, optic nerve",
            extra={"synthetic": {
                "seed": seed,
                "generator_version": GENERATOR_VERSION if variety == "default" else clinical_version,
                **({} if variety == "default" else {"variety": variety}),
                "small": small,
                "followup_fraction": followup_fraction,
                "cases": {c: {"patient": p, **_summary(prm)} for c, p, prm, _ in plan},
            }},
        )
        write_dataset_json(out, info)
    del done
    return cases


def _cost(params: PatientParams) -> float:
    s = params.scan
    return float(s.matrix[0] * s.matrix[1] * s.n_slices)


def params_json(params: PatientParams) -> dict:
    """All parameters of a scan as plain JSON data."""
    return asdict(params)
