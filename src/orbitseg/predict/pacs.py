"""``orbitseg pacs``: fetch a study's head CT from a PACS over DICOMweb, segment it, store the DICOM-SEG back.

1. QIDO-RS lists the study's series; the CT series are retrieved (WADO-RS) into a temporary folder and
   read with :func:`orbitseg.io.read.read_scan`, so the series is chosen exactly as for a local folder
   (localizers and non-image objects set aside, several CT volumes refused unless ``series_uid`` names
   one).  Series of other modalities (MR, SEG, SR...) are listed but not retrieved.
2. The DICOM-SEG's UIDs are fixed by the source series, the model and the settings
   (:func:`orbitseg.predict.run.dicom_output_uids`, the ones ``orbitseg predict --format dicom-seg``
   writes): before anything is segmented, QIDO-RS asks whether the server already holds that SEG.  If it
   does, nothing is stored ("already stored") and its volumes are read back from the stored object.
3. Otherwise the Segmenter segments the scan, the DICOM-SEG (referencing the source slices) is written
   to the temporary folder and stored with STOW-RS; the server's answer must confirm it.

Nothing is kept on disk: the temporary folder goes when the command ends.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orbitseg.errors import AmbiguousSeriesError, InputError, OrbitsegError

__all__ = ["PacsResult", "segment_study"]

#: a DICOM UID (PS3.5 9.1): numeric components without leading zeros, at most 64 characters
_UID = re.compile(r"(?=.{1,64}$)(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


@dataclass
class PacsResult:
    """What :func:`segment_study` did."""

    url: str
    study_uid: str
    series_uid: str  # the CT series segmented
    series_description: str
    n_slices: int
    seg_series_uid: str
    seg_sop_uid: str
    stored: bool  # False: the server already held this SEG, nothing was sent
    skipped: list[dict] = field(default_factory=list)  # series not retrieved (other modalities)
    measurements: list[dict] = field(default_factory=list)  # orbit_measurements of the labels

    def describe(self) -> str:
        """The lines ``orbitseg pacs`` prints."""
        lines = [f"study {self.study_uid} on {self.url}",
                 f"  CT series {self.series_uid} ({self.series_description or 'no description'}, "
                 f"{self.n_slices} slices) segmented"]
        for s in self.skipped:
            lines.append(f"  not retrieved: {s['modality'] or '?'} series {s['uid']} {s['description']}".rstrip())
        what = "stored (STOW-RS)" if self.stored else "already stored: nothing sent"
        lines.append(f"  DICOM-SEG series {self.seg_series_uid}, instance {self.seg_sop_uid}: {what}")
        for r in self.measurements:
            if r.get("side") in ("right", "left"):
                lines.append(f"  {r['side']:<5} orbit: eyeball {r['globe_ml']:.2f} mL, extraocular muscles "
                             f"{r['muscles_ml']:.2f} mL, optic nerve {r['nerve_ml']:.2f} mL")
        return "\n".join(lines)


def segment_study(
    url: str,
    study_uid: str,
    *,
    series_uid: str | None = None,
    model: str | Path | None = None,
    folds: str = "all",
    device: str = "cpu",
    precision: str = "auto",
    engine: str = "auto",
    mirror: bool = False,
    postprocess: bool = True,
    config: str | Path | None = None,
    ca_bundle: str | Path | None = None,
    credentials=None,
    log=print,
) -> PacsResult:
    """Segment the head CT of study ``study_uid`` on the DICOMweb server ``url`` and store its DICOM-SEG there.

    Parameters
    ----------
    url : the server's DICOMweb root (e.g. ``http://localhost:8042/dicom-web``)
    study_uid : StudyInstanceUID
    series_uid : the CT series to segment when the study holds several
    model, folds, device, precision, engine, mirror, postprocess : as ``orbitseg predict``
    config, ca_bundle, credentials : how to authenticate and verify the server
        (:func:`orbitseg.io.dicomweb.credentials_from_env`; never from the command line)
    log : where progress lines go

    Returns
    -------
    PacsResult

    Raises
    ------
    DicomWebError : the server cannot be reached, refuses the credentials or the upload
    InputError : the study holds no CT series (or several and ``series_uid`` is None), the series is no
        head CT the model can segment
    """
    from orbitseg.evaluate.measure import orbit_measurements
    from orbitseg.io.dicomseg import read_dicom_seg, write_dicom_seg
    from orbitseg.io.dicomweb import DicomWeb, credentials_from_env
    from orbitseg.io.read import read_scan
    from orbitseg.predict.run import dicom_output_uids, dicom_uid_key
    from orbitseg.predict.segmenter import Segmenter

    for what, uid in (("--study", study_uid), ("--series", series_uid)):
        if uid is not None and not _UID.fullmatch(uid):
            raise InputError(None, f"{what} {uid!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    where = f"study {study_uid} on {url}"
    server = DicomWeb(url, credentials=credentials if credentials is not None else credentials_from_env(config),
                      ca_bundle=ca_bundle)
    series = server.series(study_uid)
    if not series:
        raise InputError(None, f"{where}: no such study (QIDO-RS lists no series of it)")
    if series_uid is not None:
        wanted = [s for s in series if s["uid"] == series_uid]
        if not wanted:
            raise InputError(None, f"{where}: holds no series {series_uid}; found " + _listing(series))
    else:
        wanted = [s for s in series if s["modality"].upper() == "CT"]
        if not wanted:
            raise InputError(None, f"{where}: holds no CT series, so no head CT to segment; found " + _listing(series))
    skipped = [s for s in series if s not in wanted]
    segmenter = Segmenter.load(model, folds=folds, device=device, precision=precision, mirror=mirror,
                               postprocess=postprocess, engine=engine, log=log)
    with tempfile.TemporaryDirectory(prefix="orbitseg-pacs-") as tmp:
        folder = Path(tmp) / "study"
        for s in wanted:
            log(f"retrieving {s['modality']} series {s['uid']} ({s['instances'] or '?'} instances, WADO-RS)")
            server.fetch_series(study_uid, s["uid"], folder / s["uid"])
        try:
            scan = read_scan(folder, series_uid=series_uid)
        except AmbiguousSeriesError as exc:
            listing = "\n".join(f"  {s['uid']}  {s['modality']:3s} {s['n_files']:4} files  {s['description']}"
                                for s in exc.series)
            raise InputError(None, f"{where}: holds several CT series; choose one with --series UID:\n{listing}") from None
        except OrbitsegError as exc:
            raise InputError(None, f"{where}: {_problem(exc)}") from None
        chosen = scan.meta["series_uid"]
        seg_series, seg_sop = dicom_output_uids(chosen, dicom_uid_key(segmenter), "dicom-seg")
        result = PacsResult(url, study_uid, chosen, scan.meta.get("description", ""), scan.shape[0], seg_series,
                            seg_sop, stored=False, skipped=skipped)
        seg_path = Path(tmp) / "orbitseg.seg.dcm"
        if server.has_instance(study_uid, seg_series, seg_sop):
            log(f"the server already holds this segmentation (DICOM-SEG {seg_sop}): nothing is stored")
            server.retrieve_instance(study_uid, seg_series, seg_sop, seg_path)
            labels = read_dicom_seg(seg_path, reference=scan)
        else:
            try:
                labels = segmenter.segment(scan).labels
            except OrbitsegError as exc:
                raise InputError(None, f"{where}, series {chosen}: {_problem(exc)}") from None
            write_dicom_seg(labels, scan, seg_path, series_instance_uid=seg_series, sop_instance_uid=seg_sop)
            log(f"storing the DICOM-SEG {seg_sop} (STOW-RS)")
            server.store([seg_path], study_uid)
            result.stored = True
        result.measurements = orbit_measurements(labels)
    return result


def _listing(series: list[dict]) -> str:
    return ", ".join(f"{s['modality'] or '?'} series {s['uid']}" + (f" ({s['description']})" if s["description"] else "")
                     for s in series)


def _problem(exc: OrbitsegError) -> str:
    """An error's problem without the temporary path it names (the user never saw that folder)."""
    return getattr(exc, "problem", None) or str(exc)
