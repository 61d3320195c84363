"""Every hostile concept file is refused with a ConceptFileError: no crash, no hang, no big allocation."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from hostile_files import HostileCase, generate_hostile_files, make_sd15_concept

from perfusion_core.concept_file import ConceptFileError, load_concept, read_concept_metadata
from perfusion_core.concept_writer import save_concept

PEAK_LIMIT = (
    4 * 2**20
)  # the largest hostile file is ~350 KB; a real allocation from a lying header would be GBs


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[HostileCase]]:
    base = tmp_path_factory.mktemp("hostile")
    valid = save_concept(make_sd15_concept(), base / "valid.safetensors")
    dest = base / "cases"
    return valid, generate_hostile_files(dest, valid)


def test_generator_makes_at_least_200_files_inside_dest(hostile) -> None:
    valid, cases = hostile
    dest = (valid.parent / "cases").resolve()
    assert len(cases) >= 200
    assert len({c.path for c in cases}) == len(cases)
    for case in cases:
        assert case.path.parent.resolve() == dest, case.name
    load_concept(valid)  # the source file itself is fine


def test_every_hostile_file_is_refused_cleanly(hostile) -> None:
    _, cases = hostile
    by_kind: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    wrong: list[str] = []
    worst_peak = (0, "")
    tracemalloc.start()
    try:
        for case in cases:
            tracemalloc.reset_peak()
            try:
                load_concept(case.path)
            except ConceptFileError as e:
                by_kind[e.kind] += 1
                by_category[case.kind] += 1
                message = str(e)
                assert message.startswith(f"Perfusion concept file '{case.path.name}' is not usable: "), (
                    message
                )
                assert len(e.defect) > 10, message
                if case.expect is not None and e.kind not in case.expect:
                    wrong.append(f"{case.name}: got {e.kind!r}, expected {sorted(case.expect)}: {e.defect}")
            except BaseException as e:  # anything else is a bug, MemoryError included
                pytest.fail(f"{case.name}: {type(e).__name__} escaped: {e}")
            else:
                pytest.fail(f"{case.name}: hostile file was accepted")
            peak = tracemalloc.get_traced_memory()[1]
            if peak > worst_peak[0]:
                worst_peak = (peak, case.name)
    finally:
        tracemalloc.stop()
    print(f"\n{len(cases)} hostile files refused; by defect kind:")
    for kind, count in sorted(by_kind.items()):
        print(f"  {kind:15s} {count}")
    print("by generator category: " + ", ".join(f"{k}={v}" for k, v in sorted(by_category.items())))
    print(f"worst peak traced allocation: {worst_peak[0]} bytes ({worst_peak[1]})")
    assert not wrong, "\n".join(wrong)
    assert worst_peak[0] < PEAK_LIMIT


VALUE_DEFECTS = {"nonfinite", "checksum", "inconsistent"}  # need the tensors: load_concept's job


def test_header_only_reader_refuses_header_defects(hostile) -> None:
    """read_concept_metadata never raises anything but ConceptFileError; value defects are load's job."""
    _, cases = hostile
    for case in cases:
        try:
            read_concept_metadata(case.path)
        except ConceptFileError:
            continue
        assert case.kind in VALUE_DEFECTS, f"{case.name} passed the header-only check"


def test_valid_file_with_awkward_name_loads(tmp_path: Path) -> None:
    for name in ["тедди 🧸.safetensors", "name with spaces.safetensors", "..%2fx.safetensors"]:
        path = save_concept(make_sd15_concept(), tmp_path / name)
        assert load_concept(path).word == "teddy"
        assert read_concept_metadata(path).word == "teddy"
