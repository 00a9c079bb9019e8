"""Issue 23's seven bad cases, each on real files, plus the minor cases it lists.

Nothing is simulated: a full disk is a real tmpfs mounted for the test (we run as root in
CI; where ``mount`` is not permitted, a real per-process file-size limit, ``RLIMIT_FSIZE``,
makes the kernel refuse the write with EFBIG instead); races are two real processes; a
diverging run is a real recipe with lr 1e30. Trainings run on a tiny real image tree taken
from the archive (``partial:``, 9 training images), so each takes seconds.
"""

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid

import pytest
import torch
from PIL import Image

from helpers import REPO, cifar, cli_env, kill_mid_write, one_line_error, small_tree

pytestmark = pytest.mark.integration  # subprocesses, trainings, mounts

CAT = REPO / "sampleimages" / "chelsea_cat.jpg"


def _cli(*args, preexec_fn=None, cwd=REPO, **extra):
    return subprocess.run([sys.executable, "-m", "s9lib", *map(str, args)], cwd=cwd,
                          env=cli_env(**extra), capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec_fn)


def _default_sigint() -> None:
    """A process started in the background of a script inherits SIGINT *ignored*, and Python
    then never raises KeyboardInterrupt; a user's terminal delivers it. Test what users get."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args, **extra):
    return subprocess.Popen([sys.executable, "-m", "s9lib", *map(str, args)], cwd=REPO,
                            env=cli_env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _one_line_error(proc, *needles, rc=2):
    """Exit ``rc``, one 'error: ...' line (after any progress bars), no traceback."""
    return one_line_error(proc, *needles, rc=rc, alone=False)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """``partial:`` source of a real 3-class tree: 9 training and 9 test images."""
    return f"partial:{small_tree(tmp_path_factory.mktemp('tree'), per_class=3)}"


def _train(tree, out, *more, **extra):
    """A real CLI training on the tiny tree: 1 epoch of the fast recipe, FAST mode off."""
    return _cli("train", "--recipe", "fast", "--epochs", "1", "--data", tree, "--out", out,
                *more, S9LIB_FAST="0", **extra)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tree):
    """A finished run folder (checkpoint.pt, history.json) from the CLI."""
    out = tmp_path_factory.mktemp("runs") / "run"
    done = _train(tree, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@contextlib.contextmanager
def _small_disk(folder, mib):
    """(folder, preexec_fn): a real tmpfs of ``mib`` MiB mounted at ``folder``; where mount
    is not permitted, a plain folder and a preexec_fn setting RLIMIT_FSIZE to ``mib`` MiB."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs",
                              str(folder)], capture_output=True).returncode == 0
    limit = mib << 20

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    try:
        yield folder, None if mounted else limited
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


# --------------------------------------------------------------------------- 1, 2: disk full


def test_1_disk_full_while_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path, tree):
    with _small_disk(tmp_path / "disk", 120) as (disk, limited):  # one checkpoint: 89 MB
        line = _one_line_error(_train(tree, disk / "run", "--epochs", "2",
                                      preexec_fn=limited), str(disk / "run"), "Could not write")
        assert "disk is full" in line or "ulimit" in line
        if limited is None:  # on the tmpfs: epoch 1 was saved, epoch 2 did not fit
            state = torch.load(disk / "run" / "checkpoint.pt", weights_only=True, mmap=True)
            assert state["epoch"] == 1
        left = sorted(p.name for p in (disk / "run").iterdir())
        assert not [n for n in left if n.startswith(".s9tmp") or n == ".lock"], left


def test_2_disk_full_while_exporting_is_one_line_and_keeps_the_old_weights(tmp_path, tree, run):
    shipped = REPO / "s9lib" / "weights" / "resnet18_cifar10.pt"
    with _small_disk(tmp_path / "disk", 30) as (disk, limited):  # room for one 22 MB file
        dest = disk / "w.pt"
        if limited is None:
            shutil.copy(shipped, dest)
        before = _digest(dest) if dest.exists() else None
        line = _one_line_error(_cli("export", run, dest, "--data", tree, preexec_fn=limited),
                               str(dest), "Could not write")
        assert "disk is full" in line or "ulimit" in line
        assert (_digest(dest) if dest.exists() else None) == before
        assert not list(disk.glob(".s9tmp*"))


# --------------------------------------------------------------------------- 3, 4: races


def test_3_two_gradcam_runs_into_one_folder_leave_only_whole_files(tmp_path, run):
    """Two runs write the same 8 names at once with different --alpha: every PNG is, byte
    for byte, the one or the other run's figure (written alone, for reference)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        shutil.copy(CAT, photos / f"cat{i:02d}.jpg")
    names = sorted(photos.iterdir())
    args = lambda out, alpha: ("gradcam", *names, "--checkpoint", run, "--layers", "layer4",
                               "--alpha", alpha, "--out", out)
    procs = [_start(*args(tmp_path / "race", a)) for a in ("0.2", "0.8")]
    procs += [_start(*args(tmp_path / f"ref{a}", a)) for a in ("0.2", "0.8")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    written = sorted((tmp_path / "race").iterdir())
    assert [p.name for p in written] == [f"cat{i:02d}_gradcam.png" for i in range(8)]
    for png in written:
        Image.open(png).load()  # decodes
        assert _digest(png) in {_digest(tmp_path / f"ref{a}" / png.name) for a in ("0.2", "0.8")}


def test_4_two_trainings_started_together_one_trains_the_other_refuses(tmp_path, tree):
    """Started together on one empty --out: the second loads the whole archive into a cold
    cache (slow), so on the old code it passed the folder check before the first run saved
    and replaced the first run's files after it finished."""
    out = tmp_path / "run"
    first = _start("train", "--recipe", "fast", "--epochs", "1", "--data", tree, "--out", out,
                   S9LIB_FAST="0")
    time.sleep(0.5)
    second = _start("train", "--recipe", "fast", "--out", out,
                    S9LIB_CACHE=str(tmp_path / "cold-cache"))
    results = [(p, *p.communicate(timeout=900)) for p in (first, second)]
    assert sorted(p.returncode for p, _, _ in results) == [0, 2], [e[-1500:] for *_, e in results]
    for p, stdout, stderr in results:
        if p.returncode == 2:
            _one_line_error(subprocess.CompletedProcess([], 2, stdout, stderr), str(out))
        else:
            winner_out = stdout
    history = json.loads((out / "history.json").read_text())
    assert json.loads(winner_out)["test_acc"] == round(history["epochs"][-1]["test_acc"], 4)
    assert history["info"]["train_images"] == (9 if first.returncode == 0 else 500)


# --------------------------------------------------------------------------- 5, 6: NaN


@pytest.fixture
def nan_run(tmp_path, run):
    """A copy of the run whose checkpoint holds NaN weights (as a diverged run would)."""
    out = tmp_path / "nan"
    out.mkdir()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model"]["linear.weight"][:] = float("nan")
    state["history"]["info"]["epochs_planned"] = 2  # one epoch left to resume
    torch.save(state, out / "checkpoint.pt")
    shutil.copy(run / "history.json", out / "history.json")
    return out


def test_5_export_and_resume_refuse_nan_weights(tmp_path, tree, nan_run):
    _one_line_error(_cli("export", nan_run, tmp_path / "w.pt", "--data", tree),
                    "non-finite", "linear.weight")
    assert not (tmp_path / "w.pt").exists()
    before = _digest(nan_run / "checkpoint.pt")
    _one_line_error(_train(tree, nan_run, "--resume", "--epochs", "2"), "non-finite",
                    "linear.weight")
    assert _digest(nan_run / "checkpoint.pt") == before


def test_6_a_diverging_recipe_stops_at_the_first_nonfinite_loss(tmp_path):
    """lr 1e30: the loss is NaN by the second step. Training stops there, naming epoch and
    step; the finite checkpoint of the run before stays, history.json stays valid JSON."""
    from s9lib.models import ResNet18
    from s9lib.training import fit, get_recipe

    data = cifar(2, 1)
    fit(ResNet18(), data, get_recipe("fast", batch_size=4, amp="off"), epochs=1,
        out=tmp_path, device="cpu", progress=False)
    before = {n: _digest(tmp_path / n) for n in ("checkpoint.pt", "history.json")}
    with pytest.raises(ValueError, match=r"not finite at epoch 1, step \d+") as caught:
        fit(ResNet18(), data, get_recipe("fast", batch_size=4, lr=1e30, amp="off"),
            epochs=1, out=tmp_path, device="cpu", progress=False)
    assert "\n" not in str(caught.value)
    assert {n: _digest(tmp_path / n) for n in before} == before
    json.loads((tmp_path / "history.json").read_text(), parse_constant=_no_nan)
    assert not (tmp_path / ".lock").exists()


def _no_nan(token):
    raise AssertionError(f"{token} in history.json is not JSON")


# --------------------------------------------------------------------------- 7: not ours


def test_7_no_command_replaces_a_file_it_did_not_make(tmp_path, run):
    before = _digest(run / "checkpoint.pt")
    _one_line_error(_cli("faithfulness", "--checkpoint", run, "-n", "10", "--out",
                         run / "checkpoint.pt"), "checkpoint.pt", "never replaces")
    assert _digest(run / "checkpoint.pt") == before
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}\n')
    _one_line_error(_cli("faithfulness", "--checkpoint", run, "-n", "10", "--out", notes),
                    "notes.json", "never replaces")
    assert notes.read_text() == '{"mine": true}\n'
    out = tmp_path / "figures"
    out.mkdir()
    (out / "cat_gradcam.png").write_bytes(b"my own figure")
    dog = tmp_path / "dog.jpg"
    shutil.copy(REPO / "sampleimages" / "dog.jpg", dog)
    shutil.copy(CAT, tmp_path / "cat.jpg")
    proc = _cli("gradcam", tmp_path / "cat.jpg", dog, "--checkpoint", run, "--layers",
                "layer4", "--out", out)
    _one_line_error(proc, "cat_gradcam.png", "never replaces")
    assert (out / "cat_gradcam.png").read_bytes() == b"my own figure"
    assert proc.stdout.split() == [str(out / "dog_gradcam.png")]  # the other photo went on
    again = _cli("gradcam", dog, "--checkpoint", run, "--layers", "layer4", "--out", out)
    assert again.returncode == 0, again.stderr  # its own figure is replaced


# --------------------------------------------------------------------------- the minor cases


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """A real process killed mid-write leaves its temporary file (never a truncated file
    under the final name); the next write into the folder deletes it."""
    from s9lib.files import FIGURE, atomic_write

    _, temps = kill_mid_write(tmp_path / "a.png")
    assert temps and not (tmp_path / "a.png").exists()
    live = tmp_path / f".s9tmp-{temps[0].name.split('-')[1]}-{os.getpid()}-live"
    live.write_bytes(b"a live writer's")  # our own pid: still running, kept
    import matplotlib.figure

    from s9lib.files import save_figure

    save_figure(matplotlib.figure.Figure(figsize=(1, 1)), tmp_path / "b.png")
    assert not any(t.exists() for t in temps) and live.exists()
    with pytest.raises(ValueError, match="never replaces"):  # a file of another kind
        atomic_write(live, lambda f: f.write(b"x"), kind=FIGURE)


def test_an_over_long_output_name_is_cut_not_fatal():
    from s9lib.show.reports import report_name

    used: set[str] = set()
    long = "é" * 300 + ".jpg"
    first, second = report_name(long, "gradcam++", used), report_name(long, "gradcam++", used)
    assert len(first.encode()) <= 255 and len(second.encode()) <= 255 and first != second


def test_gradcam_decodes_photos_chunk_by_chunk(monkeypatch, tmp_path):
    """Only ``chunk`` photos are decoded before the first figures are written."""
    import s9lib.show.reports as reports
    from s9lib.models import ResNet18

    loaded = []
    real = reports.load_image
    monkeypatch.setattr(reports, "load_image", lambda p, **kw: (loaded.append(p), real(p, **kw))[1])
    results = reports.explain_photos(ResNet18().eval(), [CAT] * 5 + [tmp_path / "missing.jpg"],
                                     tmp_path, layers=["layer4"], chunk=2)
    first = next(results)
    assert first[1] is not None and len(loaded) == 2
    rest = list(results)
    errors = [r for r in rest if r[1] is None]
    assert len(loaded) == 6 and len(errors) == 1 and "missing.jpg" in errors[0][2]
    assert len({r[1] for r in [first, *rest] if r[1]}) == 5  # cat, cat-2 ... cat-5


def _archive_with(tmp_path, name, blob):
    """A real .tar.gz holding the tiny tree and one more member ``name`` = ``blob``."""
    src = small_tree(tmp_path, per_class=1)
    path = tmp_path / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / "cifar10-jpeg", arcname="cifar10-jpeg")
        (tmp_path / "member").write_bytes(blob)
        tar.add(tmp_path / "member", arcname=f"cifar10-jpeg/train/airplane/{name}")
    return path


def _peak_rss_growth_mib(source):
    """Peak memory growth (MiB) of a fresh process loading ``source``, and its error. The
    peak is the kernel's VmHWM of the process (``ru_maxrss`` would carry pytest's own peak
    across the fork)."""
    code = ("import sys\nfrom s9lib.data import load_cifar10\n"
            "def peak():\n    status = open('/proc/self/status').read()\n"
            "    return int(status.split('VmHWM:')[1].split()[0]) // 1024\n"
            "base = peak()\ntry:\n    load_cifar10(sys.argv[1], partial=True, fast=False)\n"
            "except ValueError as exc:\n    print(exc, file=sys.stderr)\nprint(peak() - base)")
    done = subprocess.run([sys.executable, "-c", code, str(source)], capture_output=True,
                          text=True, env=cli_env(), cwd=REPO, timeout=300)
    return int(done.stdout.split()[-1]), done.stderr


def test_hostile_archive_members_are_refused_before_they_are_read(tmp_path, monkeypatch):
    monkeypatch.setenv("S9LIB_CACHE", str(tmp_path / "cache"))
    big = _archive_with(tmp_path / "a", "big.png", b"\1" * (300 << 20))  # 300 MiB, 300 KB gz
    grown, err = _peak_rss_growth_mib(big)
    assert "big.png" in err and "1,048,576" in err and grown < 100, (grown, err)
    bomb = tmp_path / "b" / "bomb.png"
    bomb.parent.mkdir()
    Image.new("1", (12000, 12000)).save(bomb)  # 18 KB on disk, 432 MB as RGB
    grown, err = _peak_rss_growth_mib(_archive_with(tmp_path / "b", "bomb.png",
                                                    bomb.read_bytes()))
    assert "12000x12000" in err and "Warning" not in err and grown < 100, (grown, err)


def test_resume_from_another_working_directory_finds_its_data(tmp_path, tree):
    """The run was started from one folder with a relative --data; resumed from another
    folder with the relative path from there, it continues (the data is compared by
    content, and FAST mode is a field of the history, not a suffix of the path)."""
    source = tree.removeprefix("partial:")
    start, elsewhere = tmp_path / "a", tmp_path / "b" / "c"
    start.mkdir()
    elsewhere.mkdir(parents=True)
    out = tmp_path / "run"
    first = _cli("train", "--recipe", "fast", "--epochs", "2", "--data",
                 "partial:" + os.path.relpath(source, start), "--out", out, cwd=start,
                 S9LIB_FAST="0", S9LIB_DATA=None)
    assert first.returncode == 0, first.stderr[-2000:]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["epoch"], state["history"]["epochs"] = 1, state["history"]["epochs"][:1]
    torch.save(state, out / "checkpoint.pt")  # as if interrupted after epoch 1
    again = _cli("train", "--recipe", "fast", "--epochs", "2", "--resume", "--data",
                 "partial:" + os.path.relpath(source, elsewhere), "--out", out,
                 cwd=elsewhere, S9LIB_FAST="0", S9LIB_DATA=None)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["epochs"] == 2
    info = json.loads((out / "history.json").read_text())["info"]
    assert info["fast"] is False and "FAST" not in info["data"]


@pytest.mark.parametrize("case", ["100 classes", "another architecture", "no optimizer"])
def test_resume_from_a_malformed_checkpoint_is_one_line(tmp_path, tree, run, case):
    """The run's own checkpoint (recipe, history, one of two epochs done) with its model of
    100 classes or of another architecture, or without optimizer and scheduler state."""
    from s9lib.models import ResNet18

    out = tmp_path / "run"
    out.mkdir()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["history"]["info"]["epochs_planned"] = 2
    if case == "100 classes":
        state["model"] = ResNet18(num_classes=100).state_dict()
    elif case == "another architecture":
        state["model"] = {"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}
    else:
        state["optimizer"] = state["scheduler"] = None
    torch.save(state, out / "checkpoint.pt")
    _one_line_error(_train(tree, out, "--resume", "--epochs", "2"), case.split()[-1])


def test_ctrl_c_during_training_is_one_line(tmp_path):
    out = tmp_path / "run"
    proc = _start("train", "--recipe", "fast", "--out", out)
    deadline = time.time() + 300
    while not (out / ".lock").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    _one_line_error(subprocess.CompletedProcess([], proc.returncode, "", err), "interrupted",
                    "no epoch of this run had finished", rc=130)
    assert not (out / ".lock").exists()


def test_a_malicious_checkpoint_is_refused_without_torch_advice(tmp_path):
    evil = tmp_path / "evil.pt"
    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    code = ("import os, sys, torch\nclass Evil:\n    def __reduce__(self):\n"
            "        return (os.system, ('touch ' + sys.argv[2],))\n"
            "torch.save({'model': Evil()}, sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(evil), str(marker)], check=True)
    line = _one_line_error(_cli("gradcam", CAT, "--checkpoint", evil, "--out", tmp_path),
                           "evil.pt", "could run code")
    assert "weights_only" not in line and not marker.exists()


def test_a_read_only_disk_is_one_line_in_every_subcommand(tmp_path, tree, run):
    """A real read-only tmpfs: each subcommand refuses before any work, in one line."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        for args in (["train", "--recipe", "fast", "--data", tree, "--out", ro / "run"],
                     ["export", run, ro / "w.pt", "--data", tree],
                     ["faithfulness", "--checkpoint", run, "--out", ro / "r.json"],
                     ["gradcam", CAT, "--checkpoint", run, "--out", ro / "figures"]):
            _one_line_error(_cli(*args), str(ro), "Read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_a_checkpoint_written_before_the_data_hash_still_resumes(tmp_path, monkeypatch):
    """Histories of earlier versions name the data by a path relative to the working
    directory, FAST mode as a ' (FAST subset)' suffix, and carry no hash: still resumed
    from that directory, and still refused on other data."""
    from dataclasses import replace

    from s9lib.models import ResNet18
    from s9lib.training import fit, get_recipe

    from helpers import archive_path

    monkeypatch.chdir(tmp_path)
    data, recipe = cifar(2, 1), get_recipe("fast", batch_size=10, amp="off")
    fit(ResNet18(), data, recipe, epochs=1, out="run", device="cpu", progress=False)
    state = torch.load("run/checkpoint.pt", weights_only=True)
    info = state["history"]["info"]
    del info["fast"], info["data_sha256"]
    info["data"] = os.path.relpath(archive_path()) + " (FAST subset)"
    info["epochs_planned"] = 2
    torch.save(state, "run/checkpoint.pt")
    with pytest.raises(ValueError, match="not .*other.tar.gz"):
        fit(ResNet18(), replace(data, source="other.tar.gz"), recipe, epochs=2, out="run",
            resume=True, device="cpu", progress=False)
    history = fit(ResNet18(), data, recipe, epochs=2, out="run", resume=True, device="cpu",
                  progress=False)
    assert len(history) == 2
