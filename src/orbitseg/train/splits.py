"""Cross-validation folds by patient, written once to ``DATASET/splits.json``.

Every scan of a patient (both orbits, follow-up scans) lands in one fold, so a
test fold never shares a patient with the data that trained or selected its
model.  Within the training folds of fold ``k`` a validation part (about
``val_fraction`` of the training patients, at least one) picks the best
checkpoint; the test fold is never used for any choice.

The split is a pure function of (sorted patients, their cases, seed): patients
are shuffled with ``random.Random(seed)`` and dealt greedily to the fold with the
fewest cases so far (balances scans per fold); the validation patients of fold
``k`` are drawn with ``random.Random(f"{seed}:val:{k}")``.

``splits.json``::

    {"version": 1, "seed": 0, "n_folds": 4, "val_fraction": 0.15,
     "patients": {case: patient},
     "folds": [{"fold": 0, "train": [cases], "val": [cases], "test": [cases],
                "train_patients": [...], "val_patients": [...], "test_patients": [...]}, ...]}

An existing ``splits.json`` is reused when it was made with the same seed,
number of folds and case -> patient map; otherwise :func:`make_splits` refuses
(pass ``overwrite=True`` to replace it - earlier runs then no longer match).

A dataset that grew (new scans labelled, another site's scans added) can keep
its folds instead (``extend=True``, :func:`extend_splits`): every patient already
in the split keeps its fold and its role (training, validation, test), a new scan
of a known patient joins that patient, and only the new patients are dealt, as
above, to the folds with the fewest cases.  A model trained on the old split then
never saw any of the new split's test patients of its fold, so each fold can be
fine-tuned from it (``orbitseg train --init-from``) without a leak.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from orbitseg.constants import FULL_FOLD, N_FOLDS
from orbitseg.errors import InputError
from orbitseg.io.atomic import write_text_atomic
from orbitseg.io.layout import list_cases

__all__ = ["SPLITS", "N_FOLDS", "make_splits", "read_splits", "fold_split", "full_split", "split_patients",
           "extend_splits"]

SPLITS = "splits.json"
VAL_FRACTION = 0.15


def split_patients(patients: dict[str, str], *, n_folds: int = N_FOLDS, seed: int = 0,
                   val_fraction: float = VAL_FRACTION) -> dict:
    """The splits dict (see module docstring) for ``patients`` (case id -> patient id)."""
    by_patient: dict[str, list[str]] = {}
    for case, pat in sorted(patients.items()):
        by_patient.setdefault(str(pat), []).append(case)
    names = sorted(by_patient)
    # each fold: >= 1 test patient; its training part: >= 1 validation and >= 1 training patient
    if len(names) < max(n_folds, 3):
        raise InputError(None, f"{len(names)} patient(s) are too few for {n_folds}-fold cross-validation with a "
                               f"validation part (need at least {max(n_folds, 3)})")
    rng = random.Random(seed)
    order = names[:]
    rng.shuffle(order)
    folds_p: list[list[str]] = [[] for _ in range(n_folds)]
    n_cases = [0] * n_folds
    for p in order:  # greedy: fold with fewest cases, then fewest patients, then lowest index
        k = min(range(n_folds), key=lambda i: (n_cases[i], len(folds_p[i]), i))
        folds_p[k].append(p)
        n_cases[k] += len(by_patient[p])
    folds = []
    for k in range(n_folds):
        test_p = sorted(folds_p[k])
        rest = sorted(p for i, f in enumerate(folds_p) if i != k for p in f)
        n_val = max(1, round(val_fraction * len(rest)))
        n_val = min(n_val, len(rest) - 1)
        val_p = sorted(random.Random(f"{seed}:val:{k}").sample(rest, n_val))
        train_p = [p for p in rest if p not in set(val_p)]

        def cases(ps: list[str]) -> list[str]:
            return sorted(c for p in ps for c in by_patient[p])

        folds.append({"fold": k, "train": cases(train_p), "val": cases(val_p), "test": cases(test_p),
                      "train_patients": train_p, "val_patients": val_p, "test_patients": test_p})
    return {"version": 1, "seed": int(seed), "n_folds": n_folds, "val_fraction": val_fraction,
            "patients": dict(sorted(patients.items())), "folds": folds}


def extend_splits(old: dict, patients: dict[str, str]) -> dict:
    """``old`` (a splits dict) grown to ``patients`` (case id -> patient id), its folds kept.

    Every case of ``old`` keeps its fold and role; a new case of a patient in ``old`` goes where that
    patient is; new patients are shuffled with ``random.Random(f"{seed}:extend")`` and dealt greedily
    to the fold with the fewest cases (then fewest patients); in each fold's training part about
    ``val_fraction`` of its new patients validate (``random.Random(f"{seed}:extend:val:{k}")``).  The
    result records what was added under ``"extended"`` (one entry per extension).

    Raises
    ------
    InputError : a case of ``old`` is missing from ``patients`` or belongs to another patient now (the
        folds cannot be kept: make a new split).
    """
    seed, n_folds = int(old["seed"]), int(old["n_folds"])
    val_fraction = float(old.get("val_fraction", VAL_FRACTION))
    old_patients = old["patients"]
    gone = sorted(set(old_patients) - set(patients))
    moved = sorted(c for c in set(old_patients) & set(patients) if old_patients[c] != patients[c])
    if gone or moved:
        raise InputError(None, "the split cannot be extended: "
                         + "; ".join(f"{what}: {', '.join(cs[:5])}{' ...' if len(cs) > 5 else ''}"
                                     for what, cs in (("cases gone", gone), ("cases of another patient now", moved))
                                     if cs) + "; make a new split (overwrite)")
    folds = [{"fold": f["fold"], **{k: list(f[k]) for k in ("train", "val", "test", "train_patients", "val_patients",
                                                          "test_patients")}}
             for f in sorted(old["folds"], key=lambda f: f["fold"])]
    # where each known patient is: its test fold, and per fold its role
    role: dict[tuple[int, str], str] = {(f["fold"], p): r for f in folds for r in ("train", "val", "test")
                                        for p in f[f"{r}_patients"]}
    new_cases = sorted(set(patients) - set(old_patients))
    known = {p for (_, p) in role}
    by_new_patient: dict[str, list[str]] = {}
    for c in new_cases:
        p = str(patients[c])
        if p in known:  # a follow-up scan: wherever its patient is
            for f in folds:
                f[role[(f["fold"], p)]].append(c)
        else:
            by_new_patient.setdefault(p, []).append(c)
    order = sorted(by_new_patient)
    random.Random(f"{seed}:extend").shuffle(order)
    n_cases = [len(f["test"]) for f in folds]
    n_pat = [len(f["test_patients"]) for f in folds]
    dealt: list[list[str]] = [[] for _ in range(n_folds)]
    for p in order:
        k = min(range(n_folds), key=lambda i: (n_cases[i], n_pat[i], i))
        dealt[k].append(p)
        n_cases[k] += len(by_new_patient[p])
        n_pat[k] += 1
    for k, f in enumerate(folds):
        rest = sorted(p for i, d in enumerate(dealt) if i != k for p in d)
        n_val = min(round(val_fraction * len(rest)), len(rest))
        val_p = set(random.Random(f"{seed}:extend:val:{k}").sample(rest, n_val))
        roles = (("test", sorted(dealt[k])), ("val", sorted(val_p)), ("train", [p for p in rest if p not in val_p]))
        for r, ps in roles:
            f[f"{r}_patients"] = sorted(f[f"{r}_patients"] + ps)
            f[r] = f[r] + [c for p in ps for c in by_new_patient[p]]
        for r in ("train", "val", "test"):
            f[r] = sorted(f[r])
    return {**{k: v for k, v in old.items() if k not in ("patients", "folds")},
            "patients": dict(sorted(patients.items())), "folds": folds,
            "extended": [*old.get("extended", []),
                         {"added_cases": len(new_cases), "added_patients": sorted(by_new_patient)}]}


def read_splits(dataset: str | Path) -> dict:
    path = Path(dataset) / SPLITS
    if not path.is_file():
        raise InputError(path, "missing; make it with orbitseg.train.make_splits (orbitseg train does)")
    return json.loads(path.read_text(encoding="utf-8"))


def make_splits(dataset: str | Path, *, seed: int = 0, n_folds: int = N_FOLDS, val_fraction: float = VAL_FRACTION,
                overwrite: bool = False, extend: bool = False, cases: list[str] | None = None) -> dict:
    """Read or create ``DATASET/splits.json`` for the labelled cases of ``dataset``.

    ``cases`` restricts the split to these case ids (default: every labelled case).  ``extend``: when
    the dataset holds cases the existing split does not, add them keeping every known patient's fold
    and role (:func:`extend_splits`); ``overwrite``: make a new split in any case.

    Raises
    ------
    InputError : an existing ``splits.json`` was made with another seed / number of folds / set of
        cases or patients and neither ``overwrite`` nor (for added cases alone) ``extend`` is set; or too
        few patients.
    """
    if overwrite and extend:
        raise ValueError("overwrite and extend exclude each other (a new split, or the old one grown)")
    root = Path(dataset)
    patients = {c.case_id: c.patient_id for c in list_cases(root) if c.training}
    if cases is not None:
        patients = {c: p for c, p in patients.items() if c in set(cases)}
    path = root / SPLITS
    if path.is_file() and not overwrite:
        old = read_splits(root)
        diffs = []
        if old.get("seed") != seed:
            diffs.append(f"seed {old.get('seed')} (asked {seed})")
        if old.get("n_folds") != n_folds:
            diffs.append(f"{old.get('n_folds')} folds (asked {n_folds})")
        if old.get("patients") != dict(sorted(patients.items())):
            o = old.get("patients", {})
            if extend and not diffs:
                grown = extend_splits(old, patients)
                write_text_atomic(path, json.dumps(grown, indent=1) + "\n")
                return grown
            added = sorted(set(patients) - set(o))
            removed = sorted(set(o) - set(patients))
            moved = sorted(c for c in set(o) & set(patients) if o[c] != patients[c])
            diffs.append(f"other cases/patients (new: {added[:5]}, gone: {removed[:5]}, patient changed: {moved[:5]})")
        if diffs:
            raise InputError(path, "was made with " + "; ".join(diffs) + "; pass --extend-splits to add new "
                             "cases keeping every known patient's fold (runs trained on it can then seed the "
                             "new folds), or --overwrite-splits to deal all patients anew (runs made with the "
                             "old split then no longer match)")
        return old
    splits = split_patients(patients, n_folds=n_folds, seed=seed, val_fraction=val_fraction)
    write_text_atomic(path, json.dumps(splits, indent=1) + "\n")
    return splits


def fold_split(splits: dict, fold: int) -> dict:
    """The entry of fold ``fold`` (train/val/test case lists)."""
    for f in splits["folds"]:
        if f["fold"] == fold:
            return f
    raise InputError(None, f"fold {fold} is not in splits.json (folds 0..{splits['n_folds'] - 1})")


def full_split(dataset: str | Path) -> dict:
    """The "split" of ``orbitseg train --fold full``: every labelled case of ``dataset`` trains, none
    validates or is tested (nnU-Net's ``-f all``).  It needs no ``splits.json`` (so it works with fewer
    patients than cross-validation needs) and has the keys of a :func:`fold_split` entry.

    Raises
    ------
    InputError : the dataset holds no labelled case.
    """
    cases = sorted((c.case_id, str(c.patient_id)) for c in list_cases(dataset) if c.training)
    if not cases:
        raise InputError(Path(dataset), "holds no labelled case (imagesTr with labelsTr) to train on")
    return {"fold": FULL_FOLD, "train": [c for c, _ in cases], "val": [], "test": [],
            "train_patients": sorted({p for _, p in cases}), "val_patients": [], "test_patients": []}
