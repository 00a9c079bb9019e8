"""Training speed of the CIFAR ResNet18: model step alone, each data path, epoch time, and
time to a target accuracy. Prints one line per figure; copy them into BENCHMARKS.md with the
command, device and date.

    python benchmarks/train_speed.py                       # the best device here
    python benchmarks/train_speed.py --device cpu --steps 5 --batch-size 64
    python benchmarks/train_speed.py --device cpu --steps 5 --batch-size 128 --compile
    python benchmarks/train_speed.py --history runs/fast/history.json --target 0.94

Why these figures: "img/s of the whole step" hides where time goes. The model step alone is
the ceiling; each data path's own throughput says whether it can feed that ceiling; the
epoch time and the time to a target accuracy are what a reader waits for. float32 and bf16
autocast are timed side by side in the same process, since which one is faster depends on the
CPU (AMX or not) or GPU; ``s9lib.runtime.amp_dtype`` picks by the same facts.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from s9lib.data import augment
from s9lib import get_device, seed_everything
from s9lib.training.batches import DeviceBatches, LoaderBatches
from s9lib.data import Split, load_cifar10
from s9lib.models import ResNet18
from s9lib.runtime import amp_dtype, cpu_bf16_flags
from s9lib.training.history import History
from s9lib.training.loop import train_step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_step_rate(device, batch_size, steps, channels_last, dtype=None,
                    compile_model=False) -> float:
    """Images/s of ``s9lib.training.loop.train_step`` (forward + backward + SGD) on a fixed random
    batch (no data loading), under ``dtype`` autocast (None: float32)."""
    seed_everything(0)
    model = ResNet18().to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    step_model = torch.compile(model) if compile_model else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch_size,), device=device)

    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step():
        train_step(step_model, x, y, opt, dtype=dtype, scaler=scaler)

    for _ in range(3 if not compile_model else 10):  # warm-up (and compilation)
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def data_rate(batches, max_batches) -> float:
    """Images/s a data path delivers to the device on its own (no model)."""
    batches.set_epoch(0)
    it = iter(batches)
    next(it)  # start workers / first transfer outside the timing
    n, start = 0, time.perf_counter()
    for i, (x, _) in enumerate(it):
        n += len(x)
        if i + 1 >= max_batches:
            break
    _sync(x.device)
    return n / (time.perf_counter() - start)


def time_to_target(history: History, target: float) -> tuple[int, float] | None:
    """(epoch, cumulative training seconds) when test accuracy first reached ``target``."""
    total = 0.0
    for rec in history.epochs:
        total += rec.seconds
        if rec.test_acc >= target:
            return rec.epoch, total
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cuda or cpu [default: best available]")
    p.add_argument("--batch-size", type=int, default=None, help="[default: 512 cuda, 64 cpu]")
    p.add_argument("--steps", type=int, default=None, help="timed steps [default: 50 cuda, 5 cpu]")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers for the loader path")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile (channels_last, in float32 and in the lower precision)")
    p.add_argument("--data", default=None, help="CIFAR-10 source [default: $S9LIB_DATA]")
    p.add_argument("--history", action="append", default=[],
                   help="history.json of a run: report its epoch time and time to --target")
    p.add_argument("--target", type=float, default=0.94, help="target test accuracy [0.94]")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()

    device = get_device(args.device)
    cuda = device.type == "cuda"
    bs = args.batch_size or (512 if cuda else 64)
    steps = args.steps or (50 if cuda else 5)
    figures: dict = {"device": torch.cuda.get_device_name(device) if cuda else
                     f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
                     "torch": torch.__version__, "batch_size": bs, "steps": steps}
    print(f"device: {figures['device']}  torch {torch.__version__}  batch {bs}  steps {steps}")

    auto = amp_dtype(device, "auto")
    figures["auto_dtype"] = str(auto or torch.float32)
    figures["cpu_bf16_flags"] = sorted(cpu_bf16_flags())
    print(f"amp_dtype(auto) here: {figures['auto_dtype']}  "
          f"(CPU bf16 instructions: {', '.join(figures['cpu_bf16_flags']) or 'none'})")
    low = auto or torch.bfloat16  # compare with what fit() would pick; bf16 where that is float32
    rates = {}
    for name, cl, dtype, comp in (("NCHW float32", False, None, False),
                                  ("channels_last float32", True, None, False),
                                  (f"channels_last {str(low)[6:]}", True, low, False),
                                  ("compiled float32", True, None, True),
                                  (f"compiled {str(low)[6:]}", True, low, True)):
        if comp and not args.compile:
            continue
        rate = rates[name] = model_step_rate(device, bs, steps, cl, dtype, compile_model=comp)
        figures[f"model_step_img_s_{name.replace(' ', '_')}"] = round(rate, 1)
        print(f"model step alone, {name:22s}: {rate:10.1f} img/s"
              f"  ({50_000 / rate:8.1f} s per 50k-image epoch)")
    ratio = rates[f"channels_last {str(low)[6:]}"] / rates["channels_last float32"]
    figures["low_precision_over_float32"] = round(ratio, 2)
    print(f"{str(low)[6:]} / float32 (channels_last, this run): {ratio:.2f}x")

    data = load_cifar10(args.data, fast=False)
    train: Split = data.train
    loader = LoaderBatches(train, augment.build("course-fixed"), bs, device, shuffle=True,
                           num_workers=args.workers, drop_last=True)
    resident = DeviceBatches(train, bs, device, shuffle=True, drop_last=True)
    for name, batches in (("albumentations DataLoader", loader), ("device-resident", resident)):
        rate = data_rate(batches, max_batches=max(steps, 20))
        figures[f"data_img_s_{name}"] = round(rate, 1)
        print(f"data path alone, {name:25s}: {rate:10.1f} img/s")

    for path in args.history:
        h = History.load(path)
        secs = np.array(h.column("seconds"))
        hit = time_to_target(h, args.target)
        figures[f"run:{path}"] = {"device": h.device, "epochs": len(h),
                                  "median_epoch_s": float(np.median(secs)),
                                  "final_test_acc": h.final_test_acc,
                                  "time_to_target": hit}
        print(f"run {path}: {h.device}, {len(h)} epochs, median epoch {np.median(secs):.1f} s, "
              f"final test acc {h.final_test_acc:.4f}, "
              + (f"reached {args.target:.2%} at epoch {hit[0]} after {hit[1]:.1f} s"
                 if hit else f"never reached {args.target:.2%}"))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
