import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from s9lib import seed_everything
from s9lib.training.batches import DeviceBatches
from s9lib.models import InputStats, ResNet18
from s9lib.inference import misclassified, per_class_accuracy, predict_logits
from s9lib.checkpoints import CHECKPOINT, load_checkpoint, load_model, save_checkpoint
from s9lib.training.history import HISTORY, History
from s9lib.training.recipes import get_recipe, lr_schedule
from s9lib.training.loop import fit, make_scheduler

from helpers import cifar

CPU = torch.device("cpu")
NUMERIC = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")


def _model(seed=0):
    seed_everything(seed)
    return ResNet18()


def test_fast_training_on_real_images_lowers_the_loss():
    data = cifar(train_per_class=10, test_per_class=5)
    recipe = get_recipe("course", batch_size=25)
    history = fit(_model(), data, recipe, epochs=4, device=CPU, progress=False)
    losses = history.column("train_loss")
    assert len(history) == 4 and losses[-1] < losses[0]
    assert all(0.0 <= a <= 1.0 for a in history.column("test_acc"))
    assert history.recipe["name"] == "course" and history.device.startswith("cpu")


def test_fast_recipe_runs_on_the_device_path():
    data = cifar(train_per_class=10, test_per_class=5)
    recipe = get_recipe("fast", batch_size=25)
    history = fit(_model(), data, recipe, epochs=2, device=CPU, progress=False)
    assert len(history) == 2 and np.isfinite(history.column("train_loss")).all()
    # the recorded lr is the one the epoch's last step trained with: the schedule's end
    schedule = lr_schedule(recipe, steps_per_epoch=len(data.train) // 25, epochs=2)
    assert history.column("lr")[-1] == pytest.approx(schedule[-1]) and schedule[-1] > 0


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 10, 97])
def test_one_cycle_schedule_is_defined_for_any_length(steps):
    """OneCycleLR divides by zero for a 1-step warm-up and goes negative past its end."""
    recipe = get_recipe("fast", epochs=1)
    lrs = lr_schedule(recipe, steps_per_epoch=steps)
    assert len(lrs) == steps and (lrs > 0).all() and lrs.max() <= recipe.lr
    if steps >= 4:
        peak = int(np.argmax(lrs))
        assert lrs[peak] == pytest.approx(recipe.lr)
        assert (np.diff(lrs[:peak + 1]) > 0).all() and (np.diff(lrs[peak:]) < 0).all()
        assert lrs[0] == pytest.approx(recipe.lr / 8) and lrs[-1] == pytest.approx(recipe.lr / 1600)
    # the scheduler fit() uses steps through the same values, and one step past the end
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.lr)
    sched = make_scheduler(opt, recipe, 1, steps)
    seen = []
    for _ in range(steps + 1):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert np.allclose(seen[:steps], lrs) and seen[-1] > 0


@pytest.mark.parametrize("recipe", ["course", "fast"])
def test_resume_after_interruption_gives_the_uninterrupted_history(tmp_path, recipe):
    data = cifar(train_per_class=6, test_per_class=2)
    r = get_recipe(recipe, batch_size=20)
    straight = fit(_model(), data, r, epochs=2, device=CPU, progress=False,
                   out=tmp_path / "a")

    class Interrupted(Exception):
        pass

    def stop(history):
        raise Interrupted

    with pytest.raises(Interrupted):
        fit(_model(), data, r, epochs=2, device=CPU, progress=False, out=tmp_path / "b",
            on_epoch_end=stop)
    assert load_checkpoint(tmp_path / "b")["epoch"] == 1
    resumed = fit(_model(seed=123), data, r, epochs=2, device=CPU, progress=False,
                  out=tmp_path / "b", resume=True)
    for key in NUMERIC:
        assert resumed.column(key) == straight.column(key), key
    a = load_checkpoint(tmp_path / "a")["model"]
    b = load_checkpoint(tmp_path / "b")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_recipe(tmp_path):
    data = cifar(train_per_class=2, test_per_class=1)
    fit(_model(), data, get_recipe("course", batch_size=10), epochs=1, device=CPU,
        progress=False, out=tmp_path)
    with pytest.raises(ValueError, match="different recipe"):
        fit(_model(), data, get_recipe("course", batch_size=5), epochs=1, device=CPU,
            progress=False, out=tmp_path, resume=True)


def test_checkpoint_and_history_round_trip(tmp_path):
    data = cifar(train_per_class=2, test_per_class=1)
    history = fit(_model(), data, get_recipe("course", batch_size=10), epochs=1, device=CPU,
                  progress=False, out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT, HISTORY]
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert {"model", "optimizer", "scheduler", "epoch", "history", "recipe"} <= set(state)
    assert History.load(tmp_path / HISTORY).to_dict() == history.to_dict()
    assert json.loads((tmp_path / HISTORY).read_text())["epochs"][0]["epoch"] == 1

    model = load_model(tmp_path, device="cpu")
    mean, std = model.normalization  # the course preset's statistics, from the checkpoint
    assert mean == pytest.approx((0.4914, 0.4822, 0.4465)) and std[0] == pytest.approx(0.2023)
    reloaded = predict_logits(model, data.test, device=CPU)
    model2 = _model()
    model2.load_state_dict(state["model"])
    assert np.allclose(reloaded, predict_logits(model2, data.test, device=CPU),
                       atol=1e-5)


def test_checkpoint_save_is_atomic(tmp_path):
    """A save that fails half way leaves the previous checkpoint intact and no temp files."""
    model = _model()
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, model, epoch=1)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    history = History(info={"bad": Unpicklable()})
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, model, epoch=2, history=history)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable s9lib checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    other = torch.nn.Sequential(torch.nn.Linear(4, 10))
    other.linear = other[0]
    torch.save({"model": other.state_dict(), "arch": "ResNet18", "num_classes": 10},
               tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not hold the CIFAR ResNet18"):
        load_model(tmp_path / "other.pt")


def test_unknown_recipe_and_fields():
    with pytest.raises(ValueError, match="fast"):
        get_recipe("slow")
    with pytest.raises(ValueError, match="optimizer"):
        replace(get_recipe("course"), optimizer="lamb")


def test_per_class_accuracy_and_misclassified():
    labels = np.array([0, 0, 1, 1, 2])
    logits = np.array([[5, 0, 0], [0, 4, 0], [0, 3, 0], [9, 0, 0], [0, 0, 1]], float)
    acc = per_class_accuracy(labels, logits.argmax(1), num_classes=4)
    assert acc[:3].tolist() == [0.5, 0.5, 1.0] and np.isnan(acc[3])
    wrong = misclassified(logits, labels)
    assert wrong.indices.tolist() == [3, 1]  # most confident mistake first
    assert wrong.pred.tolist() == [0, 1] and wrong.true.tolist() == [1, 0]
    assert (np.diff(wrong.confidence) <= 0).all()


def test_device_batches_augment_repeatably():
    split = cifar(train_per_class=4, test_per_class=1).train
    plain = DeviceBatches(split, 8, CPU, shuffle=False, augment=())
    aug = DeviceBatches(split, 8, CPU, shuffle=True, seed=1)
    x0, y0 = next(iter(plain))
    assert x0.shape == (8, 3, 32, 32) and y0.tolist() == split.labels[:8].tolist()
    first = [x.clone() for x, _ in aug]
    again = [x for x, _ in aug]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    aug.set_epoch(1)
    assert not torch.equal(first[0], next(iter(aug))[0])
    # Without augmentation the batch is the normalised image, exactly.
    expect = (split.images[:8] / 255.0 - np.array([0.4914, 0.4822, 0.4465])) / np.array(
        [0.2470, 0.2435, 0.2616])
    assert np.allclose(x0.permute(0, 2, 3, 1).numpy(), expect, atol=1e-4)
    with pytest.raises(ValueError, match="mixup"):
        DeviceBatches(split, 8, CPU, shuffle=True, augment=("mixup",))


def test_device_crop_is_a_shifted_window_of_the_padded_image():
    split = cifar(train_per_class=1, test_per_class=1).train
    batches = DeviceBatches(split, 10, CPU, shuffle=False, augment=("crop",), seed=3)
    x, _ = next(iter(batches))
    padded = np.pad(split.images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    norm = (padded / 255.0 - np.array([0.4914, 0.4822, 0.4465])) / np.array(
        [0.2470, 0.2435, 0.2616])
    for i in range(10):
        got = x[i].permute(1, 2, 0).numpy()
        assert any(np.allclose(got, norm[i, dy:dy + 32, dx:dx + 32], atol=1e-4)
                   for dy in range(9) for dx in range(9))


# --------------------------------------------------------------------------- autocast dtype

from s9lib.runtime import AMP_SETTINGS, amp_dtype, cpu_bf16_flags  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile", {"amx_bf16", "avx512_bf16"}),
    ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", {"avx512_bf16"}),
    ("fpu sse2 avx2 fma", set()),
])
def test_cpu_bf16_flags_read_from_cpuinfo(tmp_path, flags, expected):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_bf16_flags(info) == expected
    assert cpu_bf16_flags(tmp_path / "missing") == set()  # macOS, Windows: no such file


def test_amp_dtype_settings_and_environment_override(monkeypatch):
    monkeypatch.delenv("S9LIB_AMP", raising=False)
    assert amp_dtype("cpu", "off") is None
    assert amp_dtype("cpu", "bf16") is torch.bfloat16
    assert amp_dtype("cpu", "fp16") is torch.float16
    assert amp_dtype("mps", "auto") is None
    native = bool(cpu_bf16_flags())
    assert amp_dtype("cpu") is (torch.bfloat16 if native else None)
    monkeypatch.setenv("S9LIB_AMP", "OFF")
    assert amp_dtype("cpu") is None
    assert amp_dtype("cpu", "bf16") is torch.bfloat16  # an explicit setting wins
    monkeypatch.setenv("S9LIB_AMP", "half")
    with pytest.raises(ValueError, match="'half'.*auto, off, bf16, fp16"):
        amp_dtype("cpu")
    with pytest.raises(ValueError, match="amp"):
        get_recipe("fast", amp="fp8")
    assert set(AMP_SETTINGS) == {"auto", "off", "bf16", "fp16"}


@pytest.mark.parametrize("setting, recorded", [("off", "float32"), ("bf16", "bfloat16")])
def test_fit_trains_under_the_chosen_autocast_and_records_it(monkeypatch, setting, recorded):
    monkeypatch.setenv("S9LIB_AMP", setting)
    data = cifar(train_per_class=10, test_per_class=5)
    history = fit(_model(), data, get_recipe("course", batch_size=25), epochs=2, device=CPU,
                  progress=False)
    assert history.info["autocast"] == recorded
    assert np.isfinite(history.column("train_loss")).all()
    # a recipe field asks for the same thing without the environment
    monkeypatch.delenv("S9LIB_AMP")
    h2 = fit(_model(), data, get_recipe("course", batch_size=25, amp=setting), epochs=2,
             device=CPU, progress=False)
    assert h2.info["autocast"] == recorded and h2.column("train_loss") == history.column("train_loss")


class _SmallNet(InputStats):
    """A small convnet that carries its input statistics as every s9lib model does."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.body(x)


def test_fp16_with_loss_scaling_trains(monkeypatch):
    # A small convnet, not ResNet18: CPUs compute fp16 convolutions on a slow path (about
    # 20x float32 on the Xeon CI machine), and the GradScaler logic under test is the same.
    data = cifar(train_per_class=10, test_per_class=5)
    torch.manual_seed(0)
    small = _SmallNet()
    history = fit(small, data, get_recipe("course", batch_size=25, amp="fp16", lr=1e-2),
                  epochs=3, device=CPU, progress=False)
    losses = history.column("train_loss")
    assert history.info["autocast"] == "float16" and losses[-1] < losses[0]


def test_resume_accepts_a_checkpoint_written_before_a_recipe_field_existed(tmp_path):
    """The reference run's checkpoint has no ``amp`` field; its default must match."""
    data = cifar(train_per_class=10, test_per_class=5)
    recipe = get_recipe("course", batch_size=25)
    first = fit(_model(), data, recipe, epochs=1, out=tmp_path, device=CPU, progress=False)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    del state["recipe"]["amp"]
    torch.save(state, tmp_path / CHECKPOINT)
    again = fit(_model(), data, recipe, epochs=1, out=tmp_path, resume=True, device=CPU,
                progress=False)
    assert again.column("train_loss") == first.column("train_loss")


def test_the_published_seed_log_reads_as_a_history(tmp_path):
    from helpers import REPO

    log = REPO / "runs" / "seed-published" / "seed_run_log.csv"
    h = History.from_epoch_csv(log, recipe="course", device="Colab GPU")
    assert len(h) == 60 and h.column("epoch")[0] == 1 and h.column("epoch")[-1] == 60
    assert h.final_test_acc == pytest.approx(0.8729) and h.recipe["name"] == "course"
    assert h.epochs[0].train_acc == pytest.approx(0.3654) and h.epochs[0].lr == 1e-3
    assert h.train_seconds == pytest.approx(3379.434)
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(ValueError, match="train_seconds"):
        History.from_epoch_csv(bad, recipe="course", device="x")


def test_atomic_write_gives_the_permissions_of_an_ordinary_write(tmp_path):
    import os
    import stat

    from s9lib.files import FileKind, atomic_write

    old = os.umask(0o022)
    anything = FileKind("a test file", lambda path: True)
    try:
        fresh = atomic_write(tmp_path / "fresh.bin", lambda f: f.write(b"x"), kind=anything)
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not mkstemp's 0600
        kept = tmp_path / "kept.bin"
        kept.write_bytes(b"old")
        kept.chmod(0o640)
        atomic_write(kept, lambda f: f.write(b"new"), kind=anything)
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_bytes() == b"new"
    finally:
        os.umask(old)


def test_history_names_the_data_relative_to_the_working_directory(monkeypatch, tmp_path):
    """A committed history must not carry an absolute path of the machine that made it."""
    import os

    from helpers import REPO, archive_path

    monkeypatch.chdir(REPO)
    data = cifar(train_per_class=2, test_per_class=1)
    assert os.path.isabs(data.source) and data.is_fast  # as given: absolute; FAST a field
    history = fit(_model(), data, get_recipe("course", batch_size=20), epochs=1, device=CPU,
                  out=tmp_path, progress=False)
    recorded = history.info["data"]
    assert not os.path.isabs(recorded) and history.info["fast"] is True
    assert history.info["data_sha256"] == data.fingerprint()
    assert os.path.realpath(recorded) == os.path.realpath(archive_path())
    # and a resume from the same working directory accepts it as the same data
    again = fit(_model(), data, get_recipe("course", batch_size=20), epochs=1, device=CPU,
                out=tmp_path, resume=True, progress=False)
    assert len(again) == 1


def test_the_course_recipes_old_names_load_from_files_and_are_refused_by_name():
    from s9lib.training.recipes import Recipe

    old = {**get_recipe("course").to_dict(), "name": "seed", "augment": "seed"}
    assert Recipe.from_dict(old) == get_recipe("course")
    with pytest.raises(ValueError, match="now called 'course-fixed'"):
        get_recipe("seed-fixed")
