"""Training data from the preprocessed store: (VOI, centre slice) -> sequence and soft target.

Reads ``DATASET/preprocessed/manifest.json`` and the memory-mapped arrays of
``DATASET/preprocessed/store/`` (see :mod:`orbitseg.preprocess.dataset`).  An
item is one centre slice ``k`` of one VOI:

* ``x``: ``(T, 1, S, S)`` float32, the slices ``sequence_indices(n, T)[k]`` (edges replicated);
* ``target``: ``(C, S, S)`` float32 soft label fractions of the centre slice,
  background included (``1 - sum`` of the stored labels 1..3, clipped at 0).

With :class:`~orbitseg.train.slabs.SlabParams` (``train --thick-slabs``) an item is fetched by
``(index, item_seed)`` instead, and with probability ``p`` comes as thick slices made from the VOI's thin
ones (:func:`~orbitseg.train.slabs.thick_item`), the seed making each item's draw reproducible.

:func:`epoch_indices` draws an epoch's items with replacement, weighted
``1 + a * has_muscle + b * has_nerve`` so that the rare nerve and muscle slices
are not starved while empty slices are still seen; the draw is a pure function
of ``(seed, epoch)``.

:class:`DataAccess` is the run's account of which cases it actually read: the cases of the
items in every training batch and of the VOIs every validation pass scored, taken from the
items fetched (:meth:`SliceSequences.voi_counts`), not from the split, so a loop that reads a
test case shows it (``data_access.json`` in the run folder).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from orbitseg.constants import EYEBALL, FULL_FOLD, MUSCLES, NERVE
from orbitseg.errors import InputError
from orbitseg.io.atomic import write_text_atomic
from orbitseg.preprocess.dataset import MANIFEST
from orbitseg.preprocess.fit import sequence_indices
from orbitseg.preprocess.pipeline import PreprocessConfig
from orbitseg.train.slabs import SlabParams, thick_item

__all__ = ["VOIRef", "read_manifest", "vois_of_cases", "SliceSequences", "slice_weights", "epoch_indices",
           "derive_seed", "DataAccess"]

#: a slice "has" a structure when this much of a pixel (in x255 units) belongs to it somewhere
_PRESENT = 128


@dataclass(frozen=True)
class VOIRef:
    key: str
    case: str
    patient: str
    side: str
    n_slices: int
    image: Path
    fractions: Path
    #: the VOI's slice thickness (mm; its spacing along z), None in manifests written before it was recorded
    slice_mm: float | None = None


def read_manifest(dataset: str | Path) -> tuple[dict, PreprocessConfig]:
    path = Path(dataset) / "preprocessed" / MANIFEST
    if not path.is_file():
        raise InputError(path, "missing; run `orbitseg preprocess DATASET` first")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    return manifest, PreprocessConfig.from_dict(manifest["config"])


def vois_of_cases(dataset: str | Path, manifest: dict, cases: list[str]) -> list[VOIRef]:
    """The VOIs of ``cases`` in manifest order (cases without a manifest entry are skipped)."""
    store = Path(dataset) / "preprocessed" / "store"
    out = []
    for case in cases:
        entry = manifest["cases"].get(case)
        if entry is None:
            continue
        for v in entry["vois"]:
            spacing = v.get("voi_spacing")
            out.append(VOIRef(v["key"], case, str(entry.get("patient", case)), v["side"], int(v["n_slices"]),
                              store / f"{v['key']}_image.npy", store / f"{v['key']}_fractions.npy",
                              None if spacing is None else float(spacing[2])))
    return out


class SliceSequences(Dataset):
    """Every (VOI, centre slice) of ``vois`` as a torch Dataset (see module docstring).

    Arrays are opened memory-mapped lazily in each process (DataLoader workers
    included), so the dataset pickles cheaply.
    """

    def __init__(self, vois: list[VOIRef], seq_len: int, *, allow_empty: bool = False,
                 slabs: SlabParams | None = None):
        if not vois and not allow_empty:  # allow_empty: the full model's validation part, which has no case
            raise InputError(None, "no preprocessed VOIs to train on")
        self.vois, self.seq_len = list(vois), int(seq_len)
        self.slabs = slabs if slabs is not None and slabs.p > 0 else None
        if self.slabs is not None:
            self.slice_mm()  # refuses a manifest without slice spacings now, not in a worker
        self.items = np.array([(i, k) for i, v in enumerate(self.vois) for k in range(v.n_slices)],
                              dtype=np.int64).reshape(-1, 2)
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_arrays"] = {}
        return d

    def __len__(self) -> int:
        return len(self.items)

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a = self._arrays.get(i)
        if a is None:
            v = self.vois[i]
            a = (np.load(v.image, mmap_mode="r"), np.load(v.fractions, mmap_mode="r"))
            if a[0].shape[0] != v.n_slices or a[1].shape[0] != v.n_slices:
                raise InputError(v.image, f"holds {a[0].shape[0]} slices, the manifest says {v.n_slices}")
            self._arrays[i] = a
        return a

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``index``, or ``(index, item_seed)`` to let the item be made thick (see module docstring)."""
        index, item_seed = (index, None) if np.ndim(index) == 0 else index
        i, k = self.items[int(index)]
        img, frac = self.arrays(int(i))
        thick = None
        if self.slabs is not None and item_seed is not None:
            rng = np.random.default_rng(int(item_seed))
            if rng.random() < self.slabs.p:
                thick = thick_item(img, frac, int(k), self.seq_len, float(self.vois[int(i)].slice_mm), rng,
                                   self.slabs)
        if thick is None:
            seq = sequence_indices(img.shape[0], self.seq_len)[k]
            x = torch.from_numpy(np.asarray(img[seq], dtype=np.float32))[:, None]
            fg = np.asarray(frac[k], dtype=np.float32) / 255.0
        else:
            x, fg = torch.from_numpy(thick[0])[:, None], thick[1]
        bg = np.clip(1.0 - fg.sum(axis=0, keepdims=True), 0.0, 1.0)
        return x, torch.from_numpy(np.concatenate([bg, fg]))

    def voi_counts(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """``(len(vois),)`` int64: how many of the items ``indices`` come from each VOI."""
        voi = self.items[np.asarray(indices, dtype=np.int64), 0]
        return np.bincount(voi, minlength=len(self.vois)).astype(np.int64)

    def per_case(self, counts: np.ndarray | Sequence[int]) -> dict[str, int]:
        """Per-VOI ``counts`` (e.g. :meth:`voi_counts`) summed per case id; cases with none left out."""
        out: dict[str, int] = {}
        for v, n in zip(self.vois, counts):
            if int(n):
                out[v.case] = out.get(v.case, 0) + int(n)
        return dict(sorted(out.items()))

    def cases(self) -> list[str]:
        """The case ids of the VOIs, sorted (the cases any item can come from)."""
        return sorted({v.case for v in self.vois})

    def slice_mm(self) -> np.ndarray:
        """``(len,)`` float64: the slice thickness (mm) of item ``j``'s VOI."""
        missing = [v.key for v in self.vois if v.slice_mm is None]
        if missing:
            raise InputError(None, f"the manifest records no slice spacing for {len(missing)} VOI(s) (e.g. "
                                   f"{missing[0]}); preprocess the dataset again with this version")
        return np.repeat(np.array([v.slice_mm for v in self.vois], dtype=np.float64),
                         [v.n_slices for v in self.vois])

    def presence(self) -> np.ndarray:
        """``(len, 3)`` bool: does item ``j`` hold eyeball / muscles / nerve."""
        out = np.zeros((len(self), 3), dtype=bool)
        start = 0
        for i, v in enumerate(self.vois):
            _, frac = self.arrays(i)
            out[start:start + v.n_slices] = (np.asarray(frac).reshape(v.n_slices, frac.shape[1], -1)
                                             .max(axis=2) >= _PRESENT)[:, :3]
            start += v.n_slices
        return out


def slice_weights(presence: np.ndarray, muscle: float = 1.0, nerve: float = 2.0,
                  slice_mm: np.ndarray | None = None) -> np.ndarray:
    """Sampling weight per item: ``1 + muscle * has_muscle + nerve * has_nerve``, times the item's slice
    thickness in mm when ``slice_mm`` is given.

    Parameters
    ----------
    presence : (N, 3) bool, eyeball / muscles / nerve present in item j (:meth:`SliceSequences.presence`)
    muscle, nerve : extra weight of a slice that holds muscles / nerve
    slice_mm : (N,) float, item j's slice thickness, or None. Slices keep their native thickness, so without it
        a scan counts by its number of slices: a 5 mm scan of an orbit gives a quarter of the items a 1.25 mm
        scan of it gives, and thick-slice scans are rare in training. Weighted by thickness, every case counts
        by the length of anatomy it covers.

    Returns
    -------
    (N,) float64 weights (not normalised)
    """
    w = 1.0 + muscle * presence[:, MUSCLES - EYEBALL] + nerve * presence[:, NERVE - EYEBALL]
    if slice_mm is not None:
        slice_mm = np.asarray(slice_mm, dtype=np.float64)
        if slice_mm.shape != w.shape or not np.all(np.isfinite(slice_mm) & (slice_mm > 0)):
            raise ValueError(f"slice_mm must be {w.shape[0]} positive thicknesses, got shape {slice_mm.shape}")
        w = w * slice_mm
    return w


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and versions)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
               .astype(np.uint64).dot(np.array([1 << 32, 1], dtype=np.uint64)) >> np.uint64(1))


def epoch_indices(weights: np.ndarray, n: int, seed: int, epoch: int, *, rank: int = 0,
                  world_size: int = 1) -> list[int]:
    """This rank's items of one epoch: ``n`` weighted draws with replacement, a pure
    function of ``(seed, epoch)``; ranks take interleaved shards of the same draw."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, 1))
    idx = torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), n, replacement=True, generator=g)
    return idx[rank::world_size].tolist()


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, n in b.items():
        out[k] = out.get(k, 0) + int(n)
    return dict(sorted(out.items()))


@dataclass
class DataAccess:
    """Which cases a fold's run read, epoch by epoch, as ``data_access.json`` records it::

        {"version": 1, "fold": k,
         "train_pool": [cases the training items were drawn from],
         "trained": {case: sequences trained on, all epochs},
         "validated": {case: VOIs scored, all validation passes (the metrics the best checkpoint is chosen by)},
         "postprocess": [cases the post-processing was chosen on] or null,
         "epochs": [{"epoch": e, "trained": {case: sequences}, "validated": {case: VOIs}}, ...]}

    The counts come from the items the loop fetched, so they show what the loop did even when its
    data were built from the wrong cases.  A resumed run keeps the epochs recorded before and adds
    its own (an epoch redone after a kill replaces its earlier record: the same draw, the same cases).
    """

    fold: int | str  # 0..3, or "full"
    train_pool: list[str] = field(default_factory=list)
    epochs: dict[int, dict] = field(default_factory=dict)
    postprocess: list[str] | None = None

    VERSION = 1

    @classmethod
    def read(cls, path: str | Path, fold: int | str) -> DataAccess:
        """The record at ``path``, or an empty one for ``fold`` when there is none (a run started
        before the record existed: its earlier epochs then show as missing from ``epochs``)."""
        path = Path(path)
        if not path.is_file():
            return cls(fold)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(path, f"is not valid JSON ({exc})") from None
        recorded = d.get("fold", fold)  # the full model's run records "full"
        return cls(recorded if recorded == FULL_FOLD else int(recorded), list(d.get("train_pool", [])),
                   {int(e["epoch"]): {"trained": dict(e["trained"]), "validated": dict(e["validated"])}
                    for e in d.get("epochs", [])}, d.get("postprocess"))

    def add_pool(self, cases: Iterable[str]) -> None:
        """Record the cases the training items are drawn from (kept across resumes)."""
        self.train_pool = sorted(set(self.train_pool) | set(cases))

    def add_epoch(self, epoch: int, trained: dict[str, int], validated: dict[str, int]) -> None:
        """Record epoch ``epoch`` (1-based): sequences trained on and VOIs validated, per case."""
        self.epochs[int(epoch)] = {"trained": dict(sorted(trained.items())),
                                   "validated": dict(sorted(validated.items()))}

    def to_dict(self) -> dict:
        trained: dict[str, int] = {}
        validated: dict[str, int] = {}
        for e in self.epochs.values():
            trained = _add_counts(trained, e["trained"])
            validated = _add_counts(validated, e["validated"])
        return {"version": self.VERSION, "fold": self.fold, "train_pool": self.train_pool, "trained": trained,
                "validated": validated, "postprocess": self.postprocess,
                "epochs": [{"epoch": k, **self.epochs[k]} for k in sorted(self.epochs)]}

    def write(self, path: str | Path) -> None:
        """Write the record atomically (once per epoch and once at the end of a fold)."""
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")
