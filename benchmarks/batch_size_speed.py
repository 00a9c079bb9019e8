"""Images per second of the ResNet18 training step by batch size, in bf16 autocast on the CPU:
the measurement behind the ``cpu`` recipe's batch of 128.

    python benchmarks/batch_size_speed.py                       # 128, 256, 512; 3 repeats
    python benchmarks/batch_size_speed.py --sizes 64,128 --images 2048 --repeats 5

Why: on a GPU a larger batch keeps the device busy and buys speed, so the ``fast`` recipe
uses 512. A CPU is saturated by far smaller batches; if 512 is no faster per image than 128,
a CPU recipe gets four times the optimiser steps for the same minutes by using 128. Each
figure is the model step alone (``train_step``: forward, backward, SGD; channels_last; no data
loading) over the same number of images for every size, repeated; the median is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import model_step_rate  # noqa: E402  (the same timing as train_speed.py)

from s9lib import get_device  # noqa: E402
from s9lib.runtime import amp_dtype  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cuda or cpu [default: best available]")
    p.add_argument("--sizes", default="128,256,512", help="comma-separated batch sizes")
    p.add_argument("--images", type=int, default=1536,
                   help="images timed per measurement, the same for every size [1536]")
    p.add_argument("--repeats", type=int, default=3, help="measurements per size [3]")
    args = p.parse_args()
    device = get_device(args.device)
    dtype = amp_dtype(device)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"device {device}, {torch.get_num_threads()} threads, autocast "
          f"{str(dtype or torch.float32).removeprefix('torch.')}, torch {torch.__version__}")
    for size in sizes:
        steps = max(1, args.images // size)
        rates = [model_step_rate(device, size, steps, channels_last=True, dtype=dtype)
                 for _ in range(args.repeats)]
        print(f"batch {size:>4}: {statistics.median(rates):6.1f} img/s median of {args.repeats} "
              f"({', '.join(f'{r:.1f}' for r in rates)}), {steps} steps each")


if __name__ == "__main__":
    main()
