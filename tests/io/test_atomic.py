import pytest

from orbitseg.errors import ExistsError
from orbitseg.io.atomic import atomic_dir, atomic_path, exclusive_lock, write_text_atomic


def test_atomic_path_keeps_ending_and_renames(tmp_path):
    target = tmp_path / "a" / "lab.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    assert list(target.parent.iterdir()) == [target]


def test_atomic_path_refuses_to_overwrite(tmp_path):
    target = tmp_path / "lab.nii.gz"
    target.write_bytes(b"user labels")
    with pytest.raises(ExistsError, match="--overwrite"):
        with atomic_path(target):
            pass
    assert target.read_bytes() == b"user labels"
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(tmp_path, exc):
    target = tmp_path / "lab.nrrd"
    with pytest.raises(exc):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a fi")
            raise exc()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir(tmp_path):
    target = tmp_path / "series"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "1.dcm").write_bytes(b"x")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "1.dcm").write_bytes(b"x")
    assert (target / "1.dcm").exists() and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ExistsError):
        with atomic_dir(target):
            pass


def test_write_text_atomic(tmp_path):
    p = write_text_atomic(tmp_path / "x.json", "{}")
    assert p.read_text() == "{}"


def test_results_get_the_permissions_of_any_new_file(tmp_path):
    """mkstemp/mkdtemp create 0600/0700; an atomically written label, report or model folder must be
    readable by whoever may read a file the user writes normally (the umask decides)."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "model") as d:
            (d / "x").write_text("1")
        (tmp_path / "plain").write_text("")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == mode(tmp_path / "plain") == 0o640
    assert mode(tmp_path / "model") == 0o750


def test_exclusive_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    """A held lock refuses a second holder at once (no waiting), naming the folder and the holder's pid; a
    holder that is killed leaves the lock free (the kernel's flock, not a stale-file check)."""
    import os
    import signal
    import subprocess
    import sys

    from orbitseg.errors import InputError

    lock = tmp_path / "run" / ".lock"
    with exclusive_lock(lock, what="training"):
        with pytest.raises(InputError, match=rf"run.*in use.*pid {os.getpid()}.*training"):
            with exclusive_lock(lock, what="training"):
                pass
    with exclusive_lock(lock, what="training"):  # released at the end of the block
        pass
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from orbitseg.io.atomic import exclusive_lock\n"
        f"with exclusive_lock({str(lock)!r}, what='testing'):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"pid {child.pid}.*testing"):
            with exclusive_lock(lock, what="training"):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with exclusive_lock(lock, what="training"):  # the killed holder left no stale lock
        pass
