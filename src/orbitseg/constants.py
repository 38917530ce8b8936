"""Every fact that more than one module needs, in one place.

Label ids and names, display colours, the paper's CT window, the sequence
length and input size of SEQ-UNET, the presets' names, the number of folds,
Hounsfield limits and file names.  Other modules import from here instead of
repeating a literal.  File formats (which endings are read and written as
what) are in :mod:`orbitseg.io.formats`.

Nothing here imports another orbitseg module (nor torch): the CLI reads these
facts while it parses arguments.
"""

from __future__ import annotations

# --- Labels -----------------------------------------------------------------
BACKGROUND, EYEBALL, MUSCLES, NERVE = 0, 1, 2, 3

#: label id -> machine name (the keys of ``dataset.json["labels"]``)
LABEL_NAMES: dict[int, str] = {
    BACKGROUND: "background",
    EYEBALL: "eyeball",
    MUSCLES: "extraocular_muscles",
    NERVE: "optic_nerve",
}
#: label id -> name a person reads
LABEL_TITLES: dict[int, str] = {
    BACKGROUND: "Background",
    EYEBALL: "Eyeball",
    MUSCLES: "Extraocular muscles",
    NERVE: "Optic nerve",
}
#: label id -> short name of a structure (metric keys such as ``dice_muscles``, post-processing rules)
SHORT_NAMES: dict[int, str] = {EYEBALL: "eyeball", MUSCLES: "muscles", NERVE: "nerve"}
#: the foreground labels, in order
STRUCTURES: tuple[int, ...] = (EYEBALL, MUSCLES, NERVE)
#: classes a network predicts: background and the structures
N_CLASSES: int = len(LABEL_NAMES)
#: every value a label volume may hold
VALID_LABELS: frozenset[int] = frozenset(LABEL_NAMES)

#: label id -> RGB 0-255.  Red / green / orange as in the paper's Figure 3D.
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {
    BACKGROUND: (0, 0, 0),
    EYEBALL: (230, 41, 55),
    MUSCLES: (0, 190, 80),
    NERVE: (255, 161, 0),
}


def label_colour_hex(label: int) -> str:
    """``'#rrggbb'`` colour of ``label``."""
    r, g, b = LABEL_COLOURS[label]
    return f"#{r:02x}{g:02x}{b:02x}"


# --- CT window (paper: level 48 HU, width 400 HU -> [-152, 248] HU) ---------
WINDOW_LEVEL: float = 48.0
WINDOW_WIDTH: float = 400.0


def window_bounds(level: float = WINDOW_LEVEL, width: float = WINDOW_WIDTH) -> tuple[float, float]:
    """Lower and upper HU bound of a window given by ``level`` and ``width``."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return level - width / 2.0, level + width / 2.0


#: Display presets (level, width) offered by viewers and the labeling tool.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "orbit": (WINDOW_LEVEL, WINDOW_WIDTH),
    "soft_tissue": (40.0, 350.0),
    "bone": (500.0, 2000.0),
}

# --- SEQ-UNET input ----------------------------------------------------------
SEQ_LEN: int = 3  # consecutive axial slices per sequence; the centre one is the target
INPUT_SIZE: int = 64  # in-plane size of each slice fed to the network (paper preset)
#: how a VOI slice is fitted into INPUT_SIZE x INPUT_SIZE: "stretch" fills both axes (as the paper's
#: resize to 64 x 64), "pad" keeps square pixels; see orbitseg.preprocess.fit
FIT_ASPECTS: tuple[str, ...] = ("stretch", "pad")
#: chosen on validation patients (fold 0 of the default cohort, 40 epochs, 3D Dice): muscles
#: 0.891 -> 0.910 and optic nerve 0.892 -> 0.918 over pad, at the same network cost
FIT_ASPECT: str = "stretch"
#: names of the presets, in the order of orbitseg.model.config.PRESETS (which checks it has exactly these);
#: here so that the CLI can offer them without importing torch
PRESET_NAMES: tuple[str, ...] = ("paper", "default", "unet2d", "fast")
#: the preset `orbitseg train` uses unless told (orbitseg.model.config.PRESETS)
DEFAULT_PRESET: str = "default"
#: synthetic cohort variants (orbitseg.synth): the shipped model's cohort, and the variety of clinical head CT
VARIETIES: tuple[str, ...] = ("default", "clinical")
#: the clinical variety's generator versions a cohort can still be drawn as, oldest first (the last is the default;
#: the same seed gives the same scans as when each was current; see ``orbitseg.synth.params``)
CLINICAL_VERSIONS: tuple[str, ...] = ("1.0-clinical2", "1.0-clinical3", "1.0-clinical4")
#: cross-validation folds by patient (the paper's 4-fold CV; orbitseg.train.splits)
N_FOLDS: int = 4
#: ``orbitseg train --fold full``: one model on every labelled case, no test or validation part
#: (nnU-Net's ``-f all``); its run folder is ``runs/PRESET/full``
FULL_FOLD: str = "full"
#: ``orbitseg export --average-with MODEL``: MODEL's share of the averaged weights by default (WiSE-FT's middle)
AVERAGE_WEIGHT: float = 0.5
#: network arithmetic at prediction: "auto" = bfloat16 where the CPU computes it in hardware, else float32
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
#: training keeps one explicit arithmetic per run (no "auto": a run's record must not depend on the machine)
TRAIN_PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
#: inference engines at prediction (orbitseg.predict.engine): "auto" = the faster on this machine, measured once
ENGINES: tuple[str, ...] = ("auto", "torch", "onnx", "openvino")

# --- Hounsfield plausibility (used to tell CT from other volumes) -----------
HU_AIR: float = -1000.0
#: a CT must hold some voxels this dark (air around the head, sinuses)
HU_AIR_MAX: float = -850.0
#: fraction of voxels that must be air-like for a volume to count as CT
MIN_AIR_FRACTION: float = 1e-3
#: what a CT number stored without its rescale adds to the HU (DICOM RescaleIntercept -1024 left unapplied)
RAW_CT_OFFSET: int = 1024
#: lowest value a CT may hold (scanners pad outside the field of view with -2048 or -3024)
HU_MIN: float = -3100.0
#: highest value a CT may hold (dense metal on extended-range scanners)
HU_MAX: float = 32767.0

# --- Files ------------------------------------------------------------------
#: nnU-Net v2 channel suffix of the single CT channel
CHANNEL_SUFFIX: str = "_0000"
#: a training run's checkpoints: the best epoch on validation (what predict loads) and the latest (resume)
CHECKPOINT_BEST: str = "checkpoint_best.pt"
CHECKPOINT_LAST: str = "checkpoint_last.pt"
#: an exported model folder's record (how it was made, its splits and CV metrics), beside its fold_k.pt
MODEL_JSON: str = "model.json"
#: written by `orbitseg predict` beside its label files: what made each of them
PREDICTION_JSON: str = "prediction.json"
#: ending of every file the project writes by default (its format: orbitseg.io.formats.DEFAULT_FORMAT)
FILE_ENDING: str = ".nii.gz"
#: DICOM objects `orbitseg predict --format` can write beside (or instead of) label volumes: name -> file ending.
#: They refer to the scan's DICOM series, so they are written only for scans read from one.
DICOM_OUTPUTS: dict[str, str] = {"dicom-seg": ".seg.dcm", "rtstruct": ".rtstruct.dcm"}
#: the folder `orbitseg evaluate` (and a training run's test scoring) writes its metrics into
METRICS_DIR: str = "metrics"
DATASET_JSON: str = "dataset.json"
IMAGES_TR, LABELS_TR, IMAGES_TS = "imagesTr", "labelsTr", "imagesTs"
