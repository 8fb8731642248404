"""Writing files so that nothing is lost: one atomic-write helper for every output of the package.

A file is written under a temporary name beside its destination, flushed to the disk and
moved into place only when complete, so an interrupted write never leaves output that looks
finished. Before any work the destination is checked: an existing file is replaced only when
the caller asks for it (never a write-protected one), the folder must be writable, and when
the size of the output is known the file system must have room for it. A full disk is one
`NoSpaceError` naming the file and the bytes needed.

Temporaries are named `.NAME.<pid>-<hex>.tmp` after the process writing them. They are removed
on every exit path that Python sees; those of a process killed outright are removed by the
next write to the same destination, once their process is gone.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

TMP_SUFFIX = ".tmp"


class OutputError(OSError):
    """An output that cannot be written; the message, one line, names the file and why."""

    def __str__(self):
        return self.strerror or super().__str__()


class OutputExistsError(OutputError, FileExistsError):
    """The destination exists and the caller did not ask to replace it."""


class OutputNotWritableError(OutputError, PermissionError):
    """The destination is write-protected or its folder cannot be written."""


class NoSpaceError(OutputError):
    """The file system has no room for the output; the message names the file and the bytes."""


def temporary_path(path: Path) -> Path:
    """A hidden name beside `path`, unique to this process: `.NAME.<pid>-<hex>.tmp`."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


def _writer_pid(tmp: Path, path: Path) -> int | None:
    """The pid in a temporary's name if it is one of `path`'s, else None."""
    match = re.fullmatch(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]+{re.escape(TMP_SUFFIX)}", tmp.name)
    return int(match.group(1)) if match else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of `path` left by writers that no longer run; returns them.

    A live writer's temporary (its pid still runs) is kept, as is any other file.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = [tmp for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}")
             if (pid := _writer_pid(tmp, path)) is not None and pid != os.getpid() and not _alive(pid)]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still use on the file system holding `folder`."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def check_free_space(path: str | os.PathLike, nbytes: int, *, what: str = "") -> None:
    """NoSpaceError naming `path` unless its folder's file system has `nbytes` free."""
    path = Path(path)
    free = free_bytes(path.parent)
    if nbytes > free:
        raise no_space(path, nbytes, free, what)


def no_space(path: Path, nbytes: int | None, free: int | None, what: str = "") -> NoSpaceError:
    needs = f"needs {nbytes:,} bytes ({nbytes / 2**20:.1f} MiB)" if nbytes is not None else "ran out of space"
    has = f", {free:,} bytes free" if free is not None else ""
    return NoSpaceError(errno.ENOSPC, f"{path}: not enough free space in {path.parent}: {needs}{what}{has}")


def check_destination(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse, naming `path`, before any work: an existing file unless `overwrite`, a
    write-protected one always, a folder that cannot be created or written. Removes the
    stale temporaries of `path`. Returns `path`."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder, not a file")
    if path.exists():
        if not overwrite:
            raise OutputExistsError(f"{path} exists; pass overwrite (--overwrite) to replace it")
        if not path.stat().st_mode & 0o222:
            raise OutputNotWritableError(f"{path} is write-protected; make it writable (chmod u+w) to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = temporary_path(path)
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise OutputNotWritableError(f"{path}: cannot write to the folder {path.parent}: "
                                     f"{err.strerror or err}") from None
    remove_stale_temporaries(path)
    return path


@contextmanager
def temporary_beside(path: str | os.PathLike, *, overwrite: bool, nbytes: int | None = None) -> Iterator[Path]:
    """with temporary_beside(path, ...) as tmp: write tmp; it is moved to `path` on success.

    Checks first (`check_destination`, and `check_free_space` when `nbytes` is known).
    On success the temporary is flushed to the disk and moved into place, atomically; with
    `overwrite` False a `path` that appeared meanwhile (another writer) is kept and this
    write refused. On any exception the temporary is removed; running out of space becomes
    a NoSpaceError naming `path`.
    """
    path = check_destination(path, overwrite=overwrite)
    if nbytes is not None:
        check_free_space(path, nbytes)
    tmp = temporary_path(path)
    try:
        yield tmp
        _fsync(tmp)
        _publish(tmp, path, overwrite)
        _fsync(path.parent)
    except OSError as err:
        if err.errno == errno.ENOSPC and not isinstance(err, NoSpaceError):
            raise no_space(path, nbytes, free_bytes(path.parent), "") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path, overwrite: bool):
    if overwrite:
        os.replace(tmp, path)
        return
    try:   # a hard link never replaces: of two writers racing to a new file, one is refused
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(f"{path} was created by another writer meanwhile; kept it, "
                                f"pass overwrite (--overwrite) to replace it") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if path.exists():   # a file system without hard links: check, then rename
            raise OutputExistsError(f"{path} was created by another writer meanwhile; kept it") from None
        os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = True,
                 nbytes: int | None = None) -> Path:
    """write(tmp) into a temporary file beside `path`, then move it into place.

    overwrite: False refuses (before any work) when `path` exists, naming it.
    nbytes:    the size of the output when known: refused before any work without the room.
    The temporary file is removed on every exit path that Python sees.
    returns: `path`.
    """
    path = Path(path)
    with temporary_beside(path, overwrite=overwrite, nbytes=nbytes) as tmp:
        write(tmp)
    return path


def drop_from_page_cache(path: str | os.PathLike) -> bool:
    """Ask the kernel to forget the cached pages of one file (no root needed), so that the next
    read comes from the disk; False where the system has no `posix_fadvise`."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # only clean pages can be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    finally:
        os.close(fd)


def available_memory() -> int | None:
    """Bytes of memory the kernel can give without swapping (MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_ahead(path: str | os.PathLike) -> bool:
    """Ask the kernel to start reading a whole file into the page cache in the background, so
    that a reader working through it (checksums, conversion) finds its next bytes already
    read. Only for a file smaller than half the available memory, where prefetching cannot
    push out what it prefetched; False where not done."""
    memory = available_memory()
    if not hasattr(os, "posix_fadvise") or memory is None or os.path.getsize(path) > memory // 2:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        return True
    finally:
        os.close(fd)
