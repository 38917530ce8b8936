"""Atomic writes: a file appears complete under its final name or not at all.

The temporary beside the target is hidden and names the process writing it,
``.{name}.orbitseg-{pid}-{random}.tmp{ending}``, so that one left by a killed
process is recognisable: :func:`remove_stale_temporaries` removes those whose
process is gone (``orbitseg predict`` does so in its OUTPUT folder).  A target
that cannot be written (a file where a folder is needed, a folder without
write permission, a read-only file system) is an
:class:`~orbitseg.errors.OutputError` naming it, not a traceback.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orbitseg.errors import ExistsError, InputError, OutputError
from orbitseg.io.formats import split_ending

__all__ = ["atomic_path", "atomic_dir", "write_text_atomic", "remove_stale_temporaries", "exclusive_lock",
           "TEMPORARY_RE"]

#: the name of every temporary file or folder this module makes: group ``pid`` is the writing process
TEMPORARY_RE = re.compile(r"^\..*\.orbitseg-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp(?:\..*)?$")


def _tmp_prefix(name: str) -> str:
    return f".{name}.orbitseg-{os.getpid()}-"


def _alive(pid: int) -> bool:
    """True while process ``pid`` exists on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries this module left in ``folder`` (not below it) when its process was killed.

    Only names of :data:`TEMPORARY_RE` whose process no longer exists are removed, so a write in progress
    in another orbitseg process is never touched.  Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = TEMPORARY_RE.match(p.name)
        if m is None or _alive(int(m.group("pid"))):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # not ours to fight over: it stays, hidden
    return removed


def _writable_parent(path: Path) -> None:
    """Create ``path``'s folder; an OutputError naming ``path`` when that cannot be done."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(path, _why_not_writable(path, exc)) from None


def _why_not_writable(path: Path, exc: OSError) -> str:
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        return f"cannot be written: {anc} is a file, not a folder"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot be written: no permission to write in {anc}"
    if exc.errno == errno.EROFS:
        return f"cannot be written: {anc} is on a read-only file system"
    return f"cannot be written ({exc.strerror or type(exc).__name__})"


def _umask() -> int:
    """The process umask, read without changing it where the OS says it (Linux), since
    setting it to read it back races with other threads creating files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the file's ending (``.nii.gz``, ``.seg.nrrd``...)
    because writers pick the format from it.  On any exception, including
    KeyboardInterrupt, the temporary file is removed and ``path`` is untouched.

    Raises
    ------
    ExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExistsError(path)
    if path.is_dir():
        raise OutputError(path, "is a folder; a file cannot be written in its place")
    _writable_parent(path)
    stem, ending = split_ending(path.name)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(stem), suffix=f".tmp{ending}", dir=path.parent)
    except OSError as exc:
        raise OutputError(path, _why_not_writable(path, exc)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should read like any new file
    try:
        yield tmp
        if path.exists() and not overwrite:  # appeared while we were writing
            raise ExistsError(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder (e.g. a DICOM series)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExistsError(path)
    if path.exists() and not path.is_dir():
        raise OutputError(path, "is a file; a folder cannot be written in its place")
    _writable_parent(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise OutputError(path, _why_not_writable(path, exc)) from None
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise ExistsError(path)
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text_atomic(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (JSON, CSV, HTML...)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def exclusive_lock(path: str | Path, *, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` (created if needed) for the ``with`` block, or refuse at once.

    Two processes writing one folder (two ``orbitseg train`` given the same ``--out``) would interleave
    checkpoints and logs; the second is refused with an :class:`~orbitseg.errors.InputError` naming the
    folder and the process holding it.  The lock is the kernel's (``flock``): it goes with the process, so
    a killed one leaves no stale lock (the file itself stays).  Where ``fcntl`` does not exist (Windows) the
    block runs unlocked.

    Parameters
    ----------
    path : the lock file, in the folder it guards
    what : what the holder does there, written into the file for a refused process's message (``"training"``)
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path)
    _writable_parent(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(path, _why_not_writable(path, exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, doing = os.pread(fd, 200, 0).decode("utf-8", "replace").strip().partition(" ")
            raise InputError(path.parent, f"is in use: another process (pid {pid or 'unknown'}) is "
                                          f"{doing or 'writing'} there; wait for it to finish or choose another "
                                          "folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)  # for the message of a refused process
        yield
    finally:
        os.close(fd)  # releases the lock
