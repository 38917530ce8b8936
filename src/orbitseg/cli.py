"""``orbitseg`` command line: one verb per step, each parsing arguments and calling a library function.

Heavy modules (SimpleITK, torch, matplotlib) are imported inside the commands
so that ``orbitseg --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: commands that own the machine while they run: OpenMP threads may spin (training is 8 % faster that way)
_SPINNING_OK = {"train"}


def _probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text}")
    return v


def _cmd_synth(args: argparse.Namespace) -> int:
    from orbitseg.synth import make_cohort

    cases = make_cohort(
        args.out, patients=args.patients, seed=args.seed, small=args.small,
        workers=args.workers, overwrite=args.overwrite, raw=args.raw, variety=args.variety,
        clinical_version=args.generator_version,
    )
    n_pat = len({p for _, p in cases})
    print(f"wrote {len(cases)} scans of {n_pat} patients to {args.out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from orbitseg.io.dataset import import_dataset

    cases = import_dataset(args.src, args.dataset, overwrite=args.overwrite, add=args.add, prefix=args.prefix,
                           series_uid=args.series, name=args.name)
    print(f"{'added' if args.add else 'imported'} {len(cases)} scans {'to' if args.add else 'into'} {args.dataset}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from orbitseg.io.dataset import check_dataset, format_check_table

    reports = check_dataset(args.dataset)
    print(format_check_table(reports))
    return 0 if all(r.usable for r in reports) else 1


def _cmd_show(args: argparse.Namespace) -> int:
    from orbitseg.errors import ExistsError
    from orbitseg.io.read import read_label, read_scan
    from orbitseg.report.pictures import render_views

    if args.output.exists() and not args.overwrite:  # refused before the scan is read
        raise ExistsError(args.output)
    scan = read_scan(args.scan, series_uid=args.series)
    labels = read_label(args.labels, reference=scan) if args.labels else None
    level, width = args.window
    out = render_views(scan, labels, args.output, level=level, width=width, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from orbitseg.preprocess.dataset import preprocess_dataset
    from orbitseg.preprocess.pipeline import PreprocessConfig

    if args.like is not None:
        from orbitseg.runs.checkpoint import preprocess_of
        from orbitseg.runs.layout import resolve_model

        config = preprocess_of(resolve_model(args.like))
        print(f"preprocessing of {args.like}: size {config.size}, seq_len {config.seq_len}, window "
              f"{config.level:g}/{config.width:g}, aspect {config.aspect}")
    else:
        config = PreprocessConfig(size=args.size, seq_len=args.seq_len, level=args.level, width=args.width,
                                  aspect=args.aspect)
    manifest = preprocess_dataset(args.dataset, config, workers=args.workers, overwrite=args.overwrite)
    n_voi = sum(len(c["vois"]) for c in manifest["cases"].values())
    print(f"{len(manifest['cases'])} cases, {n_voi} orbit VOIs in {args.dataset / 'preprocessed'}")
    return 0


def _train_overrides(args: argparse.Namespace) -> dict | None:
    """The loop options the train flags set (only those that differ from the defaults, as run.json records)."""
    out: dict = {}
    if args.precision != "float32":
        out["precision"] = args.precision
    if args.sample_by_thickness:
        out["sampler_thickness"] = True
    if args.thick_slabs:
        out["thick_slabs"] = args.thick_slabs
    return out or None


def _cmd_train(args: argparse.Namespace) -> int:
    from orbitseg.runs.layout import resolve_model
    from orbitseg.train import train

    runs = train(
        args.dataset, args.fold, preset=args.preset, epochs=args.epochs, batch_size=args.batch_size,
        resume=args.resume, overwrite=args.overwrite, device=args.device,
        init_from=None if args.init_from is None else resolve_model(args.init_from),
        distill_from=None if args.distill_from is None else resolve_model(args.distill_from),
        seed=args.seed, split_seed=args.split_seed, workers=args.workers, out=args.out,
        overrides=_train_overrides(args),
        extend_splits=args.extend_splits, overwrite_splits=args.overwrite_splits,
    )
    for r in runs:
        print(f"run folder: {r}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from orbitseg.evaluate.measure import MEASUREMENTS_CSV
    from orbitseg.predict.run import predict_inputs

    rows, problems = predict_inputs(
        args.input, args.output, model=args.model, folds=args.folds, device=args.device,
        ending=args.format, overwrite=args.overwrite, series_uid=args.series, postprocess=not args.no_postprocess,
        mirror=args.mirror, precision=args.precision, engine=args.engine, resume=args.resume,
    )
    n = len({r["case"] for r in rows})
    print(f"segmented {n} scan(s) into {args.output}; measurements in {args.output / MEASUREMENTS_CSV}" if n
          else "segmented no scan: nothing was written")
    for p in problems:
        print(f"orbitseg predict: refused: {p}", file=sys.stderr)
    return 1 if problems else 0


def _cmd_pacs(args: argparse.Namespace) -> int:
    from orbitseg.predict.pacs import segment_studies

    results, problems = segment_studies(
        args.url, None if args.new else args.study, since=args.since, series_uid=args.series, model=args.model,
        folds=args.folds, device=args.device, precision=args.precision, engine=args.engine, mirror=args.mirror,
        postprocess=not args.no_postprocess, config=args.config, ca_bundle=args.ca_bundle)
    for r in results:
        print(r.describe())
    for p in problems:
        print(f"orbitseg pacs: refused: {p}", file=sys.stderr)
    return 1 if problems else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from orbitseg.evaluate.folders import evaluate_folders, format_summary_table

    out = args.output or args.pred_dir.parent
    rows, summary = evaluate_folders(args.pred_dir, args.truth_dir, out, surface=not args.no_surface, progress=True)
    print(format_summary_table(summary))
    print(f"{len(rows)} cases; metrics in {out / 'metrics'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from orbitseg.report import write_report

    out = write_report(args.run_dir, args.output, dataset=args.dataset)
    print(f"wrote {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from orbitseg.constants import FULL_FOLD
    from orbitseg.train.export import add_full_network, describe_export, export_model

    if args.add_full:
        from orbitseg.runs.layout import resolve_model

        out = add_full_network(resolve_model(args.run_dir), args.output, overwrite=args.overwrite,
                               dataset=args.dataset, average_with=args.average_with,
                               average_weight=args.average_weight)
        print(describe_export(out))
        print(f"use it with: orbitseg predict SCANS OUT --model {out} --folds {FULL_FOLD}")
        return 0
    out = export_model(args.run_dir, args.output, name=args.name, dataset=args.dataset, overwrite=args.overwrite,
                       full=True if args.full else None, average_with=args.average_with,
                       average_weight=args.average_weight)
    print(describe_export(out))
    print(f"use it with: orbitseg predict SCANS OUT --model {out}")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from orbitseg.app.server import serve
    from orbitseg.pretrained import shipped_model_dir

    serve(args.dataset, host=args.host, port=args.port, model=args.model or shipped_model_dir(), folds=args.folds)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from orbitseg.demo import run_demo

    run_demo(args.out, patients=args.patients, seed=args.seed, small=args.small, epochs=args.epochs,
             overwrite=args.overwrite)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    from orbitseg import __version__
    # light modules only: parsing must not import torch, SimpleITK or NumPy
    from orbitseg.constants import (AVERAGE_WEIGHT, CLINICAL_VERSIONS, DEFAULT_PRESET, DICOM_OUTPUTS, ENGINES,
                                    FILE_ENDING, FIT_ASPECT, FIT_ASPECTS, FULL_FOLD, INPUT_SIZE, N_FOLDS, PRECISIONS,
                                    PRESET_NAMES, SEQ_LEN, TRAIN_PRECISIONS, VARIETIES, WINDOW_LEVEL, WINDOW_WIDTH)
    from orbitseg.demo import DEMO_SEED
    from orbitseg.io.formats import FORMATS, LABEL_WRITE_ENDINGS

    p = argparse.ArgumentParser(
        prog="orbitseg",
        description="Orbital CT segmentation: eyeball, extraocular muscles, optic nerve.",
    )
    p.add_argument("--version", action="version", version=f"orbitseg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("synth", help="make a synthetic orbital CT cohort (the bundled default data)")
    s.add_argument("out", type=Path, help="output folder (a dataset, or a raw export with --raw)")
    s.add_argument("--patients", type=int, default=46, help="number of patients (default 46, as in the paper)")
    s.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same cohort")
    s.add_argument("--small", action="store_true", help="coarse, fast variant (for tests and quick looks)")
    s.add_argument("--variety", choices=VARIETIES, default="default",
                   help="default: the cohort the shipped model was made from (same seed, same bytes); clinical: "
                        "the variety of clinical head CT (pose, 0.5-5 mm slices, kernels, dose, contrast, metal, "
                        "children, thyroid eye disease, lens implants, silicone oil, floor fractures)")
    s.add_argument("--generator-version", choices=CLINICAL_VERSIONS, default=CLINICAL_VERSIONS[-1],
                   help="the clinical variety's generator version (default the newest; an earlier one makes an "
                        "earlier cohort again as it was, e.g. for a model's recreate commands)")
    s.add_argument("--raw", action="store_true",
                   help="write a scanner-like export in mixed formats (DICOM, NRRD, MHA, NIfTI) for `orbitseg import`")
    s.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("import", help="bring scans and labels (any format, DICOM series) into a dataset")
    s.add_argument("src", type=Path, help="folder with images/ and labels/, scans beside *_label files, or a dataset "
                                          "(dataset.json + imagesTr/: its patients kept)")
    s.add_argument("dataset", type=Path, help="dataset folder to create (imagesTr/ labelsTr/ dataset.json)")
    s.add_argument("--series", default=None, help="SeriesInstanceUID to take when a DICOM folder holds several")
    s.add_argument("--name", default=None, help="dataset name recorded in dataset.json")
    into = s.add_mutually_exclusive_group()
    into.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    into.add_argument("--add", action="store_true",
                      help="add the scans to an existing dataset (e.g. another site's beside yours; then `orbitseg "
                           "train --extend-splits` keeps its folds)")
    s.add_argument("--prefix", default="",
                   help="put before every added case and patient id (e.g. site2_), so two sources' names stay apart")
    s.set_defaults(func=_cmd_import)

    s = sub.add_parser("check", help="validate every scan/label pair of a dataset and print a table")
    s.add_argument("dataset", type=Path)
    s.set_defaults(func=_cmd_check)

    s = sub.add_parser("show", help="render axial/coronal/sagittal views with labels overlaid")
    s.add_argument("scan", type=Path, help="scan file or DICOM series folder")
    s.add_argument("labels", type=Path, nargs="?", default=None, help="label volume on the scan's grid")
    s.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    s.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    s.add_argument("--series", default=None, help="SeriesInstanceUID when a DICOM folder holds several")
    s.add_argument("--window", type=float, nargs=2, metavar=("LEVEL", "WIDTH"), default=(WINDOW_LEVEL, WINDOW_WIDTH),
                   help=f"display window in HU (default: the paper's {WINDOW_LEVEL:g} {WINDOW_WIDTH:g})")
    s.set_defaults(func=_cmd_show)

    s = sub.add_parser("preprocess", help="crop each orbit's VOI, window, build slice sequences")
    s.add_argument("dataset", type=Path)
    s.add_argument("--size", type=int, default=INPUT_SIZE, help=f"network input size in pixels (default {INPUT_SIZE})")
    s.add_argument("--aspect", choices=FIT_ASPECTS, default=FIT_ASPECT,
                   help="fit each slice into size x size filling both axes (stretch: finer pixels across the "
                        f"orbit) or keeping its aspect ratio (pad: square pixels); default {FIT_ASPECT}")
    s.add_argument("--seq-len", type=int, default=SEQ_LEN, help=f"slices per sequence, odd (default {SEQ_LEN})")
    s.add_argument("--level", type=float, default=WINDOW_LEVEL, help=f"window level HU (default {WINDOW_LEVEL:g})")
    s.add_argument("--width", type=float, default=WINDOW_WIDTH, help=f"window width HU (default {WINDOW_WIDTH:g})")
    s.add_argument("--like", type=Path, default=None, metavar="MODEL",
                   help="take every setting above from a model, run folder or checkpoint, or `shipped` (what "
                        "fine-tuning it with `orbitseg train --init-from MODEL` needs)")
    s.add_argument("--workers", type=int, default=1, help="parallel processes (each holds one case)")
    s.add_argument("--overwrite", action="store_true", help="redo cases already preprocessed")
    s.set_defaults(func=_cmd_preprocess)

    s = sub.add_parser("train", help="train SEQ-UNET with 4-fold cross-validation by patient")
    s.add_argument("dataset", type=Path, help="a preprocessed dataset (run `orbitseg preprocess` first)")
    s.add_argument("--fold", default="all", choices=[*map(str, range(N_FOLDS)), "all", FULL_FOLD],
                   help=f"fold to train (default all: the {N_FOLDS} cross-validation folds); {FULL_FOLD}: one model "
                        "on every labelled case, without validation or test (nnU-Net's -f all), in RUNS/PRESET/full")
    s.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESET_NAMES,
                   help="default: CPU-sized improved SEQ-UNET; paper: the authors' settings; unet2d: the default "
                        "without its LSTMs (ablation)")
    s.add_argument("--epochs", type=int, default=None, help="epochs (default: the preset's; paper 500)")
    s.add_argument("--batch-size", type=int, default=None, help="sequences per batch (default: the preset's; 32)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run where it stopped")
    s.add_argument("--overwrite", action="store_true", help="start an existing run folder afresh")
    s.add_argument("--init-from", type=Path, default=None,
                   help="initialise from a compatible checkpoint, or from a model or run folder (`shipped`: the model "
                        "shipped with orbitseg): each fold from that folder's own fold (refused if it saw one of the "
                        "fold's test cases)")
    grown = s.add_mutually_exclusive_group()
    grown.add_argument("--extend-splits", action="store_true",
                       help="the dataset gained cases since its splits.json was made: keep every known patient's "
                            "fold and role and deal only the new patients (a model trained on the old split can then "
                            "seed each fold with --init-from)")
    grown.add_argument("--overwrite-splits", action="store_true",
                       help="deal all patients into new folds (runs made with the old split no longer match)")
    s.add_argument("--distill-from", type=Path, default=None,
                   help="also learn from this network's probabilities (knowledge distillation): a checkpoint, or a "
                        "model or run folder (`shipped`) whose fold k teaches fold k (refused if it saw one of the "
                        "fold's test cases; --fold full learns from the mean of all its folds), e.g. --preset fast "
                        "--distill-from shipped")
    s.add_argument("--device", default="cpu", help="cpu or cuda (multi-GPU: see `orbitseg.train.loop`)")
    s.add_argument("--seed", type=int, default=0, help="random seed (recorded in the run folder)")
    s.add_argument("--split-seed", type=int, default=None, metavar="SEED",
                   help="seed of DATASET/splits.json when it differs from --seed: the same folds trained again "
                        "with other weights, draws and augmentation (default: --seed)")
    s.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    s.add_argument("--out", type=Path, default=None, help="run folder (default DATASET/runs/PRESET)")
    s.add_argument("--precision", default="float32", choices=TRAIN_PRECISIONS,
                   help="arithmetic of the training forward pass: bfloat16 autocast is faster on a CPU that computes "
                        "it in hardware (about 1.9x with AMX, 1.2x with AVX512-BF16 alone); loss, weights and "
                        "validation stay float32")
    s.add_argument("--sample-by-thickness", action="store_true",
                   help="draw training slices in proportion to their thickness, so a case counts by the anatomy it "
                        "covers, not by its number of slices (thick-slice scans are otherwise rare in training)")
    s.add_argument("--thick-slabs", type=_probability, default=0.0, metavar="P",
                   help="with probability P a training item of a thin-slice scan comes as 3-5.5 mm slices made from "
                        "its own (a slice profile with tails, labels as the slab's fractions), so one model learns "
                        "thick clinical scans from thin labelled ones (default 0: never)")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("predict", help="segment new scans with a trained model (labels in each scan's geometry)")
    s.add_argument("input", type=Path, help="a scan file, a DICOM series folder, or a folder of either")
    s.add_argument("output", type=Path, help="folder for one label file per scan and measurements.csv")
    s.add_argument("--model", type=Path, default=None,
                   help="a model folder (`orbitseg export`), a cross-validation run folder (ensembles its folds; "
                        "a run or model with only a full network: that network) or a checkpoint file")
    s.add_argument("--folds", default="all",
                   help=f"folds of a run or model to ensemble: all, or e.g. 0,2; {FULL_FOLD}: its network trained on "
                        f"every case (`train --fold {FULL_FOLD}`), taken by all only where there are no folds (the two "
                        "are never averaged)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    segments = next(e for e in LABEL_WRITE_ENDINGS if FORMATS[e].segments)
    s.add_argument("--format", default=[FILE_ENDING], nargs="+", choices=(*LABEL_WRITE_ENDINGS, *DICOM_OUTPUTS),
                   help=f"output format(s), one or several (default {FILE_ENDING}; {segments} opens as segments in "
                        "3D Slicer; dicom-seg / rtstruct: DICOM objects referencing a DICOM series input, for a PACS "
                        "viewer or a planning system)")
    s.add_argument("--series", default=None, help="SeriesInstanceUID when a DICOM folder holds several")
    existing = s.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing label files")
    existing.add_argument("--resume", action="store_true",
                          help="continue an interrupted run: keep (and measure) label files already in OUTPUT")
    s.add_argument("--no-postprocess", action="store_true",
                   help="write the network's labels as they are, without the connected-component clean-up "
                        "chosen on the model's validation cases")
    s.add_argument("--mirror", action="store_true",
                   help="also predict the left-right mirrored scan and average (test-time augmentation: about "
                        "twice the network time; with the shipped model on 28 new synthetic patients Dice +0.000 / "
                        "+0.001 / +0.001 for eyeball / muscles / nerve)")
    s.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="network arithmetic: auto (default) is bfloat16 on a CPU that computes it in hardware "
                        "(AMX or AVX512-BF16; about twice as fast) and float32 elsewhere")
    s.add_argument("--engine", default="auto", choices=ENGINES,
                   help="inference engine: auto (default) runs the fastest of PyTorch, ONNX Runtime and OpenVINO "
                        "on this machine (measured once, remembered); torch is the reference; onnx computes in "
                        "float32, openvino in --precision")
    s.set_defaults(func=_cmd_predict)

    s = sub.add_parser("pacs", help="segment a study's head CT fetched from a PACS over DICOMweb and store the "
                                    "DICOM-SEG back (credentials: ORBITSEG_DICOMWEB_USER / _PASSWORD or _TOKEN)")
    s.add_argument("url", help="the DICOMweb root, e.g. https://pacs.example.org/dicom-web (no credentials in it)")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", nargs="+", help="StudyInstanceUID(s)")
    which.add_argument("--new", action="store_true",
                       help="every study with a CT (from --since) whose DICOM-SEG by this model is not stored yet")
    s.add_argument("--since", default=None, help="with --new: studies dated YYYYMMDD or later")
    s.add_argument("--series", default=None, help="SeriesInstanceUID of the CT when the (one) study holds several")
    s.add_argument("--model", type=Path, default=None, help="as for predict (default: the shipped model)")
    s.add_argument("--folds", default="all", help="as for predict")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--precision", default="auto", choices=PRECISIONS, help="as for predict")
    s.add_argument("--engine", default="auto", choices=ENGINES, help="as for predict")
    s.add_argument("--mirror", action="store_true", help="as for predict")
    s.add_argument("--no-postprocess", action="store_true", help="as for predict")
    s.add_argument("--config", type=Path, default=None,
                   help="JSON file with user/password or token (and ca_bundle), readable by you alone "
                        "(default: $ORBITSEG_DICOMWEB_CONFIG); the environment variables win")
    s.add_argument("--ca-bundle", type=Path, default=None,
                   help="CA certificates (PEM) to verify the server's TLS certificate (verification is always on)")
    s.set_defaults(func=_cmd_pacs)

    s = sub.add_parser("evaluate", help="score a folder of predicted labels against a folder of ground truth")
    s.add_argument("pred_dir", type=Path, help="predicted label files")
    s.add_argument("truth_dir", type=Path, help="ground-truth label files (matched by case id)")
    s.add_argument("-o", "--output", type=Path, default=None,
                   help="folder that receives metrics/ (default: the parent of PRED_DIR)")
    s.add_argument("--no-surface", action="store_true", help="skip HD95 and surface distance (faster)")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("report", help="write one self-contained HTML report of a cross-validation run")
    s.add_argument("run_dir", type=Path, help="a run folder (e.g. DATASET/runs/default) or one fold of it")
    s.add_argument("-o", "--output", type=Path, default=None, help="HTML file (default RUN_DIR/report.html)")
    s.add_argument("--dataset", type=Path, default=None, help="dataset folder, if the run has moved")
    s.set_defaults(func=_cmd_report)

    s = sub.add_parser("export", help="package a cross-validation run as a compact model folder (float16 folds, "
                                      "post-processing, re-scored CV metrics, model.json), or its full model")
    s.add_argument("run_dir", type=Path, help="the run folder `orbitseg train --fold all` wrote (holds fold_*/; "
                                              f"or {FULL_FOLD}/, or is the folder `--fold {FULL_FOLD}` wrote)")
    s.add_argument("output", type=Path, help="model folder to create (give it to `orbitseg predict --model`)")
    s.add_argument("--name", default=None, help="model name recorded in model.json (default: the folder's name)")
    s.add_argument("--dataset", type=Path, default=None,
                   help="the run's dataset, if it has moved (used to re-score the float16 folds)")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--full", action="store_true",
                       help=f"export the run's {FULL_FOLD} model (one network on every labelled case; no metric of its "
                            "own, its folds' cross-validation recorded as the recipe's estimate) instead of its folds; "
                            f"a run holding only {FULL_FOLD}/ exports it without this option")
    which.add_argument("--add-full", action="store_true",
                       help=f"add the run's {FULL_FOLD} network to the existing fold model folder OUTPUT (trained on "
                            f"exactly the cases of its folds, same network and preprocessing): `--folds {FULL_FOLD}` "
                            "then runs it alone instead of the ensemble; the folds are not changed. RUN_DIR may be a "
                            "model folder: its full network is carried over unchanged (folds fine-tuned from it "
                            "that keep its full network)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing model folder (with --add-full: "
                                                            "its full network)")
    s.add_argument("--average-with", default=None, metavar="MODEL",
                   help="average each network's weights with MODEL's network of the same name, which the run was "
                        "fine-tuned from (`train --init-from MODEL`; `shipped`: the shipped model): weight-space "
                        "averaging (WiSE-FT) keeps more of MODEL's robustness on scans unlike the new training data; "
                        "the folds' post-processing is chosen again and their cross-validation re-scored with the "
                        "averaged weights; refused where MODEL's fold k saw a test or validation patient of the run's "
                        "fold k")
    s.add_argument("--average-weight", type=float, default=AVERAGE_WEIGHT, metavar="W",
                   help=f"MODEL's share of the averaged weights, between 0 and 1 (default {AVERAGE_WEIGHT:g})")
    s.set_defaults(func=_cmd_export)

    s = sub.add_parser("label", help="open the browser labeling tool on a dataset")
    s.add_argument("dataset", type=Path)
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback only)")
    s.add_argument("--model", type=Path, default=None,
                   help="checkpoint for the Predict button (default: the shipped model)")
    s.add_argument("--folds", default="all",
                   help=f"as for predict: e.g. {FULL_FOLD} (the shipped model's network trained on every case: a quarter "
                        "of the ensemble's time on a CPU without bfloat16 hardware)")
    s.set_defaults(func=_cmd_label)

    s = sub.add_parser("demo", help="run the main job on bundled synthetic data")
    s.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    s.add_argument("--patients", type=int, default=6, help="patients in the demo cohort")
    s.add_argument("--seed", type=int, default=DEMO_SEED,
                   help=f"cohort seed (default {DEMO_SEED}; 0 made the shipped model's cohort)")
    s.add_argument("--small", action="store_true", help="coarse, fast cohort (a quick smoke run)")
    s.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs per fold (default 4)")
    s.add_argument("--overwrite", action="store_true", help="replace the output of an earlier demo")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``orbitseg`` console script."""
    from orbitseg.errors import OrbitsegError

    args = build_parser().parse_args(argv)
    if args.command not in _SPINNING_OK:
        # Spinning OpenMP threads collapse when the cores are shared (a viewer, a browser, the labeling
        # server): a 512x512x100 prediction took 10.6 s beside one busy process, 6.6 s with PASSIVE, for
        # 4 % on an idle machine (3.85 -> 4.00 s). Set before torch loads; the user's own setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        return int(args.func(args) or 0)
    except OrbitsegError as exc:
        print(f"orbitseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"orbitseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
