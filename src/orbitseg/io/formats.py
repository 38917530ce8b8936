"""The one registry of file formats: which endings orbitseg reads and writes, and as what.

Every module that needs to know a file ending asks here: readers pick the ITK
ImageIO, writers refuse endings they cannot write, ``orbitseg import`` tells a
label file from a scan, ``orbitseg evaluate`` finds label files, the CLI offers
``predict --format`` choices.

>>> format_of("case_007_0000.nii.gz").name, format_of("case_007.SEG.NRRD").name
('nifti', 'seg.nrrd')
>>> split_ending("case_001_0000.nii.gz")
('case_001_0000', '.nii.gz')

A DICOM series is a folder, not an ending: :func:`format_of` gives
:data:`DICOM_SERIES` for any folder.  This module imports nothing heavy (the
CLI reads it while parsing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orbitseg.constants import FILE_ENDING

__all__ = [
    "FileFormat", "FORMATS", "DICOM_SERIES", "ENDINGS", "SCAN_ENDINGS", "LABEL_READ_ENDINGS",
    "SCAN_WRITE_ENDINGS", "LABEL_WRITE_ENDINGS", "DEFAULT_FORMAT", "split_ending", "format_of",
]

#: how a format is written: SimpleITK, orbitseg's 3D Slicer segmentation writer, or a DICOM series writer
WRITERS: tuple[str, ...] = ("sitk", "slicer_seg", "dicom")
#: header layouts orbitseg checks itself before a library reads the file (orbitseg.io.guard.GUARDS; DICOM
#: headers are checked by orbitseg.io.dicom)
HEADERS: tuple[str, ...] = ("nifti", "nrrd", "metaimage", "dicom")


@dataclass(frozen=True)
class FileFormat:
    """One kind of file (or folder) orbitseg reads or writes."""

    #: lower-case ending including its dot(s); "" for a folder (DICOM series)
    ending: str
    #: short name recorded as ``Volume.meta["format"]``
    name: str
    #: what it is, for people
    what: str
    #: SimpleITK ImageIO that must read it (None: not read through one ImageIO, i.e. DICOM)
    itk_io: str | None
    #: how orbitseg writes it (one of WRITERS), None when it does not (two-file formats are not atomic)
    writer: str | None
    #: read_scan reads a CT scan from it
    reads_scan: bool
    #: read_label reads a label volume from it
    reads_label: bool
    #: write_scan writes a CT scan to it
    writes_scan: bool = False
    #: write_label (and so ``predict --format``) writes a label volume to it
    writes_label: bool = False
    #: holds named segments (3D Slicer), read by name and always a label, never a scan
    segments: bool = False
    #: the header layout checked before any library reads the file (one of HEADERS); a readable format
    #: must name one, so that no file reaches ITK unchecked
    header: str | None = None

    def __post_init__(self) -> None:
        if self.ending != self.ending.lower():
            raise ValueError(f"ending {self.ending!r} must be lower case")
        if self.writer is not None and self.writer not in WRITERS:
            raise ValueError(f"writer must be one of {WRITERS} or None, got {self.writer!r}")
        if self.writes_scan and not (self.reads_scan and self.writer):
            raise ValueError(f"{self.ending}: a scan format written must be readable and have a writer")
        if self.writes_label and not (self.reads_label and self.writer):
            raise ValueError(f"{self.ending}: a label format written must be readable and have a writer")
        if self.segments and self.reads_scan:
            raise ValueError(f"{self.ending}: a segmentation holds labels, not a scan")
        if (self.reads_scan or self.reads_label) and self.header not in HEADERS:
            raise ValueError(f"{self.ending}: a format that is read must name its header layout, one of {HEADERS}, "
                             f"checked before any library reads it (got {self.header!r})")


#: ending -> format, in the order messages and ``predict --format`` list them
FORMATS: dict[str, FileFormat] = {
    f.ending: f
    for f in (
        FileFormat(".nii.gz", "nifti", "NIfTI-1, gzip-compressed (the project's own format)", "NiftiImageIO",
                   "sitk", reads_scan=True, reads_label=True, writes_scan=True, writes_label=True, header="nifti"),
        FileFormat(".nii", "nifti", "NIfTI-1, uncompressed", "NiftiImageIO",
                   "sitk", reads_scan=True, reads_label=True, writes_scan=True, writes_label=True, header="nifti"),
        FileFormat(".seg.nrrd", "seg.nrrd", "3D Slicer segmentation (labelmap NRRD with named, coloured segments)",
                   "NrrdImageIO", "slicer_seg", reads_scan=False, reads_label=True, writes_label=True,
                   segments=True, header="nrrd"),
        FileFormat(".nrrd", "nrrd", "NRRD, one file", "NrrdImageIO",
                   "sitk", reads_scan=True, reads_label=True, writes_scan=True, writes_label=True, header="nrrd"),
        FileFormat(".nhdr", "nrrd", "NRRD header beside a separate data file", "NrrdImageIO",
                   None, reads_scan=True, reads_label=True, header="nrrd"),
        FileFormat(".mha", "metaimage", "MetaImage, one file", "MetaImageIO",
                   "sitk", reads_scan=True, reads_label=True, writes_scan=True, header="metaimage"),
        FileFormat(".mhd", "metaimage", "MetaImage header beside a separate data file", "MetaImageIO",
                   None, reads_scan=True, reads_label=True, header="metaimage"),
    )
}

#: a DICOM CT series: a folder of one-slice files (read by orbitseg.io.dicom, written by write_dicom_series)
DICOM_SERIES = FileFormat("", "dicom", "DICOM CT series (a folder of one-slice files)", None, "dicom",
                          reads_scan=True, reads_label=False, header="dicom")

#: every file ending orbitseg knows
ENDINGS: tuple[str, ...] = tuple(FORMATS)
#: endings of single-file scans we read (a DICOM series is a folder)
SCAN_ENDINGS: tuple[str, ...] = tuple(e for e, f in FORMATS.items() if f.reads_scan)
#: endings of label files we read
LABEL_READ_ENDINGS: tuple[str, ...] = tuple(e for e, f in FORMATS.items() if f.reads_label)
#: endings write_scan accepts (.mhd / .nhdr are left out: they are two files, not atomic)
SCAN_WRITE_ENDINGS: tuple[str, ...] = tuple(e for e, f in FORMATS.items() if f.writes_scan)
#: endings a label volume may be written with (write_label, ``predict --format``); the label files
#: ``orbitseg evaluate`` matches
LABEL_WRITE_ENDINGS: tuple[str, ...] = tuple(e for e, f in FORMATS.items() if f.writes_label)
#: the format of every file the project writes by default (constants.FILE_ENDING)
DEFAULT_FORMAT: FileFormat = FORMATS[FILE_ENDING]


def split_ending(name: str, endings: tuple[str, ...] = ENDINGS) -> tuple[str, str]:
    """Split a file name into stem and its longest known ending (matched without regard to case;
    the ending is returned as written).

    >>> split_ending("a.seg.nrrd"), split_ending("X.MHA"), split_ending("notes.txt")
    (('a', '.seg.nrrd'), ('X', '.MHA'), ('notes.txt', ''))
    """
    lower = name.lower()
    for ending in sorted(endings, key=len, reverse=True):
        if lower.endswith(ending):
            return name[: -len(ending)], name[-len(ending):]
    return name, ""


def format_of(path: str | Path, endings: tuple[str, ...] = ENDINGS) -> FileFormat | None:
    """The format of ``path``: :data:`DICOM_SERIES` for an existing folder, else the format of its
    longest ending among ``endings``; None when it has none of them."""
    path = Path(path)
    if path.is_dir():
        return DICOM_SERIES
    _, ending = split_ending(path.name, endings)
    return FORMATS[ending.lower()] if ending else None
