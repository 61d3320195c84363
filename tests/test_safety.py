"""Safety: the pack never executes what a file or a widget gives it.

A static scan of the pack's own source (``ast``) finds no unpickling, no dynamic code and no process
spawning; widget file names only ever resolve inside the registered perfusion folders. (Size limits
checked before allocation are covered by tests/test_hostile_core.py.)
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACK_SOURCES = [
    ROOT / "__init__.py",
    *sorted((ROOT / "nodes").rglob("*.py")),
    *sorted((ROOT / "perfusion_core").rglob("*.py")),
]

BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "joblib", "subprocess", "pip"}
BANNED_CALLS = {"eval", "exec", "__import__", "compile"}
BANNED_ATTRIBUTES = {
    "torch.load",
    "torch.jit.load",
    "numpy.load",
    "np.load",
    "os.system",
    "os.popen",
    "os.execv",
    "os.execve",
    "os.execvp",
    "os.spawnv",
    "os.spawnl",
    "os.fork",
    "os.posix_spawn",
    "importlib.import_module",
}


def dotted(node: ast.AST) -> str | None:
    """'a.b.c' for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def findings(source: str, filename: str = "<string>") -> list[str]:
    """Every banned import, call or attribute in `source`, as 'file:line: what'."""
    found = []
    aliases: dict[str, str] = {}  # local name -> module it stands for ("np" -> "numpy")
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name
                if alias.name.split(".")[0] in BANNED_MODULES:
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            for alias in node.names:
                if top in BANNED_MODULES or f"{node.module}.{alias.name}" in BANNED_ATTRIBUTES:
                    found.append(f"{where}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BANNED_CALLS:
            found.append(f"{where}: call {node.func.id}()")
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            if name is None:
                continue
            head, _, rest = name.partition(".")
            full = f"{aliases.get(head, head)}.{rest}" if rest else name
            if name in BANNED_ATTRIBUTES or full in BANNED_ATTRIBUTES:
                found.append(f"{filename}:{node.lineno}: {name}")
    return found


def test_the_scanner_catches_what_it_looks_for():
    bad = """
import pickle, subprocess as sp
from pip._internal import main
from torch import load
import numpy as np
import os, torch
x = eval("1")
exec("y = 2")
torch.load("f.pt")
np.load("a.npy", allow_pickle=True)
os.system("ls")
__import__("os")
"""
    found = findings(bad)
    for what in ["pickle", "subprocess", "pip", "torch import load", "eval", "exec", "torch.load", "np.load"]:
        assert any(what in f for f in found), (what, found)
    assert any("os.system" in f for f in found) and any("__import__" in f for f in found)
    assert findings("import torch\nfrom safetensors.torch import load\nx = torch.zeros(1)\n") == []


def test_pack_source_has_no_unpickling_dynamic_code_or_process_spawning():
    assert len(PACK_SOURCES) > 10
    found = []
    for path in PACK_SOURCES:
        found += findings(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    print(f"scanned {len(PACK_SOURCES)} files of the pack: {len(found)} findings")
    assert not found, "\n".join(found)


def test_concept_files_are_read_through_safetensors_only():
    """The only module that turns concept bytes into tensors uses safetensors (from bytes we bounded)."""
    users = []
    for path in PACK_SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and dotted(node) in (
                "safetensors.torch.load",
                "safetensors.torch.load_file",
            ):
                users.append((path.name, dotted(node)))
    print("safetensors readers:", users)
    assert users == [("concept_file.py", "safetensors.torch.load")]


# ---- widget file names ------------------------------------------------------------------------------------


@pytest.fixture()
def folders(perfusion_pack, comfy_host):
    module = perfusion_pack.nodes.folders
    yield module
    comfy_host.folder_paths.filename_list_cache.pop("perfusion", None)


def test_names_outside_the_folder_are_refused(folders, comfy_host, trained_concepts, tmp_path):
    folder = comfy_host.base_dir / "models" / "perfusion"
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes((folder / trained_concepts["hugsy"]).read_bytes())
    link = folder / "safety-link-out.safetensors"
    dir_link = folder / "safety-dir-link"
    link.symlink_to(outside)
    dir_link.symlink_to(tmp_path, target_is_directory=True)
    try:
        refused = {
            "../outside.safetensors": "not found",
            "../../" * 12 + str(outside).lstrip("/"): "not found",
            str(outside): "not found",
            "hostile/../../outside.safetensors": "not found",
            "safety-link-out.safetensors": "outside the perfusion model folders",
            "safety-dir-link/outside.safetensors": "outside the perfusion model folders",
            "x\0.safetensors": "not found",
            "../outside.pt": "only .safetensors",
            "": "only .safetensors",
        }
        for name, why in refused.items():
            with pytest.raises((ValueError, FileNotFoundError)) as exc:
                folders.resolve(name)
            message = str(exc.value)
            print(f"{name[:50]!r}: {message[:120]}")
            assert why in message and f"'{name}'" in message, message
        inside = folders.resolve(trained_concepts["hugsy"])
        assert os.path.realpath(inside) == str((folder / trained_concepts["hugsy"]).resolve())
    finally:
        link.unlink()
        dir_link.unlink()


def test_loader_node_refuses_a_symlink_out_of_the_folder(
    comfy_host, tiny_ckpt_name, trained_concepts, tmp_path
):
    """Through the executor: the name is in the dropdown (ComfyUI lists the link), the node refuses it."""
    from harness.perfusion_graphs import ConceptUse, generate_prompt

    folder = comfy_host.base_dir / "models" / "perfusion"
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((folder / trained_concepts["hugsy"]).read_bytes())
    link = folder / "safety-escape.safetensors"
    link.symlink_to(outside)
    comfy_host.folder_paths.filename_list_cache.pop("perfusion", None)
    try:
        result = comfy_host.run(generate_prompt(tiny_ckpt_name, [ConceptUse(link.name)], steps=1))
        assert result.error_kind == "execution", result.error_text
        message = result.error["exception_message"]
        print(message)
        assert link.name in message and "outside the perfusion model folders" in message
    finally:
        link.unlink()
        comfy_host.folder_paths.filename_list_cache.pop("perfusion", None)
