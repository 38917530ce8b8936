"""Exceptions a user sees.  Each names the file and says what is wrong."""

from __future__ import annotations

from pathlib import Path


class OrbitsegError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero."""


class InputError(OrbitsegError, ValueError):
    """Bad input: missing, corrupt, not an image, not CT, mismatched geometry...

    Parameters
    ----------
    path : path of the offending file or folder (or None when there is none)
    problem : what is wrong, in words a user can act on
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class NotCTError(InputError):
    """The volume's values are not Hounsfield units of a CT scan."""


class GeometryMismatchError(InputError):
    """A label volume does not sit on the grid of its scan."""


class AmbiguousSeriesError(InputError):
    """A DICOM folder holds several series and the user must pick one."""

    def __init__(self, path: str | Path, series: list[dict]):
        self.series = series
        lines = [
            f"  {s['uid']}  {s.get('modality', '?'):3s} {s.get('n_files', '?'):4} files  "
            f"{s.get('description', '')}"
            for s in series
        ]
        super().__init__(
            path,
            "holds several image series; choose one with --series UID:\n" + "\n".join(lines),
        )


class OutputError(OrbitsegError, OSError):
    """An output cannot be written where it was asked for: a file stands where a folder is needed,
    a folder is not writable, a read-only file system...

    Parameters
    ----------
    path : the output path that cannot be written
    problem : what is wrong, in words a user can act on
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ExistsError(OrbitsegError, FileExistsError):
    """Refusing to overwrite a user's file without --overwrite."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        super().__init__(f"{self.path}: already exists; pass --overwrite to replace it")
