"""``orbitseg demo``: the main job, end to end, on bundled synthetic data.

Grows as the pipeline grows.  Today: synthesise a small cohort as a
scanner-like export in mixed formats (DICOM series, NRRD, MetaImage, NIfTI),
import it into the dataset layout, check every pair, and render a picture of
every case.
"""

from __future__ import annotations

import time
from pathlib import Path

from orbitseg.errors import InputError


def run_demo(out: str | Path, *, patients: int = 6, seed: int = 0, small: bool = False, overwrite: bool = False) -> Path:
    """Run the demo into ``out``; returns the folder of pictures."""
    from orbitseg.io.dataset import check_dataset, format_check_table, import_dataset
    from orbitseg.io.layout import list_cases
    from orbitseg.io.read import read_label, read_scan
    from orbitseg.synth import make_cohort
    from orbitseg.viz import render_views

    out = Path(out)
    t0 = time.perf_counter()
    raw, dataset, pictures = out / "raw", out / "dataset", out / "pictures"
    print(f"[1/4] synthesising {patients} patients (seed {seed}) as a mixed-format export in {raw}")
    make_cohort(raw, patients=patients, seed=seed, small=small, raw=True, overwrite=overwrite)
    print(f"[2/4] importing into the nnU-Net layout: {dataset}")
    import_dataset(raw, dataset, overwrite=overwrite, name="orbitseg_demo")
    print("[3/4] checking every scan/label pair")
    reports = check_dataset(dataset)
    print(format_check_table(reports))
    if not all(r.usable for r in reports):
        raise InputError(dataset, "the demo dataset has unusable cases (see the table above)")
    print(f"[4/4] rendering pictures into {pictures}")
    pictures.mkdir(parents=True, exist_ok=True)
    for case in list_cases(dataset):
        scan = read_scan(case.image)
        labels = read_label(case.label, reference=scan) if case.label else None
        render_views(scan, labels, pictures / f"{case.case_id}.png", title=f"{case.case_id} ({case.patient_id})")
    print(f"done in {time.perf_counter() - t0:.0f} s; pictures: {pictures.resolve()}")
    return pictures
