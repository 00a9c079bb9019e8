"""benchmarks/gpu_run.sh in FAST mode on the CPU, as CI runs it: every step runs or says why
not, the log names each, and the weights it splits come back together as a file s9lib loads.
Also: benchmarks/gpu_prepare.sh --measure, and room in the device's 64 MiB for what travels.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from helpers import REPO, archive_path
from s9lib.checkpoints import pretrained

STEPS = ["setup", "gpu-tests", "train-fast", "export", "course-epoch", "speed"]
PART_LIMIT = 16 * 1024 * 1024  # the device brings back at most 8 files of at most 16 MiB
DEVICE_LIMIT = 64 * 1024 * 1024  # working tree + carried folders, per device call
WHEEL_BYTES = 4_010_671  # .whl/ as benchmarks/gpu_prepare.sh downloaded it on 2026-12-04

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None,
                                 reason="needs bash and coreutils")]


def _bash(*args, timeout=300, **env):
    return subprocess.run(["bash", *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    if not archive_path().exists():
        pytest.skip(f"CIFAR-10 archive not found at {archive_path()} (set S9LIB_DATA)")
    tmp = tmp_path_factory.mktemp("gpu_run")
    done = _bash("benchmarks/gpu_run.sh", S9LIB_FAST="1", S9LIB_DATA=str(archive_path()),
                 OUT=str(tmp / "out"), GPU_RUN_RUNS=str(tmp / "runs"), PYTHON=sys.executable)
    return tmp, done


def test_fast_run_logs_each_step_with_its_time_or_its_reason(gpu_run):
    tmp, done = gpu_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    log = (tmp / "out" / "gpu_run.log").read_text()
    for name in STEPS:
        assert re.search(rf"step {name}: (ok in \d+\.\d s|skipped)", log), name
    for name in ("setup", "train-fast", "export", "course-epoch"):  # need no GPU
        assert f"step {name}: ok in" in log, name
    if "no CUDA here" in log:
        assert "step gpu-tests: skipped" in log and "step speed: skipped" in log
    assert "course epoch 1:" in log
    out = sorted(p.name for p in (tmp / "out").iterdir())
    assert {"gpu_run.log", "fast-history.json", "course-history.json", "weights.sha256"} <= set(out)
    assert len(out) <= 8 and all((tmp / "out" / n).stat().st_size <= PART_LIMIT for n in out)


def test_the_parts_join_into_weights_that_load(gpu_run, tmp_path):
    tmp, _ = gpu_run
    parts = sorted((tmp / "out").glob("*.part-*"))
    assert len(parts) == 2  # 22 MB of fp16 weights in 15 MiB parts
    done = _bash("benchmarks/gpu_join.sh", str(tmp / "out"), str(tmp_path / "joined.pt"))
    assert done.returncode == 0, done.stderr
    model = pretrained(tmp_path / "joined.pt", device="cpu")
    assert model.meta["note"] == "benchmarks/gpu_run.sh, FAST mode"
    assert _bash("benchmarks/gpu_join.sh", str(tmp / "out"),
                 str(tmp_path / "joined.pt")).returncode == 2  # never replaces a file

    bad = tmp_path / "bad"
    bad.mkdir()
    for p in [tmp / "out" / "weights.sha256", *parts]:
        shutil.copy(p, bad)
    with open(bad / parts[-1].name, "r+b") as f:
        f.truncate(1000)
    done = _bash("benchmarks/gpu_join.sh", str(bad), str(tmp_path / "broken.pt"))
    assert done.returncode == 1 and "sha256" in done.stderr
    assert not (tmp_path / "broken.pt").exists() and not (tmp_path / "broken.pt.partial").exists()


def test_what_the_gpu_run_carries_fits_the_device():
    """The tracked tree, the CIFAR-10 archive and the wheels travel together: when the tree
    grows past what leaves them room, the GPU run can no longer carry its data."""
    done = _bash("benchmarks/gpu_prepare.sh", "--measure", timeout=60)
    assert done.returncode in (0, 1), done.stderr
    tree = int(re.search(r"(\d+) bytes  working tree", done.stdout)[1])
    carried = {name: int(n) for n, name in re.findall(r"(\d+) bytes  (\.\w+)/", done.stdout)}
    archive = archive_path().stat().st_size if archive_path().exists() else 0
    need = tree + max(carried.get(".whl", 0), WHEEL_BYTES) + max(carried.get(".data", 0), archive)
    assert need <= DEVICE_LIMIT, (f"working tree {tree} + wheels + CIFAR-10 = {need} bytes, over "
                                  f"the device's {DEVICE_LIMIT}; see README.md, On a GPU")
