"""Hostile concept files through the real loader node and ComfyUI's prompt executor.

Every malformed file from tests/hostile_files.py goes through a PerfusionConceptLoader graph: it must
end in a clear error naming the file and the defect (or a validation error naming it, for names the
dropdown cannot hold), in bounded time and memory, and the next valid prompt must still work.
"""

from __future__ import annotations

import gc
import shutil
import time
from collections import Counter

import numpy as np
import pytest
from hostile_files import HostileCase, generate_hostile_files

from harness.faults import rss_bytes
from harness.perfusion_graphs import ConceptUse, generate_prompt
from perfusion_core.concept_file import ConceptFileError, load_concept

SUBFOLDER = "hostile"
PROMPT_LIMIT_S = 10.0  # a refused file costs milliseconds; a hang or a huge read would not
RSS_LIMIT = 64 * 2**20  # torch/ComfyUI allocator noise is a few MB; one leaked big read would be more


@pytest.fixture(scope="module")
def hostile_cases(comfy_host, trained_concepts):
    folder = comfy_host.base_dir / "models" / "perfusion"
    dest = folder / SUBFOLDER
    cases = generate_hostile_files(dest, folder / trained_concepts["hugsy"])
    comfy_host.folder_paths.filename_list_cache.pop("perfusion", None)
    yield cases
    shutil.rmtree(dest)  # the session host is shared: leave its dropdown as it was
    comfy_host.folder_paths.filename_list_cache.pop("perfusion", None)


def direct_defect(case: HostileCase) -> tuple[str, str]:
    """(kind, defect text) that load_concept itself reports for the file."""
    try:
        load_concept(case.path)
    except ConceptFileError as e:
        return e.kind, e.defect
    raise AssertionError(f"{case.name}: load_concept accepted a hostile file")


def test_every_hostile_file_fails_clearly_through_the_executor(
    comfy_host, tiny_ckpt_name, trained_concepts, hostile_cases
):
    valid = generate_prompt(tiny_ckpt_name, [ConceptUse(trained_concepts["hugsy"])], steps=1)
    reference = comfy_host.images(comfy_host.run(valid).raise_for_error())[0]
    by_kind: Counter[str] = Counter()
    problems: list[str] = []
    slowest = (0.0, "")
    gc.collect()
    rss_before = rss_bytes()
    t0 = time.perf_counter()
    for i, case in enumerate(hostile_cases):
        name = f"{SUBFOLDER}/{case.name}"
        result = comfy_host.run(generate_prompt(tiny_ckpt_name, [ConceptUse(name)], steps=1))
        slowest = max(slowest, (result.duration_s, case.name))
        if result.success:
            problems.append(f"{case.name}: accepted")
        elif result.error_kind == "validation":
            by_kind["validation (not in the dropdown)"] += 1
            if case.name not in result.error_text:
                problems.append(f"{case.name}: validation error does not name it: {result.error_text[:300]}")
        elif result.error_kind != "execution" or result.error["node_type"] != "PerfusionConceptLoader":
            problems.append(f"{case.name}: {result.error_kind} in {(result.error or {}).get('node_type')}")
        else:
            kind, defect = direct_defect(case)
            by_kind[kind] += 1
            message = result.error["exception_message"]
            names_defect = defect in message or (kind == "not_found" and "not found" in message)
            if case.name not in message or not names_defect:
                problems.append(f"{case.name}: unclear message {message[:300]!r} (defect: {defect!r})")
        if i % 100 == 99:  # the host still generates, with the same pixels
            np.testing.assert_array_equal(
                comfy_host.images(comfy_host.run(valid).raise_for_error())[0], reference
            )
    elapsed = time.perf_counter() - t0
    gc.collect()
    rss_after = rss_bytes()
    print(f"\n{len(hostile_cases)} hostile files through the loader node in {elapsed:.1f}s; by defect kind:")
    for kind, count in sorted(by_kind.items()):
        print(f"  {kind:34s} {count}")
    print(f"slowest prompt {slowest[0]:.2f}s ({slowest[1]})")
    print(f"RSS {rss_before / 2**20:.1f} MiB -> {rss_after / 2**20:.1f} MiB")
    assert len(hostile_cases) >= 300
    assert not problems, "\n".join(problems)
    assert slowest[0] < PROMPT_LIMIT_S
    assert rss_after - rss_before < RSS_LIMIT
    after = comfy_host.images(comfy_host.run(valid).raise_for_error())[0]
    np.testing.assert_array_equal(after, reference)


def test_a_concept_with_one_flipped_bit_is_named_as_damaged_by_the_loader_node(
    comfy_host, tiny_ckpt_name, trained_concepts
):
    """A flip that leaves the file well formed (a V target's mantissa) would load as another concept
    but for the checksum: the loader node's error names the file and says it is damaged."""
    folder = comfy_host.base_dir / "models" / "perfusion"
    blob = bytearray((folder / trained_concepts["hugsy"]).read_bytes())
    blob[-1] ^= 0x01  # the last V target's last element, lowest bit of its high byte: still finite
    damaged = folder / "bitflip_hugsy.safetensors"
    damaged.write_bytes(bytes(blob))
    comfy_host.folder_paths.filename_list_cache.pop("perfusion", None)
    try:
        result = comfy_host.run(generate_prompt(tiny_ckpt_name, [ConceptUse(damaged.name)], steps=1))
    finally:
        damaged.unlink()
        comfy_host.folder_paths.filename_list_cache.pop("perfusion", None)
    assert result.error_kind == "execution" and result.error["node_type"] == "PerfusionConceptLoader"
    message = result.error["exception_message"]
    assert f"Perfusion concept file '{damaged.name}' is not usable: the file is damaged" in message
