"""1,000 CAM calls on one model: no hooks may be left behind and memory must stay flat.

Why: the course notebook registered new hooks on every call and never removed them, so every
call got slower and kept the previous activations (and their autograd graphs) alive. This runs
the usage patterns a notebook produces: `with` blocks, one-shot calls outside `with`,
`explain()`, both methods, and an exception inside a `with` block every 50th call, then prints
the hooks left on the model (must be 0) and the process RSS at calls 10, 500 and 1000.

    python benchmarks/cam_hooks.py [--calls 1000] [--batch 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from s9lib.explain.cam import GradCAM, GradCAMPlusPlus, explain
from s9lib.models import ResNet18

LAYERS = ["layer3", "layer4"]


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc; no psutil needed)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def hook_count(model: torch.nn.Module) -> int:
    """Every module hook of every kind on every sub-module."""
    return sum(len(v) for m in model.modules() for k, v in vars(m).items()
               if k.endswith("hooks") and isinstance(v, dict))


def one_call(model, x, i: int) -> None:
    kind = i % 4
    if kind == 0:
        with GradCAM(model, LAYERS) as cam:
            cam(x)
    elif kind == 1:
        GradCAMPlusPlus(model, LAYERS)(x, targets=i % 10)  # one-shot, outside `with`
    elif kind == 2:
        explain(model, x, layers=LAYERS, method="gradcam++")
    else:
        try:
            with GradCAM(model, LAYERS) as cam:
                cam(x)
                if i % 50 == 3:
                    raise KeyError("an error inside the with block")
        except KeyError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ResNet18().train()  # in train mode, to show the CAM calls restore it
    x = torch.randn(args.batch, 3, 32, 32)
    checkpoints = {10, args.calls // 2, args.calls}
    print(f"{args.calls} CAM calls, batch {args.batch}, layers {LAYERS}, torch {torch.__version__}")
    start = time.perf_counter()
    for i in range(1, args.calls + 1):
        one_call(model, x, i)
        if i in checkpoints:
            print(f"call {i:>5}: RSS {rss_mib():7.1f} MiB, hooks on model {hook_count(model)}, "
                  f"{time.perf_counter() - start:6.1f} s so far")
    print(f"hooks left on the model after {args.calls} calls: {hook_count(model)}")
    print(f"model.training={model.training} (was True), all requires_grad restored: "
          f"{all(p.requires_grad for p in model.parameters())}")


if __name__ == "__main__":
    main()
