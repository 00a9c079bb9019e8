"""The CLI under bad input and faults: nothing it did not create is lost, every failure is one
line and a non-zero exit, never a traceback.

Every case runs on real files: one real FAST training run (module fixture, started through the
CLI), copies of its checkpoint, folders and files cut for the case. We run as root in CI, so a
"read-only" folder is still writable; an unwritable path is one *under a regular file*
(``some_file/run``), which no user, root included, can create.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from s9lib.checkpoints import load_checkpoint

from helpers import REPO, cli_env, kill_mid_write, one_line_error

pytestmark = pytest.mark.integration


def _env(**extra):
    return cli_env(**extra)


def _cli(*args, module="s9lib", **extra):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          env=_env(**extra), capture_output=True, text=True, timeout=900)


def _one_line_error(proc, *needles):
    """rc 2, stderr is exactly one 'error: ...' line holding every needle, no traceback."""
    return one_line_error(proc, *needles)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real FAST run in ``run/``; while it trains, a second training into the same folder
    must refuse (the lock), and its refusal is returned with the run folder."""
    out = tmp_path_factory.mktemp("runs") / "run"
    first = subprocess.Popen([sys.executable, "-m", "s9lib", "train", "--recipe", "fast",
                              "--out", str(out)], cwd=REPO, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / ".lock").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    second = _cli("train", "--recipe", "fast", "--out", out)
    stdout, stderr = first.communicate(timeout=900)
    assert first.returncode == 0, stderr
    return out, second


def test_a_second_training_into_the_same_folder_refuses_while_the_first_runs(run):
    out, second = run
    _one_line_error(second, "Another training", "pid ", str(out))
    assert not (out / ".lock").exists(), "the finished run left its lock behind"
    assert load_checkpoint(out)["epoch"] == 1  # the first run was not disturbed


def test_train_into_a_folder_holding_a_run_refuses_and_names_the_ways_on(run):
    out, _ = run
    before = _digest(out / "checkpoint.pt")
    line = _one_line_error(_cli("train", "--recipe", "fast", "--out", out), str(out),
                           "1 of 1 epochs", "recipe fast", "--resume", "--force")
    assert "another --out" in line
    assert _digest(out / "checkpoint.pt") == before


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    _one_line_error(_cli("train", "--resume", "--out", tmp_path / "empty"), "Nothing to resume",
                    "checkpoint.pt")
    assert not (tmp_path / "empty").exists()


def test_unwritable_out_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    start = time.perf_counter()
    _one_line_error(_cli("train", "--out", blocker / "run"), "--out", "cannot be written")
    _one_line_error(_cli("train", "--out", blocker), "is a file")
    assert time.perf_counter() - start < 60  # no epoch ran (one takes about a minute here)


@pytest.mark.parametrize("args, needles", [
    (["--epochs", "0"], ["--epochs must be at least 1, got 0"]),
    (["--epochs", "-3"], ["--epochs must be at least 1"]),
    (["--seed", "-1"], ["--seed must be at least 0, got -1"]),
    (["--workers", "-1"], ["--workers"]),
    (["--device", "tpu"], ["Unknown device 'tpu'", "available here:", "cpu"]),
    (["--device", "cuda:7"], ["'cuda:7' is not available", "available here:", "cpu"]),
])
def test_bad_train_flags_are_one_line_before_any_data_is_read(tmp_path, args, needles):
    _one_line_error(_cli("train", "--out", tmp_path / "run", "--data", tmp_path / "absent",
                         *args), *needles)  # the data is checked later: it is not reached
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value, ok", [("1", True), ("true", True), ("YES", True), ("on", True),
                                       ("0", True), ("false", True), ("no", True), ("off", True),
                                       ("ture", False), ("2", False)])
def test_environment_switches_accept_the_usual_spellings_only(tmp_path, value, ok):
    code = "from s9lib.runtime import fast_mode; print(fast_mode())"
    proc = subprocess.run([sys.executable, "-c", code], env=_env(S9LIB_FAST=value),
                          capture_output=True, text=True, cwd=REPO)
    if ok:
        assert proc.stdout.strip() == str(value.lower() in ("1", "true", "yes", "on"))
    else:
        assert "S9LIB_FAST" in proc.stderr and repr(value) in proc.stderr
        _one_line_error(_cli("train", "--out", tmp_path / "run", S9LIB_FAST=value),
                        f"S9LIB_FAST={value!r}", "1, true, yes, on")


def test_export_onto_its_own_checkpoint_is_refused_and_it_stays_resumable(run):
    out, _ = run
    before = _digest(out / "checkpoint.pt")
    for dest in (out / "checkpoint.pt", out / "." / "checkpoint.pt"):
        _one_line_error(_cli("export", out, dest), "is the checkpoint being exported")
        _one_line_error(_cli("export", out / "checkpoint.pt", dest), "is the checkpoint")
    assert _digest(out / "checkpoint.pt") == before
    assert load_checkpoint(out)["optimizer"] is not None  # still a training checkpoint


def test_export_refuses_another_checkpoint_a_folder_and_a_foreign_file(run, tmp_path):
    out, _ = run
    other = tmp_path / "other_checkpoint.pt"
    shutil.copy(out / "checkpoint.pt", other)
    _one_line_error(_cli("export", out, other), "is a training checkpoint")
    _one_line_error(_cli("export", out, tmp_path), "is a folder")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    _one_line_error(_cli("export", out, notes), "not an s9lib weights file")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _one_line_error(_cli("export", out, blocker / "w.pt"), "is a file, not a folder")
    assert notes.read_text() == "mine" and _digest(other) == _digest(out / "checkpoint.pt")


def test_a_failing_export_leaves_the_existing_weights_as_they_were(run, tmp_path):
    """Bad --exact files and bad --data fail before the destination is touched."""
    out, _ = run
    weights = tmp_path / "w.pt"
    shutil.copy(REPO / "s9lib" / "weights" / "resnet18_cifar10.pt", weights)
    before = _digest(weights)
    wrong_keys = tmp_path / "wrong.npz"
    np.savez(wrong_keys, x=np.zeros(3))
    text = tmp_path / "text.npz"
    text.write_text("not numpy")
    cases = [(["--exact", wrong_keys], "no images or labels array"),
             (["--exact", text], "not a readable .npz"),
             (["--exact", tmp_path / "missing.npz"], "missing.npz"),
             (["--data", tmp_path / "missing.tar.gz"], "missing.tar.gz")]
    for args, needle in cases:
        _one_line_error(_cli("export", out, weights, *args), needle)
        assert _digest(weights) == before, args
    assert not list(tmp_path.glob(".w.pt.*"))


def test_gradcam_and_faithfulness_outputs_that_cannot_be_written(run, tmp_path):
    out, _ = run
    cat = REPO / "sampleimages" / "chelsea_cat.jpg"
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _one_line_error(_cli("gradcam", cat, "--checkpoint", out, "--out", blocker), "is a file")
    _one_line_error(_cli("gradcam", cat, "--checkpoint", out, "--out", blocker / "sub"),
                    "cannot be written")
    _one_line_error(_cli("gradcam", cat, "--checkpoint", out, "--device", "nope"),
                    "Unknown device 'nope'")
    _one_line_error(_cli("faithfulness", "--checkpoint", out, "--out", tmp_path),
                    "is a folder")
    _one_line_error(_cli("faithfulness", "--checkpoint", out, "--out", blocker / "r.json"),
                    "is a file, not a folder")
    _one_line_error(_cli("faithfulness", "--checkpoint", out, "--seed", "-1"), "--seed")
    assert blocker.read_text() == "x"


def test_book_runner_with_a_missing_chapter(tmp_path):
    _one_line_error(_cli(tmp_path / "nope.ipynb", module="s9lib.show.book"), "nope.ipynb",
                    "No chapter notebook")


def test_resume_refuses_other_data_and_cleans_a_killed_writes_temp_file(tmp_path):
    """Library level (the CLI calls the same fit): a checkpoint of data A is not resumed on B
    (compared by content: the same data from another path resumes), and the
    ``.checkpoint.pt.*`` file an older s9lib's killed write left is removed by the next run."""
    from dataclasses import replace

    from helpers import cifar
    from s9lib.data.cifar import Split
    from s9lib.models import ResNet18
    from s9lib.training.recipes import get_recipe
    from s9lib.training.loop import fit

    data, recipe = cifar(2, 1), get_recipe("fast", batch_size=20, amp="off")
    stale = tmp_path / ".checkpoint.pt.k1ll3d"
    tmp_path.mkdir(exist_ok=True)
    stale.write_bytes(b"half a checkpoint")
    fit(ResNet18(), data, recipe, epochs=2, out=tmp_path, device="cpu", progress=False)
    assert not stale.exists() and not (tmp_path / ".lock").exists()
    reordered = replace(data, classes=tuple(reversed(data.classes)))
    with pytest.raises(ValueError, match="classes"):
        fit(ResNet18(), reordered, recipe, epochs=2, out=tmp_path, resume=True, device="cpu")
    shuffled = replace(data, train=Split(data.train.images[::-1].copy(), data.train.labels))
    with pytest.raises(ValueError, match="other images or labels"):
        fit(ResNet18(), shuffled, recipe, epochs=2, out=tmp_path, resume=True, device="cpu")
    assert not (tmp_path / ".lock").exists()  # released on the refusals too
    moved = replace(data, source=str(tmp_path / "another.tar.gz"))  # a copy elsewhere
    assert len(fit(ResNet18(), moved, recipe, epochs=2, out=tmp_path, resume=True,
                   device="cpu", progress=False)) == 2


def test_a_killed_run_leaves_neither_a_stuck_lock_nor_its_temp_file(tmp_path):
    """A process takes the folder's lock, starts writing checkpoint.pt and is SIGKILLed
    mid-write: the next run takes the stale lock over and deletes the temporary file."""
    import socket

    from helpers import cifar
    from s9lib.models import ResNet18
    from s9lib.training.recipes import get_recipe
    from s9lib.training.loop import fit

    pid, temps = kill_mid_write(tmp_path / "checkpoint.pt", "s9lib.checkpoints.CHECKPOINT_FILE",
                                lock=True)
    assert temps and (tmp_path / ".lock").read_text().split()[0] == str(pid)
    fit(ResNet18(), cifar(2, 1), get_recipe("fast", batch_size=20, amp="off"), epochs=1,
        out=tmp_path, device="cpu", progress=False)
    assert not any(t.exists() for t in temps) and not (tmp_path / ".lock").exists()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1

    (tmp_path / ".lock").write_text(f"{os.getpid()} {socket.gethostname()}\n")  # alive: us
    with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
        fit(ResNet18(), cifar(2, 1), get_recipe("fast", batch_size=20), epochs=1,
            out=tmp_path, device="cpu", progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
