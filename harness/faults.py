"""Fault injection for the reliability tests: a concept folder that refuses writes, or has no space left.

Why: tests run as root in CI containers, where ``chmod 0o555`` stops nothing. These helpers find a
mechanism that really makes writes fail (an immutable directory, a read-only bind mount, a tiny full
tmpfs, or RLIMIT_FSIZE as the unprivileged last resort) and say which one they used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

__all__ = ["FaultUnavailable", "no_space", "read_only", "rss_bytes", "temp_files"]


class FaultUnavailable(RuntimeError):
    """No mechanism of this machine can inject the fault (tests skip with this message)."""


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default)."""
    return psutil.Process(pid).memory_info().rss


def temp_files(folder: Path) -> list[str]:
    """What an interrupted atomic save could leave behind (``.<name>.<random>.tmp``)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _run(*cmd: str) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _refuses_new_files(folder: Path) -> bool:
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return True
    os.close(fd)
    os.unlink(probe)
    return False


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """No file can be created, renamed or removed in ``folder`` while inside; yields the mechanism."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield "chmod 0o555"
        finally:
            folder.chmod(mode)
        return
    if _run("chattr", "+i", str(folder)):
        try:
            if _refuses_new_files(folder):
                yield "chattr +i"
                return
        finally:
            _run("chattr", "-i", str(folder))
    if _run("mount", "--bind", str(folder), str(folder)):
        try:
            if _run("mount", "-o", "remount,ro,bind", str(folder)) and _refuses_new_files(folder):
                yield "read-only bind mount"
                return
        finally:
            _run("umount", str(folder))
    raise FaultUnavailable("cannot make a folder read-only for root here (no chattr, no bind mount)")


def _fill(folder: Path) -> None:
    with open(folder / "filler.bin", "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return


@contextlib.contextmanager
def no_space(folder: Path) -> Iterator[str]:
    """Writing new data into ``folder`` fails while inside; yields the mechanism.

    Preferred: a small tmpfs mounted over the folder (its files copied in first so they stay visible),
    then filled up: writes fail with ENOSPC. Without mount rights: RLIMIT_FSIZE of this process lowered
    to 1 byte, so any write that grows a file fails with EFBIG (Python ignores SIGXFSZ).
    """
    if os.geteuid() == 0:
        with tempfile.TemporaryDirectory() as keep:
            files = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
            for item in files:  # the mount hides them: copy them in again
                shutil.copy2(item, keep)
            if _run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)):
                try:
                    for item in files:
                        shutil.copy2(Path(keep) / item.name, folder / item.name)
                    _fill(folder)
                    yield "full tmpfs (ENOSPC)"
                finally:
                    _run("umount", str(folder))
                return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
    try:
        yield "RLIMIT_FSIZE=1 (EFBIG)"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
