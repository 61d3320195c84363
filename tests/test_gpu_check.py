"""The device kit works before a GPU is lent: its run passes on this CPU as the lent machine would
start it, and its bundle is checked for the machine's Python and for the size a device call carries.
It must not be first run on borrowed time."""

import json
import subprocess
import sys
import zipfile

import pytest

from benchmarks import device_bundle
from benchmarks.gpu_check import seconds_per_step
from harness.paths import repo_root


@pytest.mark.slow
def test_cpu_run_on_the_simulated_device_reports_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        # the budget is the CPU plan's 240 s with room for a slow, shared runner
        [sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--simulate-device", "--budget-s", "600"]
        + ["--out", str(out)],
        cwd=repo_root(),
        timeout=900,
    )
    report = json.loads(out.read_text())
    assert done.returncode == 0 and report["errors"] == {} and report["skipped"] == {}, report["errors"]
    env = report["environment"]
    # the server ran without the machine's missing packages, on the av stand-in
    assert env["av_file"].endswith("scripts/device/stubs/av/__init__.py")
    assert any("kornia" in line for line in env["failed_node_imports"])
    sections = report["sections"]
    session = sections["session"]
    assert session["train"]["step_s"] > 0 and session["second_equals_first"], session
    assert session["control_equals_first"]
    rows = sections["training"]["rows"]
    assert [(r["trainer"], r["checkpointing"]) for r in rows] == [
        ("perfusion", False), ("perfusion", True), ("lora", False), ("lora", True),
    ]  # fmt: skip
    assert all(r["step_s"] > 0 and r["memory"]["rss_peak_mb"] > 0 for r in rows), rows
    (gradients,) = sections["precision"]
    assert gradients["dtype"] == "fp32" and len(gradients["tensors"]) == 4  # embedding + 3 V targets
    assert all(row["cosine"] > 0.9999 for row in gradients["tensors"].values())  # the same run twice
    for sampling in (sections["sampling_sd15"], sections["sdxl"]["sampling"]):
        assert [r["concepts"] for r in sampling["rows"]] == [0, 1, 4]
        assert all(r["step_s"] > 0 for r in sampling["rows"]), sampling


def test_seconds_per_step_counts_optimizer_steps_after_the_first():
    # TrainLoraNode's bar moves per micro-batch (4 per step); ours per step: both give s/step
    micro = [(t * 0.5, t, 12) for t in range(1, 13)]  # 0.5 s per micro-batch
    assert seconds_per_step(micro, 4) == pytest.approx(2.0)
    assert seconds_per_step([(1.0, 1, 3), (4.0, 2, 3), (6.0, 3, 3)], 1) == pytest.approx(2.5)
    assert seconds_per_step([(1.0, 1, 1)], 1) is None  # one step: nothing after the first


def _wheel(folder, filename: str, requires: list[str]):
    with zipfile.ZipFile(folder / filename, "w") as archive:
        name = filename.split("-")[0]
        lines = ["Metadata-Version: 2.1", f"Name: {name}", *(f"Requires-Dist: {r}" for r in requires)]
        archive.writestr(f"{name}.dist-info/METADATA", "\n".join(lines) + "\n")


def test_wheel_check_names_what_would_not_install_on_the_machine(tmp_path):
    _wheel(tmp_path, "SQLAlchemy-2.1.9-cp311-cp311-manylinux_2_17_x86_64.whl", ["greenlet>=1"])
    _wheel(tmp_path, "comfy_kitchen-0.2.31-py3-none-any.whl", ['tomli; python_version < "3.11"', "numpy"])
    _wheel(tmp_path, "comfy_aimdo-0.4.13-cp39-abi3-manylinux_2_17_x86_64.whl", [])
    problems = device_bundle.wheel_problems(tmp_path, available={"numpy"})
    assert any(p.startswith("SQLAlchemy-2.1.9-cp311") and "not CPython 3.12" in p for p in problems)
    assert any("needs greenlet>=1: not on the machine" in p for p in problems)
    assert any("no wheel of torchsde==0.2.6" in p for p in problems)
    assert not any("comfy_kitchen" in p or "comfy_aimdo" in p for p in problems)  # py3 / abi3: fine


def test_call_size_counts_the_tree_and_the_carried_paths_not_ignored_files(tmp_path):
    def run(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    run("init", "-q")
    (tmp_path / ".gitignore").write_text("/.kit/\n/big\n")
    (tmp_path / "tracked").write_bytes(b"x" * 2**20)
    (tmp_path / "untracked").write_bytes(b"x" * 2**20)  # untracked, not ignored: it travels
    (tmp_path / "big").write_bytes(b"x" * 3 * 2**20)  # ignored and not carried: it stays
    (tmp_path / ".kit").mkdir()
    (tmp_path / ".kit" / "wheel.whl").write_bytes(b"x" * 2 * 2**20)
    run("add", ".gitignore", "tracked")
    size = device_bundle.call_size(tmp_path, [".kit"], limit_mib=9, margin_mib=4)
    assert size.tree_mib == pytest.approx(2, abs=0.01) and size.carried_mib == {".kit": 2.0}
    assert size.fits and "fits" in size.describe()
    over = device_bundle.call_size(tmp_path, [".kit"], limit_mib=8, margin_mib=4)  # 4 MiB and a .gitignore
    assert not over.fits and "does NOT fit" in over.describe()
    with pytest.raises(FileNotFoundError, match="device_check.sh prepare"):
        device_bundle.call_size(tmp_path, [".missing"])


def test_the_tree_leaves_room_for_the_bundle():
    """`scripts/device_check.sh prepare` measured the bundle (wheels + host tarball); the tree must
    leave it room within a device call, margin included."""
    size = device_bundle.call_size(repo_root(), [])
    size.carried_mib[".kit (as measured)"] = device_bundle.BUNDLE_MIB
    assert size.fits, size.describe()
