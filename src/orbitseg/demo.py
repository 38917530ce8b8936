"""``orbitseg demo``: the main job, end to end, on bundled synthetic data.

1. synthesise a small cohort as a scanner-like export in mixed formats
   (DICOM series, NRRD, MetaImage, NIfTI);
2. import it into the nnU-Net layout and check every scan/label pair;
3. render a picture of every case;
4. preprocess (VOI per orbit, window, slice sequences);
5. fine-tune the shipped model on the cohort with 4-fold cross-validation by
   patient ("initialize with pre-trained parameters", as the paper does) for a
   few epochs and evaluate every test fold -- the demo cohort's seed differs
   from the one the shipped model was trained on, so its patients are new;
   write the HTML report of that run;
6. segment a fresh synthetic patient (a seed no cohort uses) with the shipped
   model, measure its orbits and score it against its ground truth.
"""

from __future__ import annotations

import time
from pathlib import Path

from orbitseg.constants import FILE_ENDING
from orbitseg.errors import InputError

#: the demo cohort's seed: not 0, the seed of the cohort the shipped model was trained on
DEMO_SEED = 7
#: seed of the "new patient" the shipped model segments: not the demo cohort's, not the training cohort's
FRESH_SEED = 20261124


def run_demo(
    out: str | Path,
    *,
    patients: int = 6,
    seed: int = DEMO_SEED,
    small: bool = False,
    epochs: int = 4,
    overwrite: bool = False,
) -> Path:
    """Run the demo into ``out``; returns the output folder."""
    import numpy as np

    from orbitseg.evaluate.folders import evaluate_folders, format_summary_table
    from orbitseg.evaluate.measure import MEASUREMENTS_CSV
    from orbitseg.io.dataset import check_dataset, format_check_table, import_dataset
    from orbitseg.io.layout import list_cases
    from orbitseg.io.read import read_label, read_scan
    from orbitseg.io.write import write_label, write_scan
    from orbitseg.pretrained import shipped_model_dir
    from orbitseg.runs.checkpoint import preprocess_of
    from orbitseg.runs.layout import fold_file_name
    from orbitseg.predict.run import predict_inputs
    from orbitseg.preprocess.dataset import preprocess_dataset
    from orbitseg.synth import make_cohort, render_patient, sample_patient
    from orbitseg.report import write_report
    from orbitseg.train import train
    from orbitseg.report.pictures import render_views

    out = Path(out)
    t0 = time.perf_counter()
    raw, dataset, pictures = out / "raw", out / "dataset", out / "pictures"
    print(f"[1/6] synthesising {patients} patients (seed {seed}) as a mixed-format export in {raw}")
    make_cohort(raw, patients=patients, seed=seed, small=small, raw=True, overwrite=overwrite)
    print(f"[2/6] importing into the nnU-Net layout and checking every pair: {dataset}")
    import_dataset(raw, dataset, overwrite=overwrite, name="orbitseg_demo")
    reports = check_dataset(dataset)
    print(format_check_table(reports))
    if not all(r.usable for r in reports):
        raise InputError(dataset, "the demo dataset has unusable cases (see the table above)")
    print(f"[3/6] rendering pictures into {pictures}")
    pictures.mkdir(parents=True, exist_ok=True)
    for case in list_cases(dataset):
        scan = read_scan(case.image)
        labels = read_label(case.label, reference=scan) if case.label else None
        render_views(scan, labels, pictures / f"{case.case_id}.png", title=f"{case.case_id} ({case.patient_id})")
    shipped = shipped_model_dir() / fold_file_name(0)
    # fine-tuning starts from the shipped weights, so the slices are made as they were for it
    pp = preprocess_of(shipped)
    print(f"[4/6] preprocessing as for the shipped model: one VOI per orbit, window {pp.level:g}/{pp.width:g} HU, "
          f"{pp.seq_len}-slice sequences at {pp.size} x {pp.size} ({pp.aspect})")
    preprocess_dataset(dataset, pp, overwrite=overwrite)

    print(f"[5/6] 4-fold cross-validation by patient: fine-tuning the shipped model, {epochs} epochs per fold")
    runs = train(dataset, "all", epochs=epochs, seed=seed, overwrite=overwrite,
                 init_from=shipped, overrides={"surface": False})
    report = write_report(runs[0].parent)
    print(f"[6/6] segmenting a new synthetic patient (seed {FRESH_SEED}) with the shipped model")
    fresh = out / "new_patient"
    ct, truth = render_patient(sample_patient(np.random.default_rng(FRESH_SEED), small=small))
    write_scan(ct, fresh / "scan" / f"new_patient{FILE_ENDING}", overwrite=overwrite)
    write_label(truth, fresh / "truth" / f"new_patient{FILE_ENDING}", reference=ct, overwrite=overwrite)
    _, problems = predict_inputs(fresh / "scan", fresh / "prediction", overwrite=overwrite, progress=False)
    if problems:
        raise InputError(fresh, "; ".join(problems))
    pred = read_label(fresh / "prediction" / f"new_patient{FILE_ENDING}", reference=ct)
    render_views(ct, pred, pictures / "new_patient_prediction.png", title="new patient: shipped model")
    _, summary = evaluate_folders(fresh / "prediction", fresh / "truth", fresh)
    print(format_summary_table(summary))
    print((fresh / "prediction" / MEASUREMENTS_CSV).read_text())
    print(f"done in {time.perf_counter() - t0:.0f} s")
    print(f"  cross-validation metrics: {dataset / 'runs' / 'default' / 'metrics'}")
    print(f"  report (open in a browser): {report}")
    print(f"  new patient: {fresh / 'prediction'} (picture {pictures / 'new_patient_prediction.png'})")
    return out
