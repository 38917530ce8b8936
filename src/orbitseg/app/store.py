"""The labeling tool's view of one dataset folder: cases, scans in canonical orientation, saving with history.

No web framework here: :mod:`orbitseg.app.server` turns :class:`AppError` into
JSON responses.  Every path this module opens comes from :func:`list_cases`
(never from a request) and is checked to resolve inside the dataset root, so a
symlink pointing elsewhere is refused.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from orbitseg.constants import FILE_ENDING, LABELS_TR, STRUCTURES
from orbitseg.errors import InputError, OrbitsegError
from orbitseg.io.atomic import atomic_path, write_text_atomic
from orbitseg.io.layout import Case, list_cases
from orbitseg.io.orient import from_canonical, to_canonical
from orbitseg.io.volume import Volume

if TYPE_CHECKING:
    from orbitseg.labeling.orbit_view import OrbitFrame

#: folder (inside labelsTr/) that keeps earlier versions of every label and the case status
HISTORY_DIR = ".history"
#: case ids the tool accepts (ids come from file names; anything else is not a case)
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HISTORY_NAME_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z" + re.escape(FILE_ENDING) + "$")
STATUSES = ("unlabelled", "in_progress", "done")
#: file (in a case's history folder) recording the last Predict: its quality flags and which labels it gave
PREDICTION_RECORD = "prediction.json"


def measurement_rows(labels: Volume, scan: Volume) -> list[dict]:
    """:func:`orbitseg.evaluate.measure.orbit_measurements` (clinical) of ``labels`` with ``scan`` (same
    grid), NaN (not measurable) as None so that the rows are JSON."""
    from orbitseg.evaluate.measure import orbit_measurements
    from orbitseg.predict.core import finder_midline

    def clean(v):
        if isinstance(v, (float, np.floating)):
            return None if not np.isfinite(v) else float(v)
        return v.item() if isinstance(v, np.generic) else v

    return [{k: clean(v) for k, v in r.items()} for r in orbit_measurements(
        labels, scan, clinical=True, midline_fallback=lambda: finder_midline(scan))]


class AppError(Exception):
    """An error the page shows: HTTP status, a short code and a message a person can act on."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def labels_digest(array: np.ndarray) -> str:
    """SHA-256 of a label array's uint8 bytes (C order): tells a saved label from the model's draft."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()


def _file_token(path: Path) -> str:
    """Version token of a label file: a hash of its bytes ("none" when there is no file)."""
    from orbitseg.io.read import file_sha256

    return file_sha256(path)[:16] if path.is_file() else "none"


def _quick_scan_check(path: Path) -> str | None:
    """A cheap look at a scan file (header, completeness); the problem in words, or None."""
    from orbitseg.io.read import check_scan_header

    try:
        check_scan_header(path)
    except InputError as exc:
        return exc.problem
    except Exception as exc:  # noqa: BLE001 - any failure means the file cannot be used
        return f"cannot be read ({type(exc).__name__}: {exc})"
    return None


@dataclass
class OpenScan:
    """A scan loaded for viewing: canonical (LPS) array and the original grid to save on."""

    case_id: str
    scan: Volume  # as read, own geometry
    canon: Volume  # canonical orientation
    key: str  # changes when the file changes (superpixel cache key)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _finder_frame(o: OpenScan) -> tuple[OrbitFrame | None, str]:
    """The orbit frame of an open scan from the orbit finder prediction uses, or None and why."""
    from orbitseg.labeling.orbit_view import OrbitExtent, orbit_frame
    from orbitseg.preprocess.voi import locate_orbits

    try:
        boxes = locate_orbits(o.canon)
    except (InputError, ValueError) as exc:
        return None, exc.problem if isinstance(exc, InputError) else str(exc)
    g = o.canon.geometry
    extents = [OrbitExtent(b.side, tuple(float(v) for v in g.physical_to_index(b.globe_centre)[::-1]),
                           tuple(b.index_min[::-1]), tuple(b.index_max[::-1])) for b in boxes]
    return orbit_frame(extents, o.canon.shape, g.spacing[::-1], source="finder"), ""


def _label_frame(o: OpenScan, canon_labels: np.ndarray) -> OrbitFrame | None:
    """The orbit frame from labelled structures (None when the label is empty)."""
    from orbitseg.labeling.orbit_view import LABEL_MARGIN_MM, extents_from_labels, orbit_frame

    spacing = o.canon.geometry.spacing[::-1]
    extents = extents_from_labels(canon_labels, spacing)
    return orbit_frame(extents, o.canon.shape, spacing, margin_mm=LABEL_MARGIN_MM, source="labels") if extents else None


def _read_label_file(path: Path, scan: Volume, case_id: str) -> Volume:
    """A case's label file on its scan's grid; one that cannot be read is a 422 naming the file."""
    import warnings

    from orbitseg.io.read import read_label

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty label is a label being drawn, not a problem here
            return read_label(path, reference=scan)
    except InputError as exc:
        raise AppError(422, "bad_label", f"label file {path.name} of case {case_id!r}: {exc.problem}; "
                       "move it away to start from an empty label") from None


class DatasetStore:
    """Cases of one dataset folder, a small cache of open scans, label reading and saving."""

    def __init__(self, root: Path, *, max_open: int = 3):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InputError(root, "dataset folder does not exist")
        list_cases(self.root)  # raises a clear InputError on a missing / bad dataset.json
        self._open: OrderedDict[str, OpenScan] = OrderedDict()
        self._max_open = max_open
        self._lock = threading.Lock()
        self._case_locks: dict[str, threading.Lock] = {}
        self._summary_cache: dict[tuple, dict] = {}
        self._problems: dict[tuple, str] = {}
        #: where each case's orbits are (scan key, or scan key + label version -> (frame, why)), see orbit_frame()
        self._orbits: dict[tuple, tuple[OrbitFrame | None, str]] = {}
        #: clinical measurements of saved labels, (scan key, label version) -> rows (see measurements())
        self._measured: OrderedDict[tuple, list[dict]] = OrderedDict()

    # ---- cases -----------------------------------------------------------------
    def cases(self) -> dict[str, Case]:
        return {c.case_id: c for c in list_cases(self.root)}

    def case(self, case_id: str) -> Case:
        if not isinstance(case_id, str) or not CASE_ID_RE.match(case_id):
            raise AppError(404, "no_such_case", f"{case_id!r} is not a case id of this dataset; pick a case from the list")
        c = self.cases().get(case_id)
        if c is None:
            raise AppError(404, "no_such_case", f"no case {case_id!r} in {self.root}; pick a case from the list")
        if not _inside(self.root, c.image):
            raise AppError(403, "outside_dataset",
                           f"the scan of case {case_id!r} ({c.image.name}) points outside the dataset folder "
                           "(a symlink?); copy the file into the dataset to label it")
        return c

    def label_file(self, c: Case) -> Path:
        path = self.root / LABELS_TR / f"{c.case_id}{FILE_ENDING}"
        if path.exists() or path.is_symlink():
            if not _inside(self.root, path):
                raise AppError(403, "outside_dataset",
                               f"the label file of case {c.case_id!r} points outside the dataset folder (a symlink?); "
                               "replace it with a real file inside the dataset")
        lab_dir = self.root / LABELS_TR
        if lab_dir.exists() and not _inside(self.root, lab_dir):
            raise AppError(403, "outside_dataset", f"{lab_dir} points outside the dataset folder; refusing to use it")
        return path

    def history_dir(self, c: Case) -> Path:
        return self.root / LABELS_TR / HISTORY_DIR / c.case_id

    def case_lock(self, case_id: str) -> threading.Lock:
        with self._lock:
            return self._case_locks.setdefault(case_id, threading.Lock())

    def status(self, c: Case) -> str:
        label = self.label_file(c)
        if not label.is_file():
            return "unlabelled"
        f = self.history_dir(c) / "status.json"
        try:
            s = json.loads(f.read_text(encoding="utf-8")).get("status")
        except (OSError, ValueError, AttributeError):
            return "done"  # a label that did not come from this tool (imported, ground truth)
        return s if s in STATUSES else "in_progress"

    def set_status(self, c: Case, status: str) -> str:
        if status not in ("in_progress", "done"):
            raise AppError(422, "bad_status", f"status must be 'in_progress' or 'done', got {status!r}")
        if not self.label_file(c).is_file():
            raise AppError(409, "not_saved", f"case {c.case_id!r} has no saved label yet; save it before marking it {status}")
        write_text_atomic(self.history_dir(c) / "status.json", json.dumps({"status": status}) + "\n")
        return status

    def summary(self, c: Case) -> dict:
        """One row of the case list: status, per-label volumes (ml) and any problem of its files."""
        row = {"id": c.case_id, "patient": c.patient_id, "split": "train" if c.training else "test",
               "scan": c.image.relative_to(self.root).as_posix() if _inside(self.root, c.image) else c.image.name,
               "status": "unlabelled", "volumes_ml": None, "problem": None, "quality": None}
        try:
            self.case(c.case_id)
            st = c.image.stat()
            key = ("scan", str(c.image), st.st_mtime_ns, st.st_size)
            if key not in self._problems:
                self._problems[key] = _quick_scan_check(c.image) or ""
            if self._problems[key]:
                row["problem"] = f"scan {c.image.name} {self._problems[key]}"
                return row
            row["status"] = self.status(c)
            label = self.label_file(c)
            if label.is_file():
                lst = label.stat()
                lkey = ("label", str(label), lst.st_mtime_ns, lst.st_size)
                if lkey not in self._summary_cache:
                    self._summary_cache[lkey] = self._volumes(label)
                vols = dict(self._summary_cache[lkey])
                digest = vols.pop("digest", None)
                if "problem" in vols:
                    row["problem"] = vols["problem"]
                else:
                    row["volumes_ml"] = vols
            row["quality"] = self.prediction_quality(c, digest if label.is_file() else None)
        except AppError as exc:
            row["problem"] = exc.message
        except OSError as exc:
            row["problem"] = f"cannot be read ({exc})"
        return row

    @staticmethod
    def _volumes(label: Path) -> dict:
        import warnings

        from orbitseg.io.read import read_label

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lab = read_label(label)
        except OrbitsegError as exc:
            return {"problem": f"label {label.name}: {exc.problem if isinstance(exc, InputError) else exc}"}
        counts = np.bincount(lab.array.ravel(), minlength=4)
        ml = lab.geometry.voxel_volume_ml
        return {**{str(s): round(float(counts[s]) * ml, 3) for s in STRUCTURES}, "digest": labels_digest(lab.array)}

    # ---- the model's draft and its quality flags ----------------------------------------
    def record_prediction(self, case_id: str, labels: np.ndarray, flags: list[dict] | None, summary: str | None,
                          model: str, measurements: list[dict] | None = None) -> dict:
        """Keep what Predict gave for a case: its quality flags (None when they could not be computed),
        its clinical measurements (:func:`measurement_rows`; None when not computed) and the digest of its
        labels ``labels`` (on the scan's own grid), in the case's history folder."""
        c = self.case(case_id)
        rec = {"flags": flags, "summary": summary, "labels_sha256": labels_digest(labels), "model": model,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "measurements": measurements}
        write_text_atomic(self.history_dir(c) / PREDICTION_RECORD, json.dumps(rec, indent=1) + "\n")
        return rec

    def prediction_quality(self, c: Case, saved_digest: str | None) -> dict | None:
        """The case list's view of the last Predict: ``{"flags", "summary", "model", "time", "saved"}`` where
        ``saved`` says whether the saved label is the model's draft as it came (True), a corrected one
        (False) or there is none (None); None when Predict never ran or left no flags."""
        f = self.history_dir(c) / PREDICTION_RECORD
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or not isinstance(rec.get("flags"), list):
            return None
        saved = None if saved_digest is None else saved_digest == rec.get("labels_sha256")
        return {"flags": rec["flags"], "summary": rec.get("summary") or "", "model": rec.get("model"),
                "time": rec.get("time"), "saved": saved}

    def _prediction_record(self, c: Case) -> dict | None:
        try:
            rec = json.loads((self.history_dir(c) / PREDICTION_RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    # ---- clinical measurements ----------------------------------------------------------
    def measurements(self, case_id: str) -> dict:
        """The per-orbit clinical measurements a clinician reads, of the SAVED label when there is one
        (the corrected label; cached per scan and label version), else of the last Predict's draft.

        ``{"source": "saved" | "draft" | None, "version": label token or None, "rows": rows of
        :func:`measurement_rows` or None, "model", "time" (draft only), "notice": one line, "reference":
        the adult ranges {column: [low, high]} and "asymmetry_mm": the proptosis difference that is named}``.
        """
        from orbitseg.evaluate.clinical import PROPTOSIS_ASYMMETRY_MM, REFERENCE_RANGES

        return {**self._measurements(case_id), "asymmetry_mm": PROPTOSIS_ASYMMETRY_MM,
                "reference": {k: list(v) for k, v in REFERENCE_RANGES.items()}}

    def _measurements(self, case_id: str) -> dict:
        c = self.case(case_id)
        label = self.label_file(c)
        if label.is_file():
            o = self.open(case_id)
            token = _file_token(label)
            key = (o.key, token)
            with self._lock:
                rows = self._measured.get(key)
            if rows is None:
                rows = measurement_rows(_read_label_file(label, o.scan, case_id), o.scan)
                with self._lock:
                    self._measured[key] = rows
                    while len(self._measured) > 64:
                        self._measured.popitem(last=False)
            return {"source": "saved", "version": token, "rows": rows,
                    "notice": "of the saved label"}
        rec = self._prediction_record(c)
        if rec is not None and isinstance(rec.get("measurements"), list):
            return {"source": "draft", "version": None, "rows": rec["measurements"], "model": rec.get("model"),
                    "time": rec.get("time"), "notice": "of the model's draft (not saved yet)"}
        return {"source": None, "version": None, "rows": None,
                "notice": "no saved label and no Predict yet: nothing to measure"}

    # ---- open scans ------------------------------------------------------------------
    def open(self, case_id: str) -> OpenScan:
        c = self.case(case_id)
        st = c.image.stat()
        key = f"{case_id}:{st.st_mtime_ns}:{st.st_size}"
        with self._lock:
            o = self._open.get(case_id)
            if o is not None and o.key == key:
                self._open.move_to_end(case_id)
                return o
        with self.case_lock(case_id):
            with self._lock:
                o = self._open.get(case_id)
                if o is not None and o.key == key:
                    return o
            from orbitseg.io.read import read_scan

            try:
                scan = read_scan(c.image)
            except InputError as exc:
                self._problems[("scan", str(c.image), st.st_mtime_ns, st.st_size)] = exc.problem
                raise AppError(422, "bad_scan", f"case {case_id!r}: scan {c.image.name} {exc.problem}; "
                               "replace or remove this file (the other cases can still be labelled)") from None
            o = OpenScan(case_id, scan, to_canonical(scan), key)
            with self._lock:
                self._open[case_id] = o
                while len(self._open) > self._max_open:
                    self._open.popitem(last=False)
            return o

    def meta(self, case_id: str) -> dict:
        o = self.open(case_id)
        c = self.case(case_id)
        label = self.label_file(c)
        g = o.canon.geometry
        return {
            "id": case_id,
            "shape": list(o.canon.shape),  # (nz, ny, nx) canonical: axial slices, rows posterior, cols left
            "spacing": [float(v) for v in g.spacing[::-1]],  # (sz, sy, sx) mm
            "dtype": "int16",
            "status": self.status(c),
            "has_label": label.is_file(),
            "version": _file_token(label),
            "history": self.history(case_id),
            "scan": c.image.name,
            "orbits": self.orbits(case_id),
        }

    def orbit_frame(self, case_id: str) -> tuple[OrbitFrame | None, str]:
        """Where the case's orbits are (cached per scan file, and per label version when it comes from labels).

        The orbit finder of prediction (:func:`orbitseg.preprocess.voi.locate_orbits`) on the canonical
        scan; when it finds none, the labelled structures of the saved label.  ``(frame, "")``, or
        ``(None, why)`` when neither finds an orbit.
        """
        o = self.open(case_id)
        key = ("finder", o.key)
        if key not in self._orbits:
            self._orbits[key] = _finder_frame(o)
        found = self._orbits[key]
        if found[0] is not None:
            return found
        label = self.label_file(self.case(case_id))
        if not label.is_file():
            return found
        lkey = ("labels", o.key, _file_token(label))
        if lkey not in self._orbits:
            try:
                arr, _ = self.read_label_canonical(case_id)
            except AppError:
                self._orbits[lkey] = found
            else:
                frame = _label_frame(o, arr)
                self._orbits[lkey] = found if frame is None else (frame, "")
        return self._orbits[lkey]

    def orbits(self, case_id: str) -> dict:
        """:meth:`orbit_frame` for the page: ``{"found": True, **OrbitFrame.to_dict()}`` (canonical
        ``(k, j, i)`` indices) or ``{"found": False, "notice": one line}``."""
        frame, why = self.orbit_frame(case_id)
        if frame is None:
            return {"found": False, "notice": f"{why}; showing the middle slices"}
        return {"found": True, **frame.to_dict()}

    def slice(self, case_id: str, axis: int, index: int) -> np.ndarray:
        o = self.open(case_id)
        a = o.canon.array
        n = a.shape[axis]
        if not 0 <= index < n:
            raise AppError(422, "bad_index", f"slice index {index} is outside 0..{n - 1} for axis {axis}")
        s = a[index] if axis == 0 else (a[:, index, :] if axis == 1 else a[:, :, index])
        return np.ascontiguousarray(s, dtype=np.int16) if s.dtype != np.int16 else np.ascontiguousarray(s)

    # ---- labels ----------------------------------------------------------------------
    def read_label_canonical(self, case_id: str, path: Path | None = None) -> tuple[np.ndarray, str]:
        """(canonical uint8 label, version token) of the saved label, zeros when there is none."""
        o = self.open(case_id)
        c = self.case(case_id)
        path = self.label_file(c) if path is None else path
        if not path.is_file():
            return np.zeros(o.canon.shape, np.uint8), "none"
        token = _file_token(path)
        lab = _read_label_file(path, o.scan, case_id)
        return np.ascontiguousarray(to_canonical(lab).array, dtype=np.uint8), token

    def history(self, case_id: str) -> list[dict]:
        d = self.history_dir(self.case(case_id))
        if not d.is_dir():
            return []
        out = []
        for f in sorted(d.iterdir(), reverse=True):
            if HISTORY_NAME_RE.match(f.name) and f.is_file():
                out.append({"name": f.name, "bytes": f.stat().st_size})
        return out

    def history_file(self, case_id: str, name: str) -> Path:
        if not isinstance(name, str) or not HISTORY_NAME_RE.match(name):
            raise AppError(404, "no_such_version", f"{name!r} is not a saved version name (they look like "
                           f"20260101T120000.000000Z{FILE_ENDING}; see the history list)")
        d = self.history_dir(self.case(case_id))
        path = d / name
        if not path.is_file() or not _inside(self.root, path):
            raise AppError(404, "no_such_version", f"case {case_id!r} has no saved version {name!r}")
        return path

    def save(self, case_id: str, canon: np.ndarray, base: str, *, force: bool = False) -> dict:
        """Write the canonical label ``canon`` into labelsTr/ on the scan's own grid.

        ``base`` is the version token the page started from; when the file on
        disk has another version (another tab or user saved meanwhile) this
        raises a 409 AppError unless ``force``.  The replaced file is kept in
        ``labelsTr/.history/{case}/``.
        """
        from orbitseg.io.write import write_label

        o = self.open(case_id)
        c = self.case(case_id)
        if canon.shape != o.canon.shape:
            raise AppError(422, "bad_shape", f"label shape {canon.shape} differs from the scan's {o.canon.shape}")
        if canon.max(initial=0) > 3:
            raise AppError(422, "bad_values", f"label values must be 0..3, got up to {int(canon.max())}")
        path = self.label_file(c)
        with self.case_lock(case_id):
            current = _file_token(path)
            if current != base and not force:
                raise AppError(
                    409, "conflict",
                    f"case {case_id!r} was saved elsewhere (another tab or user) after you opened it: you started "
                    f"from version {base}, the file is now version {current}. Reload the case to see the other "
                    "changes, or save anyway (the other version stays in the history).",
                    current=current, base=base)
            hist = None
            if path.is_file():
                d = self.history_dir(c)
                d.mkdir(parents=True, exist_ok=True)
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1000000:06d}Z"
                hist = d / f"{stamp}{FILE_ENDING}"
                with atomic_path(hist) as tmp:
                    shutil.copyfile(path, tmp)
            labels = from_canonical(canon.astype(np.uint8, copy=False), o.scan.geometry)
            write_label(labels, path, reference=o.scan, overwrite=True)
            token = _file_token(path)
            if self.status(c) != "done" or not (self.history_dir(c) / "status.json").is_file():
                write_text_atomic(self.history_dir(c) / "status.json", json.dumps({"status": "in_progress"}) + "\n")
        counts = np.bincount(canon.ravel(), minlength=4)
        ml = o.scan.geometry.voxel_volume_ml
        return {"version": token, "previous": hist.name if hist else None, "path": path.relative_to(self.root).as_posix(),
                "volumes_ml": {str(s): round(float(counts[s]) * ml, 3) for s in STRUCTURES}}
