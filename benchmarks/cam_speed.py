"""CPU time of s9lib CAMs at 4 layers in ONE call vs pytorch-grad-cam's 4 single-layer calls.

Why: the book's explorer shows layer1..layer4 side by side. s9lib serves every layer from one
forward and one backward pass (and the backward stops at the earliest hooked layer and skips
weight gradients); pytorch-grad-cam needs a call per layer if you want each layer's own map
(its multi-layer mode averages the layers into one map), each with a full backward. Goal: s9lib
at most 0.5x grad-cam's time.

    python benchmarks/cam_speed.py [--batch 32] [--repeats 5] [--threads N] [--methods a,b]

Every method in ``s9lib.explain.cam.METHODS`` against its pytorch-grad-cam class (EigenCAM against
plain ``pgc.EigenCAM``, whose only difference is that it skips our sign rule). EigenCAM needs
no backward pass in either library.

Same model (the shipped weights if present, else a seeded random ResNet18), same images (real
CIFAR-10 test images from $S9LIB_DATA when available, else seeded noise), same targets (the
prediction). Prints the median process CPU time and wall time over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pytorch_grad_cam as pgc
from s9lib.data import augment as aug
from s9lib.explain.cam import METHODS
from s9lib.models import ResNet18

LAYERS = ["layer1", "layer2", "layer3", "layer4"]
REFERENCE = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
             "layercam": pgc.LayerCAM, "hirescam": pgc.HiResCAM, "eigencam": pgc.EigenCAM}


def load_model() -> tuple[torch.nn.Module, str]:
    try:
        from s9lib.checkpoints import pretrained

        return pretrained(device="cpu"), "shipped weights"
    except FileNotFoundError:
        torch.manual_seed(0)
        return ResNet18().eval(), "seeded random ResNet18 (no shipped weights)"


def load_images(batch: int) -> tuple[torch.Tensor, str]:
    try:
        from s9lib.data import load_cifar10

        images = load_cifar10(fast=True).test.images[:batch]
        x = torch.from_numpy(aug.standardize(images)).permute(0, 3, 1, 2).contiguous()
        return x, f"{batch} real CIFAR-10 test images"
    except (FileNotFoundError, ValueError):
        torch.manual_seed(1)
        return torch.randn(batch, 3, 32, 32), f"{batch} noise images (no CIFAR-10 found)"


def timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def s9lib_call(model, x, method):
    def run():
        METHODS[method](model, LAYERS)(x)  # one call, four layers, hooks added and removed
    return run


def gradcam_calls(model, x, method):
    layers = [model.get_submodule(n) for n in LAYERS]

    def run():
        for layer in layers:  # one call per layer: each layer's own map
            with REFERENCE[method](model, target_layers=[layer]) as cam:
                cam(x, targets=None)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    parser.add_argument("--methods", default=",".join(REFERENCE),
                        help=f"comma-separated, from {', '.join(REFERENCE)} [default: all]")
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in REFERENCE]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(REFERENCE)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, model_desc = load_model()
    x, images_desc = load_images(args.batch)
    print(f"model: {model_desc}; images: {images_desc}; layers: {', '.join(LAYERS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
          f"{args.repeats} repeats (after 1 warm-up), process CPU seconds / wall seconds")
    print(f"{'method':<10} {'s9lib 1 call':>20} {'grad-cam 4 calls':>20} {'ratio (CPU)':>12}")
    for method in methods:
        ours, theirs = s9lib_call(model, x, method), gradcam_calls(model, x, method)
        ours(), theirs()  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(args.repeats):  # interleaved, so background load hits both alike
            t_ours.append(timed(ours))
            t_theirs.append(timed(theirs))
        cpu_o, wall_o = (statistics.median(t[i] for t in t_ours) for i in (0, 1))
        cpu_t, wall_t = (statistics.median(t[i] for t in t_theirs) for i in (0, 1))
        print(f"{method:<10} {cpu_o:>9.3f} / {wall_o:>6.3f}s {cpu_t:>9.3f} / {wall_t:>6.3f}s "
              f"{cpu_o / cpu_t:>11.2f}x")


if __name__ == "__main__":
    main()
