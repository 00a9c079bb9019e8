"""Distributed training with torchrun + DistributedDataParallel on the CPU (gloo, 2 processes).

Two processes on a 2-core machine test correctness, not speed. Each test starts a real
``torchrun`` job (``python -m torch.distributed.run``) on real CIFAR-10 images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from helpers import REPO, archive_path, cifar, step_recipe
from s9lib import seed_everything
from s9lib.checkpoints import load_checkpoint, load_model
from s9lib.data import Split
from s9lib.training.history import History
from s9lib.models import ResNet18
from s9lib.training.loop import fit

pytestmark = pytest.mark.integration


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _torchrun(args: list[str], timeout: int = 300, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "S9LIB_DATA": str(archive_path()), "S9LIB_DIST_TIMEOUT": "60",
                   "PYTHONPATH": str(REPO / "tests"), **env}
    return subprocess.run(TORCHRUN + args, cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _needs_data():
    if not archive_path().exists():
        pytest.skip(f"CIFAR-10 archive not found at {archive_path()}")


def test_torchrun_train_writes_one_checkpoint_that_loads_in_one_process(tmp_path):
    out = tmp_path / "run"
    done = _torchrun(["-m", "s9lib", "train", "--recipe", "fast", "--fast", "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, done.stdout  # rank 0 alone reports
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "history.json"]
    history = History.load(out / "history.json")
    assert history.info["world_size"] == 2 and history.info["backend"] == "gloo"
    assert history.info["train_images"] == 500 and len(history) == 1
    model = load_model(out, device="cpu")  # a plain ResNet18: no DDP "module." prefix
    assert isinstance(model, ResNet18)
    assert load_checkpoint(out)["history"]["info"]["world_size"] == 2


def test_two_processes_compute_one_process_gradients_in_float64(tmp_path):
    """Sharding, gradient averaging and BatchNorm over the global batch are exact: in float64
    two processes holding 40 images each get the gradients one process gets with all 80."""
    done = _torchrun(["tests/distributed_worker.py", "grad64", str(tmp_path / "grad.json")])
    assert done.returncode == 0, done.stderr[-3000:]
    worst = json.loads((tmp_path / "grad.json").read_text())["max_relative_difference"]
    assert worst < 1e-10  # measured: 4e-14


def test_two_processes_take_the_first_step_of_one_through_fit(tmp_path):
    """The same through fit() in float32, augmentation included. float32 BatchNorm backward
    cancels digits (up to 1.2 % of the step here, measured), so the yardstick is the step one
    process takes on only the first half of the batch: a sharding or averaging mistake is of
    that size, and two processes must land far closer to the one-process step than that."""
    done = _torchrun(["tests/distributed_worker.py", "step", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    two = load_checkpoint(tmp_path / "two")["model"]

    def one_process(data, out):
        seed_everything(0)
        fit(ResNet18(), data, step_recipe(), epochs=1, out=out, device="cpu", progress=False)
        return load_checkpoint(out)["model"]

    data = cifar(8, 2)
    one = one_process(data, tmp_path / "one")
    half_data = replace(data, train=Split(data.train.images[:40], data.train.labels[:40]))
    half = one_process(half_data, tmp_path / "half")
    floats = [k for k in one if one[k].is_floating_point()]
    error = max(float((two[k] - one[k]).abs().max()) for k in floats)
    mistake = max(float((half[k] - one[k]).abs().max()) for k in floats)
    assert error < 0.05 * mistake, (error, mistake)


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    done = _torchrun(["tests/distributed_worker.py", "fail", str(tmp_path / "run")], timeout=240)
    assert done.returncode != 0
    assert "rank 1 failed on purpose" in done.stdout + done.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
