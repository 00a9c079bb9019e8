import hashlib
import json

import pytest
import os
import subprocess
import sys

from helpers import REPO, archive_path

pytestmark = pytest.mark.integration


def _run(*args, fast=True, **env):
    full_env = {**os.environ, "S9LIB_DATA": str(archive_path()), **env}
    if fast:
        full_env["S9LIB_FAST"] = "1"
    return subprocess.run([sys.executable, "-m", "s9lib", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=900)


def test_train_end_to_end_in_fast_mode(tmp_path):
    out = tmp_path / "run"
    proc = _run("train", "--recipe", "fast", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and 0.0 <= summary["test_acc"] <= 1.0
    assert (out / "checkpoint.pt").exists()
    history = json.loads((out / "history.json").read_text())
    assert history["info"]["train_images"] == 500 and history["recipe"]["name"] == "fast"
    assert "epoch 1/1" in proc.stderr  # the progress bar


def test_train_amp_flag_is_recorded_and_the_old_recipe_name_still_works(tmp_path):
    proc = _run("train", "--recipe", "seed", "--amp", "off", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "notice: the recipe 'seed' is now called 'course'" in proc.stderr
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["info"]["autocast"] == "float32" and history["recipe"]["amp"] == "off"
    assert history["recipe"]["name"] == "course"
    proc = _run("train", "--amp", "half", "--out", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "--amp" in proc.stderr and "Traceback" not in proc.stderr


def test_train_init_continues_from_the_shipped_weights_and_records_them(tmp_path):
    weights = REPO / "s9lib" / "weights" / "resnet18_cifar10.pt"
    out = tmp_path / "run"
    proc = _run("train", "--recipe", "cpu-continue", "--init", str(weights), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    history = json.loads((out / "history.json").read_text())
    init = history["info"]["init"]
    assert init["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert init["file"].endswith("resnet18_cifar10.pt")
    # a trained start: its first FAST epoch is far above what random weights reach (~0.2)
    assert history["epochs"][0]["train_acc"] > 0.7, history["epochs"][0]
    proc = _run("train", "--init", str(tmp_path / "nowhere.pt"), "--out", str(tmp_path / "b"))
    assert proc.returncode == 2 and "nowhere.pt" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "b").exists()


def test_help_documents_every_flag():
    proc = _run("train", "--help")
    assert proc.returncode == 0
    for flag in ("--recipe", "--epochs", "--data", "--out", "--resume", "--device", "--workers",
                 "--seed", "--amp", "--fast", "--init"):
        assert flag in proc.stdout
    assert "course (60 epochs" in proc.stdout and "fast (" in proc.stdout


def test_unknown_recipe_and_missing_data_are_clear_errors(tmp_path):
    proc = _run("train", "--recipe", "slow", "--out", str(tmp_path))
    assert proc.returncode == 2 and "Unknown recipe 'slow'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _run("train", "--data", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "missing.tar.gz" in proc.stderr
    assert "Traceback" not in proc.stderr
