"""``orbitseg pacs``: fetch a study's head CT from a PACS over DICOMweb, segment it, store the DICOM-SEG back.

1. QIDO-RS lists the study's series.  The DICOM-SEG's UIDs are fixed by the source series, the model and
   the settings (:func:`orbitseg.predict.run.dicom_output_uids`, the ones ``orbitseg predict --format
   dicom-seg`` writes), so when the study has one CT series QIDO-RS first asks whether the server already
   holds its SEG: if it does, nothing is fetched or stored ("already stored") and the volumes are read
   from the stored SEG.
2. Otherwise the CT series are retrieved (WADO-RS) into a temporary folder and read with
   :func:`orbitseg.io.read.read_scan`, so the series is chosen exactly as for a local folder
   (localizers and non-image objects set aside, several CT volumes refused unless ``series_uid`` names
   one).  Series of other modalities (MR, SEG, SR...) are listed but not retrieved.
3. Unless the chosen series' SEG is already there, the Segmenter segments the scan, the DICOM-SEG
   (referencing the source slices) is written to the temporary folder and stored with STOW-RS; the
   server must confirm it and list it afterwards.

:func:`segment_studies` does this for several studies, or for every study with a CT (``--new``).
Nothing is kept on disk: the temporary folder goes when the command ends.
"""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orbitseg.errors import AmbiguousSeriesError, InputError, OrbitsegError

__all__ = ["PacsResult", "segment_study", "segment_studies"]

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
    #: quality_flags of the labels on the scan (anatomy, field of view, fold disagreement when segmented here,
    #: acquisition); None when the scan was not fetched (a stored SEG's own frames are no scan to check)
    flags: list[dict] | None = None
    #: which of the quality checks were made (``quality_checks``; one network has no fold disagreement to check)
    checks: list[str] | None = None

    def describe(self) -> str:
        """The lines ``orbitseg pacs`` prints."""
        slices = f"{self.n_slices} slices" if self.n_slices else "slices not counted"
        lines = [f"study {self.study_uid} on {self.url}",
                 f"  CT series {self.series_uid} ({self.series_description or 'no description'}, "
                 f"{slices}) segmented"]
        for s in self.skipped:
            lines.append(f"  not retrieved: {s['modality'] or '?'} series {s['uid']} {s['description']}".rstrip())
        what = "stored (STOW-RS)" if self.stored else "already stored: nothing sent"
        lines.append(f"  DICOM-SEG series {self.seg_series_uid}, instance {self.seg_sop_uid}: {what}")
        for r in self.measurements:
            if r.get("side") in ("right", "left"):
                lines.append(f"  {r['side']:<5} orbit: eyeball {r['globe_ml']:.2f} mL, extraocular muscles "
                             f"{r['muscles_ml']:.2f} mL, optic nerve {r['nerve_ml']:.2f} mL")
        if self.flags is not None:
            from orbitseg.evaluate.quality import QUALITY_CHECKS, flags_summary

            missing = [c.replace("_", " ") for c in QUALITY_CHECKS if self.checks is not None and c not in self.checks]
            lines.append(f"  quality: {flags_summary(self.flags)}"
                         + (f" (not checked: {', '.join(missing)})" if missing else ""))
            lines += [f"    {f['side']}: {f['message']}" for f in self.flags]
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
    segmenter=None,
    server=None,
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
    segmenter, server : a loaded :class:`~orbitseg.predict.segmenter.Segmenter` (or a function returning one,
        called once the study is known to hold a CT) and a :class:`~orbitseg.io.dicomweb.DicomWeb` to use
        instead (several studies in a row)
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
    from orbitseg.evaluate.quality import quality_checks, quality_flags
    from orbitseg.io.dicomseg import read_dicom_seg, write_dicom_seg
    from orbitseg.io.read import read_label, read_scan
    from orbitseg.predict.core import finder_midline
    from orbitseg.predict.run import dicom_output_uids, dicom_uid_key
    from orbitseg.predict.segmenter import fold_limits, training_acquisition

    for what, uid in (("--study", study_uid), ("--series", series_uid)):
        if uid is not None and not _UID.fullmatch(uid):
            raise InputError(None, f"{what} {uid!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    where = f"study {study_uid} on {url}"
    server = server or _server(url, config, ca_bundle, credentials)
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
    if callable(segmenter):
        segmenter = segmenter()
    segmenter = segmenter or _segmenter(model, folds, device, precision, mirror, postprocess, engine, log)
    uid_key = dicom_uid_key(segmenter)
    with tempfile.TemporaryDirectory(prefix="orbitseg-pacs-") as tmp:
        seg_path = Path(tmp) / "orbitseg.seg.dcm"
        if len(wanted) == 1:  # the series the reader will take is known: is its SEG there already?
            one = wanted[0]
            seg_series, seg_sop = dicom_output_uids(one["uid"], uid_key, "dicom-seg")
            if server.has_instance(study_uid, seg_series, seg_sop):
                log(f"the server already holds this segmentation (DICOM-SEG {seg_sop}): nothing is fetched or stored")
                server.retrieve_instance(study_uid, seg_series, seg_sop, seg_path)
                labels = read_label(seg_path)  # on its own frames' grid: the volumes are the scan's
                return PacsResult(url, study_uid, one["uid"], one["description"], one["instances"] or 0, seg_series,
                                  seg_sop, stored=False, skipped=skipped, measurements=orbit_measurements(labels))
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
        seg_series, seg_sop = dicom_output_uids(chosen, uid_key, "dicom-seg")
        result = PacsResult(url, study_uid, chosen, scan.meta.get("description", ""), scan.shape[0], seg_series,
                            seg_sop, stored=False, skipped=skipped)
        if server.has_instance(study_uid, seg_series, seg_sop):
            log(f"the server already holds this segmentation (DICOM-SEG {seg_sop}): nothing is stored")
            server.retrieve_instance(study_uid, seg_series, seg_sop, seg_path)
            labels = read_dicom_seg(seg_path, reference=scan)
            agreement, midline = None, (lambda: finder_midline(scan))
        else:
            try:
                seg = segmenter.segment(scan, fold_agreement=True)
                labels, agreement, midline = seg.labels, seg.fold_agreement, seg.orbit_midline
            except OrbitsegError as exc:
                raise InputError(None, f"{where}, series {chosen}: {_problem(exc)}") from None
            write_dicom_seg(labels, scan, seg_path, series_instance_uid=seg_series, sop_instance_uid=seg_sop)
            log(f"storing the DICOM-SEG {seg_sop} (STOW-RS)")
            server.store([seg_path], study_uid)
            result.stored = True
        result.measurements = orbit_measurements(labels, midline_fallback=midline)
        train_acq = training_acquisition(segmenter)
        result.flags = quality_flags(labels, scan, agreement=agreement, measurements=result.measurements,
                                     training_acquisition=train_acq, fold_limits=fold_limits(segmenter))
        result.checks = quality_checks(fold_check=agreement is not None, training_acquisition=train_acq)
    return result


def segment_studies(
    url: str,
    study_uids: Sequence[str] | None = None,
    *,
    since: str | None = None,
    config: str | Path | None = None,
    ca_bundle: str | Path | None = None,
    credentials=None,
    model: str | Path | None = None,
    folds: str = "all",
    device: str = "cpu",
    precision: str = "auto",
    engine: str = "auto",
    mirror: bool = False,
    postprocess: bool = True,
    series_uid: str | None = None,
    log=print,
) -> tuple[list[PacsResult], list[str]]:
    """:func:`segment_study` for several studies, or for every study with a CT (``study_uids`` None; QIDO-RS
    ``ModalitiesInStudy=CT``, ``StudyDate`` from ``since``, YYYYMMDD): one model load, one connection.  A study
    already segmented by this model costs a QIDO-RS query and the SEG's retrieval, so rerunning this on a
    schedule processes the new studies.

    Returns
    -------
    (results, problems) : a study that cannot be segmented (no CT, not a head...) is named in ``problems``
        and the others go on; a server that fails (:class:`~orbitseg.io.dicomweb.DicomWebError`) stops the run
    """
    from orbitseg.io.dicomweb import DicomWebError

    if since is not None and not re.fullmatch(r"\d{8}", since):
        raise InputError(None, f"--since {since!r} is not a date YYYYMMDD")
    server = _server(url, config, ca_bundle, credentials)
    if study_uids is None:
        study_uids = server.studies(modality="CT", since=since)
        log(f"{len(study_uids)} stud{'y' if len(study_uids) == 1 else 'ies'} with a CT on {url}"
            + (f" since {since}" if since else ""))
    if series_uid is not None and len(study_uids) != 1:
        raise InputError(None, "--series names the series of one study; give one --study with it")
    segmenter = functools.cache(lambda: _segmenter(model, folds, device, precision, mirror, postprocess, engine, log))
    results, problems = [], []
    for uid in study_uids:
        try:
            results.append(segment_study(url, uid, series_uid=series_uid, segmenter=segmenter, server=server,
                                         log=log))
        except DicomWebError:
            raise  # the server itself fails: the next studies would too
        except OrbitsegError as exc:
            problems.append(str(exc))
    return results, problems


def _server(url, config, ca_bundle, credentials):
    from orbitseg.io.dicomweb import DicomWeb, credentials_from_env

    return DicomWeb(url, credentials=credentials if credentials is not None else credentials_from_env(config),
                    ca_bundle=ca_bundle)


def _segmenter(model, folds, device, precision, mirror, postprocess, engine, log):
    from orbitseg.predict.segmenter import Segmenter

    return Segmenter.load(model, folds=folds, device=device, precision=precision, mirror=mirror,
                          postprocess=postprocess, engine=engine, log=log)


def _listing(series: list[dict]) -> str:
    return ", ".join(f"{s['modality'] or '?'} series {s['uid']}" + (f" ({s['description']})" if s["description"] else "")
                     for s in series)


def _problem(exc: OrbitsegError) -> str:
    """An error's problem without the temporary path it names (the user never saw that folder)."""
    return getattr(exc, "problem", None) or str(exc)
