"""Atomic file writes: a temporary file in the target's folder, fsync, then a rename, so a crash or a
full disk never leaves a half-written file where a good one used to be. Shared by concept files and
the files exported for other tools."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from pathlib import Path


class UnwritableFile(OSError):
    """The folder or the disk refused the write; `defect` says why in plain words."""

    def __init__(self, target: Path, defect: str) -> None:
        self.target = target
        self.defect = defect
        super().__init__(f"'{target}': {defect}")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); not possible/needed on Windows."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exists(what: str, target: Path) -> FileExistsError:
    return FileExistsError(f"{what} '{target}' already exists; pass overwrite=True to replace it")


def refuse_existing(target: Path, *, overwrite: bool, what: str) -> None:
    """Raise FileExistsError (naming `what`) when `target` exists and `overwrite` is False.

    `write_atomic` checks this itself; a caller checks it first too when preparing the bytes is
    costly or can fail, so the name conflict is what the user hears about."""
    if not overwrite and os.path.lexists(target):
        raise _exists(what, target)


def _commit_no_clobber(tmp: str, target: Path, what: str) -> None:
    """Move tmp to target only if target does not exist, atomically where the filesystem allows."""
    try:
        os.link(tmp, target)  # fails atomically with FileExistsError if target appeared meanwhile
    except FileExistsError:
        raise _exists(what, target) from None
    except OSError:  # no hard links here (FAT, some network shares): check then rename
        if os.path.lexists(target):
            raise _exists(what, target) from None
        os.replace(tmp, target)
    else:
        os.unlink(tmp)


def write_atomic(data: bytes, target: Path, *, overwrite: bool, what: str) -> Path:
    """Write `data` to `target` completely or not at all. Raises FileExistsError (naming `what`)
    when the file exists and `overwrite` is False, UnwritableFile when the folder or disk refuses."""
    refuse_existing(target, overwrite=overwrite, what=what)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)  # a fresh install has no such folder yet
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise UnwritableFile(
            target, f"the folder {directory} does not accept new files ({e.strerror or e})"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.name == "posix":
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are meant to be shared
        if overwrite:
            os.replace(tmp, target)
        else:
            _commit_no_clobber(tmp, target, what)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise UnwritableFile(target, f"the file could not be written ({e.strerror or e})") from None
        raise
    _fsync_dir(directory)
    _remove_stale_temporaries(target)
    return target


STALE_TEMPORARY_S = 3600.0


def _remove_stale_temporaries(target: Path) -> None:
    """Deletes this file's leftover temporaries from writers killed mid-save (SIGKILL, power loss).

    Only those untouched for an hour: a live writer's temporary is seconds old."""
    cutoff = time.time() - STALE_TEMPORARY_S
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                leftover.unlink()
