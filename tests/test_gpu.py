"""What only a CUDA GPU can check: mixed precision, channels_last, device-resident batches,
torch.compile, NCCL and CAMs on the GPU, each through the library's own code paths.

    pytest -m gpu tests/test_gpu.py        # on a machine with CUDA (benchmarks/gpu_run.sh)

Every test carries the ``gpu`` marker and skips, with its reason, where
``torch.cuda.is_available()`` is false, so CI (CPU only) collects and skips them in a second.
They need the real CIFAR-10 archive (``S9LIB_DATA``), as the CPU tests do.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO, archive_path, cifar
from s9lib import pretrained, seed_everything
from s9lib.checkpoints import load_checkpoint, load_model
from s9lib.data.inputs import preprocess
from s9lib.explain.cam import explain
from s9lib.models import ResNet18
from s9lib.runtime import amp_dtype
from s9lib.training.batches import DeviceBatches
from s9lib.training.history import History
from s9lib.training.loop import fit, make_optimizer, prepare_model, train_step
from s9lib.training.recipes import get_recipe

pytestmark = [pytest.mark.gpu, pytest.mark.integration,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]

CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def small():
    """80 training and 20 test images of the real data set (8 and 2 per class)."""
    if not archive_path().exists():
        pytest.skip(f"CIFAR-10 archive not found at {archive_path()} (set S9LIB_DATA)")
    return cifar(8, 2)


def _first_batch(split, device):
    """The whole split as one plain normalised batch (no shuffle, no augmentation)."""
    return next(iter(DeviceBatches(split, len(split), device, shuffle=False, augment=())))


def _steps(split, dtype, scaler=None, n=10):
    """``n`` train_step calls on one fixed batch: (losses, last logits, model)."""
    seed_everything(0)
    model = prepare_model(ResNet18(), CUDA)
    opt = make_optimizer(model, get_recipe("course"))  # Adam 1e-3: steady on one batch
    x, y = _first_batch(split, CUDA)
    losses = []
    for _ in range(n):
        loss, logits = train_step(model, x, y, opt, dtype=dtype, scaler=scaler)
        losses.append(float(loss))
    return losses, logits, model


def _learns(losses):
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses


def test_amp_dtype_on_this_gpu_follows_its_compute_capability():
    major = torch.cuda.get_device_capability(CUDA)[0]
    assert amp_dtype(CUDA, "auto") == (torch.bfloat16 if major >= 8 else torch.float16)


def test_bf16_autocast_train_step_learns(small):
    losses, logits, model = _steps(small.train, amp_dtype(CUDA, "bf16"))
    _learns(losses)
    assert logits.dtype == torch.bfloat16  # autocast was on
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights


def test_fp16_with_grad_scaler_train_step_learns(small):
    """What a T4 (compute capability 7.5) gets from ``amp_dtype``: fp16 + loss scaling."""
    scaler = torch.amp.GradScaler(CUDA.type)  # its first steps may be skipped (overflow)
    losses, logits, _ = _steps(small.train, amp_dtype(CUDA, "fp16"), scaler=scaler)
    _learns(losses)
    assert logits.dtype == torch.float16
    assert 0 < scaler.get_scale() < float("inf")


def test_fit_in_fp16_keeps_the_scaler_in_its_checkpoint(small, tmp_path):
    seed_everything(0)
    recipe = get_recipe("fast", amp="fp16", batch_size=40, tta_flip=False)
    history = fit(ResNet18(), small, recipe, epochs=1, out=tmp_path, device=CUDA,
                  progress=False)
    assert history.info["autocast"] == "float16"
    assert history.device.startswith(CUDA.type)
    state = load_checkpoint(tmp_path)
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0


def test_channels_last_weights_and_batches_and_the_same_logits(small):
    losses, _, model = _steps(small.train, None, n=2)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x, _ = _first_batch(small.train, CUDA)
    assert x.is_contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad():
        last = model(x)
        plain = model.to(memory_format=torch.contiguous_format)(x.contiguous())
    # cuDNN may pick other kernels (and TF32) for each layout: close, not bit-equal
    assert float((last - plain).abs().max()) < 1e-2 * float(plain.abs().max())


def test_device_batches_on_cuda_equal_the_cpus_without_augmentation(small):
    gpu = DeviceBatches(small.train, 32, CUDA, shuffle=False, augment=())
    cpu = DeviceBatches(small.train, 32, torch.device("cpu"), shuffle=False, augment=())
    pairs = list(zip(gpu, cpu))
    assert len(pairs) == len(cpu) == 3
    for (xg, yg), (xc, yc) in pairs:
        assert xg.device.type == CUDA.type and xg.dtype == torch.float32
        assert torch.equal(yg.cpu(), yc)
        assert float((xg.cpu() - xc).abs().max()) < 1e-6


def test_device_batches_on_cuda_repeat_per_epoch_and_crop_windows_of_the_padded_image(small):
    batches = DeviceBatches(small.train, 40, CUDA, shuffle=True, seed=3)
    first = [x.clone() for x, _ in batches]
    assert all(torch.equal(a, b) for a, b in zip(first, (x for x, _ in batches)))
    batches.set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(first, (x for x, _ in batches)))
    assert sum(len(x) for x in first) == batches.num_images
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in first)

    crop = DeviceBatches(small.train, 80, CUDA, shuffle=False, augment=("crop",))
    x, _ = next(iter(crop))
    whole = next(iter(DeviceBatches(small.train, 80, CUDA, shuffle=False, augment=())))[0]
    padded = torch.nn.functional.pad(whole, (4, 4, 4, 4), mode="reflect")
    found = torch.zeros(len(x), dtype=torch.bool, device=CUDA)
    for dy in range(9):
        for dx in range(9):
            window = padded[:, :, dy:dy + 32, dx:dx + 32]
            found |= (window - x).abs().amax((1, 2, 3)) < 1e-5
    assert bool(found.all()), f"{int((~found).sum())} crops are no window of their image"


def test_compiled_step_matches_the_eager_step(small, tmp_path):
    """Recipe.compile: fit steps a torch.compile'd model; one float32 step lands where the
    eager one does (to a small fraction of the step), and the checkpoint is a plain model."""
    seed_everything(0)
    start = {k: v.clone() for k, v in ResNet18().state_dict().items()}
    after = {}
    for compiled in (False, True):
        seed_everything(0)
        out = tmp_path / f"compile-{compiled}"
        history = fit(ResNet18(), small, get_recipe("fast", batch_size=80, amp="off",
                                                    tta_flip=False, compile=compiled),
                      epochs=1, out=out, device=CUDA, progress=False)
        assert torch.isfinite(torch.tensor(history.column("train_loss"))).all()
        after[compiled] = load_model(out, device="cpu").state_dict()
    floats = [k for k in start if start[k].is_floating_point()]
    step = max(float((after[False][k] - start[k]).abs().max()) for k in floats)
    error = max(float((after[True][k] - after[False][k]).abs().max()) for k in floats)
    assert step > 0 and error < 0.1 * step, (error, step)


def test_torchrun_one_process_trains_with_nccl(small, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "S9LIB_DATA": str(archive_path()), "S9LIB_DIST_TIMEOUT": "120",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=1", "-m", "s9lib", "train", "--recipe", "fast",
                           "--fast", "--sync-bn", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    history = History.load(out / "history.json")
    assert history.info["backend"] == "nccl" and history.info["world_size"] == 1
    assert history.device.startswith(CUDA.type)
    assert isinstance(load_model(out, device="cpu"), ResNet18)  # SyncBatchNorm saved as BN


@contextlib.contextmanager
def _ieee_float32():
    """cuDNN convolutions and matmuls in true float32 (no TF32), restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cams_on_cuda_equal_the_cpus(small, method):
    layers = ["layer3", "layer4"]
    cpu_model, gpu_model = pretrained(device="cpu"), pretrained(device=CUDA)
    x = preprocess(small.test.images[:16], model=cpu_model)
    ref = explain(cpu_model, x, layers=layers, method=method)
    got = explain(gpu_model, x.to(CUDA), layers=layers, method=method).cpu()
    assert torch.equal(got.targets, ref.targets)
    worst = {k: float((got.maps[k] - ref.maps[k]).abs().max()) for k in layers}
    if max(worst.values()) >= 1e-4:  # say whether TF32 convolutions explain the gap
        with _ieee_float32():
            exact = explain(gpu_model, x.to(CUDA), layers=layers, method=method).cpu()
        without = {k: float((exact.maps[k] - ref.maps[k]).abs().max()) for k in layers}
        pytest.fail(f"{method}: largest map difference CUDA vs CPU {worst} (limit 1e-4); "
                    f"with TF32 off: {without}")
