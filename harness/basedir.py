"""Prepare a ComfyUI ``--base-directory`` shared by the in-process host and the HTTP server.

Layout (everything ComfyUI derives from ``--base-directory``)::

    BASE/
      models/checkpoints/   fixture checkpoints (symlinks; copies where links are impossible)
      models/perfusion/     concept files for the pack: NOT created here, as on a stock ComfyUI
                            (the pack's first save creates it)
      custom_nodes/
        comfyui-perfusion -> <repo root>   (when load_pack=True)
        <name>            -> extra custom nodes (a .py file or a package folder)
      input/ output/ temp/ user/
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.fixture_checkpoint import LAYOUTS, FixtureSpec, fixture_checkpoint
from harness.paths import repo_root

__all__ = [
    "PACK_DIR_NAME",
    "TEST_NODES_NAME",
    "BaseDir",
    "CheckpointLike",
    "harness_test_nodes",
    "link_into",
    "prepare_base_dir",
]

PACK_DIR_NAME = "comfyui-perfusion"
TEST_NODES_NAME = "harness_test_nodes.py"


def harness_test_nodes() -> dict[str, Path]:
    """``custom_nodes`` entry for the harness's own test nodes (``HarnessRaise``, ``HarnessProgress``)."""
    return {TEST_NODES_NAME: Path(__file__).resolve().parent / "comfy_test_nodes.py"}


# A fixture layout name ("tiny"), a FixtureSpec (variants), or a path to an existing checkpoint file.
CheckpointLike = str | FixtureSpec | os.PathLike


@dataclass(frozen=True)
class BaseDir:
    root: Path
    checkpoint_names: tuple[str, ...]  # file names as prompts use them (ckpt_name)
    load_pack: bool

    @property
    def checkpoints(self) -> Path:
        return self.root / "models" / "checkpoints"

    @property
    def perfusion(self) -> Path:
        return self.root / "models" / "perfusion"

    @property
    def custom_nodes(self) -> Path:
        return self.root / "custom_nodes"

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def temp(self) -> Path:
        return self.root / "temp"

    @property
    def user(self) -> Path:
        return self.root / "user"


def resolve_checkpoint(item: CheckpointLike) -> Path:
    """A fixture layout name / FixtureSpec (built and cached on demand) or an existing file."""
    if isinstance(item, FixtureSpec):
        return fixture_checkpoint(item.layout, context_dim=item.context_dim, seed=item.seed)
    if isinstance(item, str) and item in LAYOUTS:
        return fixture_checkpoint(item)
    path = Path(item)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def link_into(folder: str | os.PathLike, source: str | os.PathLike, name: str | None = None) -> Path:
    """Symlink ``source`` into ``folder`` as ``name`` (default: its own name), replacing whatever was
    there; copies when symlinks are not available. Returns the new path."""
    folder = Path(folder)
    source = Path(source).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / (name or source.name)
    if dest.is_symlink() and dest.resolve() == source:
        return dest  # already linked: leave the folder's mtime (ComfyUI's file-list cache key) alone
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.is_dir():
        shutil.rmtree(dest)
    try:
        dest.symlink_to(source, target_is_directory=source.is_dir())
    except OSError:
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copy2(source, dest)
    return dest


def prepare_base_dir(
    base_dir: str | os.PathLike,
    checkpoints: Iterable[CheckpointLike] = ("tiny",),
    load_pack: bool = True,
    custom_nodes: Mapping[str, str | os.PathLike] | None = None,
) -> BaseDir:
    """Create (or refresh) a base directory. Idempotent; safe to call on an existing one.

    ``checkpoints``: fixture layout names, :class:`FixtureSpec` variants or paths to checkpoint files.
    ``load_pack``: link the repo (this pack) into ``custom_nodes/comfyui-perfusion`` (removed if False).
    ``custom_nodes``: extra ``{name: path}`` entries for ``custom_nodes/`` (a ``.py`` file or a folder).
    """
    root = Path(base_dir).resolve()
    for sub in ("models/checkpoints", "custom_nodes", "input", "output", "temp", "user"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    names = []
    for item in checkpoints:
        names.append(link_into(root / "models" / "checkpoints", resolve_checkpoint(item)).name)

    pack_link = root / "custom_nodes" / PACK_DIR_NAME
    if load_pack:
        link_into(root / "custom_nodes", repo_root(), PACK_DIR_NAME)
    elif pack_link.is_symlink() or pack_link.is_file():
        pack_link.unlink()
    elif pack_link.is_dir():
        shutil.rmtree(pack_link)

    for name, source in (custom_nodes or {}).items():
        link_into(root / "custom_nodes", source, name)

    return BaseDir(root=root, checkpoint_names=tuple(names), load_pack=load_pack)
