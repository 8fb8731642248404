"""Writing files so that nothing is lost: one atomic-write helper for every output of the package.

A file is written under a temporary name beside its destination and renamed into place
only when complete, so an interrupted write never leaves output that looks finished, and
an existing file is replaced only when the caller asks for it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

TMP_SUFFIX = ".tmp"


class OutputExistsError(FileExistsError):
    """The destination exists and the caller did not ask to replace it."""


def temporary_path(path: Path) -> Path:
    """A hidden name beside `path`, unique to this process: `.NAME.<pid>-<hex>.tmp`."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = True) -> Path:
    """write(tmp) into a temporary file beside `path`, then rename it into place.

    overwrite: False refuses (before any work) when `path` exists, naming it.
    The temporary file is removed on every exit path that Python sees.
    returns: `path`.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path} exists; pass overwrite (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
