"""CPU time of s9lib's gradient methods against Captum's, on the same model, images and targets.

Why: SmoothGrad and Integrated Gradients cost one backward pass per noise sample or path step.
s9lib batches them (every sample of every image in batches of ``batch_size`` rows: one forward
and one backward per batch), as Captum does with its ``internal_batch_size``; this measures
what each library's way costs on a CPU, with the settings the chapters use.

    python benchmarks/gradient_speed.py [--batch 16] [--repeats 3] [--threads N]

Methods and settings: saliency; SmoothGrad, 16 samples, noise sd 0.6 (Captum: ``NoiseTunnel``
over ``Saliency``, ``nt_samples=16``); Integrated Gradients, 16 Gauss-Legendre steps, baseline 0
(Captum: ``method="gausslegendre"``, ``n_steps=16``); Guided Backprop; Guided GradCAM at
``layer4``. Both libraries agree on these maps to 1e-5 of the map maximum
(``tests/test_gradients.py``). Shipped weights, real CIFAR-10 test images ($S9LIB_DATA), the
predicted class as target. Prints the median process CPU time and wall time over the repeats,
each pair interleaved so background load hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from captum import attr as captum

from s9lib.checkpoints import pretrained
from s9lib.data import load_cifar10
from s9lib.data.inputs import preprocess
from s9lib.explain.gradients import attribute

SETTINGS = {"saliency": {}, "smoothgrad": {"samples": 16, "stdev": 0.6},
            "integrated_gradients": {"steps": 16}, "guided_backprop": {},
            "guided_gradcam": {"layer": "layer4"}}


def captum_call(model, x, targets, method):
    options = SETTINGS[method]

    def run():
        xi = x.clone().requires_grad_(True)
        if method == "saliency":
            captum.Saliency(model).attribute(xi, target=targets, abs=False)
        elif method == "smoothgrad":
            captum.NoiseTunnel(captum.Saliency(model)).attribute(
                xi, target=targets, nt_type="smoothgrad", nt_samples=options["samples"],
                stdevs=options["stdev"], nt_samples_batch_size=len(x) * options["samples"])
        elif method == "integrated_gradients":
            captum.IntegratedGradients(model).attribute(
                xi, baselines=0.0, target=targets, n_steps=options["steps"],
                method="gausslegendre")
        elif method == "guided_backprop":
            captum.GuidedBackprop(model).attribute(xi, target=targets)
        else:
            captum.GuidedGradCam(model, model.get_submodule(options["layer"])).attribute(
                xi, target=targets)
    return run


def s9lib_call(model, x, targets, method):
    def run():
        attribute(model, x, method, targets, **SETTINGS[method])
    return run


def timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = pretrained(device="cpu").eval()
    x = preprocess(load_cifar10(fast=True).test.images[:args.batch], model)
    with torch.no_grad():
        targets = model(x).argmax(1)
    print(f"shipped weights; {args.batch} real CIFAR-10 test images; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} repeats after a warm-up")
    print(f"{'method':<22} {'s9lib (CPU s / wall s)':>24} {'Captum (CPU s / wall s)':>25} "
          f"{'ratio (CPU)':>12}")
    for method in SETTINGS:
        ours, theirs = s9lib_call(model, x, targets, method), captum_call(model, x, targets, method)
        ours(), theirs()  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(args.repeats):
            t_ours.append(timed(ours))
            t_theirs.append(timed(theirs))
        cpu_o, wall_o = (statistics.median(t[i] for t in t_ours) for i in (0, 1))
        cpu_t, wall_t = (statistics.median(t[i] for t in t_theirs) for i in (0, 1))
        print(f"{method:<22} {cpu_o:>13.3f} / {wall_o:>6.3f} {cpu_t:>14.3f} / {wall_t:>6.3f} "
              f"{cpu_o / cpu_t:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
