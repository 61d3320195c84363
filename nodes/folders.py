"""The `models/perfusion` folder: registration and safe name resolution."""

from __future__ import annotations

import os
import re

import folder_paths

FOLDER = "perfusion"
EXTENSIONS = {".safetensors"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")


def register() -> None:
    """Adds models/perfusion (safetensors only), keeping paths users set in extra_model_paths.yaml.

    `add_model_folder_path` on a new name would give an empty extension filter (every file
    listed), so the entry is merged by hand.
    """
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths, _ = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    paths = list(paths)
    if default not in paths:
        paths.insert(0, default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))


def concept_names() -> list[str]:
    return folder_paths.get_filename_list(FOLDER)


def resolve(name: str) -> str:
    """Full path of a concept file named by a widget; only inside the registered folders."""
    if not name or not name.endswith(".safetensors"):
        raise ValueError(f"Perfusion concept '{name}': only .safetensors concept files are loaded")
    path = folder_paths.get_full_path(FOLDER, name) or _listed_entry(name)
    if path is None:
        raise FileNotFoundError(
            f"Perfusion concept '{name}' was not found in {folder_paths.get_folder_paths(FOLDER)}"
        )
    real = os.path.realpath(path)
    roots = [os.path.realpath(p) for p in folder_paths.get_folder_paths(FOLDER)]
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise ValueError(f"Perfusion concept '{name}' resolves outside the perfusion model folders")
    return path


def _listed_entry(name: str) -> str | None:
    """An entry the dropdown lists that is not a regular file (FIFO, socket, dangling link), so the
    reader can say what is wrong with it instead of "not found"."""
    relative = os.path.relpath(os.path.join(os.sep, name), os.sep)
    for root in folder_paths.get_folder_paths(FOLDER):
        candidate = os.path.join(root, relative)
        if os.path.lexists(candidate):
            return candidate
    return None


def file_state(name: str) -> str | float:
    """Cache key of a concept file for IS_CHANGED: re-run when the file changes on disk, not only when
    the widget does (NaN, never equal to itself, when it cannot be read: the node runs and reports)."""
    try:
        stat = os.stat(resolve(name))
    except (OSError, ValueError):
        return float("nan")
    return f"{stat.st_mtime_ns}-{stat.st_size}"


def new_file(folder: str, name: str, what: str) -> str:
    """<the first `folder` directory>/<name>.safetensors for a plain file name typed in widget `what`."""
    stem = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
    if not _NAME.match(stem) or ".." in stem:
        raise ValueError(
            f"{what} '{name}': use letters, digits, '_', '-' or '.' only (no folders), e.g. 'hugsy_teddy'"
        )
    return os.path.join(folder_paths.get_folder_paths(folder)[0], stem + ".safetensors")


def name_taken(name: str, path: str | os.PathLike[str]) -> ValueError:
    """The error for a widget's file name whose file exists while 'overwrite' is off: the graph's
    words for it (the widget, the choice), not the library's."""
    return ValueError(
        f"name '{name}': {path} already exists; turn on 'overwrite' to replace it or choose another name"
    )
