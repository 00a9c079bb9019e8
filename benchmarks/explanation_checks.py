"""Sanity checks and removal metrics for every CAM method on the shipped model.

    python benchmarks/explanation_checks.py --images 200 [--layer layer4] [--steps 16]
        [--out runs/explanation-checks/results.json]

On the first ``--images`` images of a class-balanced, class-interleaved test subset
(``data.test.subset``, seed 0; ``S9LIB_DATA`` says where CIFAR-10 is), explaining the shipped
model's prediction for each image at ``--layer``:

1. Cascading model-parameter randomisation (Adebayo et al. 2018, ``s9lib.evaluate.sanity``): Spearman
   and SSIM between each method's maps on the trained model and after re-initialising
   ``linear``, ``+layer4``, ... ``+stem``; a floor from maps of unrelated images.
2. Deletion AUC, insertion AUC (RISE) and ROAD MoRF / LeRF (``s9lib.evaluate.removal``) for each method
   plus two content-free baselines: ``random`` (``s9lib.evaluate.faithfulness.random_maps``: noise on
   the layer's grid, upsampled like a CAM) and ``centre`` (``s9lib.evaluate.removal.center_maps``).

Methods whose maps are equal to 1e-6 (GradCAM, XGradCAM and HiResCAM at ``layer4`` of this
model, whose gradient is constant over the cells) are scored once and marked ``same_maps_as``.
Prints the tables and the paired comparisons (every method against GradCAM, the random map and
the centre blob, per removal metric, bootstrap 95 % interval) and writes everything as JSON to
``--out`` (with date, device and timings), every image's scores to ``per_image.npz`` beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from s9lib import get_device, pretrained
from s9lib.explain.cam import METHODS, explain
from s9lib.data import load_cifar10
from s9lib.evaluate.faithfulness import random_maps
from s9lib.data.inputs import preprocess
from s9lib.evaluate.removal import (BLUR_SIGMA, DEFAULT_FRACTIONS, DEFAULT_STEPS, center_maps,
                           removal_report)
from s9lib.evaluate.sanity import cascading_randomization, predicted_classes
from s9lib.evaluate.stats import paired_difference


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="deletion/insertion")
    parser.add_argument("--fractions", default=",".join(map(str, DEFAULT_FRACTIONS)),
                        help="ROAD: fractions of pixels removed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: s9lib.get_device()")
    parser.add_argument("--out", default="runs/explanation-checks/results.json")
    args = parser.parse_args()
    if args.images < 10:
        parser.error("--images must be at least 10 (one image per class)")
    return args


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load(n: int, device):
    """The shipped model, the first n images of a balanced test subset, their labels."""
    model = pretrained(device=device)
    test = load_cifar10(fast=False).test.subset(-(-n // 10))
    return model, test.images[:n], test.labels[:n]


def all_maps(model, x, layer, targets, seed) -> dict[str, torch.Tensor]:
    """Every CAM method's maps plus the random and centre baselines, (N, H, W) on the CPU."""
    maps, grid = {}, None
    for method in METHODS:
        res = explain(model, x, [layer], method, targets)
        maps[method] = res.maps[layer].cpu()
        grid = tuple(res.raw[layer].shape[-2:])
    size = tuple(x.shape[-2:])
    maps["random"] = random_maps(len(x), grid, size, torch.Generator().manual_seed(seed))
    maps["centre"] = center_maps(len(x), size)
    return maps


def distinct(maps: dict[str, torch.Tensor]) -> dict[str, str]:
    """{method: the earlier method whose maps are equal to 1e-6} for the duplicates."""
    same = {}
    for i, (name, m) in enumerate(maps.items()):
        for earlier in list(maps)[:i]:
            if earlier not in same and torch.allclose(m, maps[earlier], atol=1e-6, rtol=0):
                same[name] = earlier
                break
    return same


def fmt(stat) -> str:
    """A mean and its bootstrap 95 % interval, in a 22-character cell."""
    return f"{stat.mean:+.3f} [{stat.low:+.2f},{stat.high:+.2f}]"


def print_sanity(report) -> None:
    for measure in ("spearman", "ssim"):
        print(f"\nSanity ({measure}, vs the trained model's maps; floor = unrelated images)")
        print(f"{'method':<10}" + "".join(f"{s:>23}" for s in [*report.steps, "floor"]))
        for method, stats in getattr(report, measure).items():
            cells = [*stats, report.floor[method][measure]]
            print(f"{method:<10}" + "".join(f"{fmt(s):>23}" for s in cells))


def print_removal(report, same) -> None:
    print(f"\nRemoval metrics ({report.n} images; deletion/insertion {report.steps} steps, "
          f"blur sigma {report.blur_sigma}; ROAD fractions {report.fractions})")
    cols = ("deletion_auc", "insertion_auc", "road_morf", "road_lerf")
    print(f"{'method':<10}" + "".join(f"{c:>23}" for c in cols) + "  (del, MoRF: lower better)")
    for method, row in report.scores.items():
        note = f"  same maps as {same[method]}" if method in same else ""
        print(f"{method:<10}" + "".join(f"{fmt(row[c]):>23}" for c in cols) + note)


def run(args) -> dict:
    t0 = time.perf_counter()
    device = get_device(args.device)
    model, pixels, labels = load(args.images, device)
    x = preprocess(pixels, model=model).to(device)
    targets = predicted_classes(model, x)
    accuracy = float((targets == torch.as_tensor(labels)).float().mean())
    t1 = time.perf_counter()
    sanity = cascading_randomization(model, x, args.layer, list(METHODS), targets, args.seed)
    t2 = time.perf_counter()
    maps = all_maps(model, x, args.layer, targets, args.seed)
    same = distinct(maps)
    fractions = tuple(float(f) for f in args.fractions.split(","))
    removal = removal_report(model, pixels, {k: v for k, v in maps.items() if k not in same},
                             targets, steps=args.steps, fractions=fractions, seed=args.seed)
    for method, earlier in same.items():
        removal.scores[method], removal.curves[method], removal.per_image[method] = (
            removal.scores[earlier], removal.curves[earlier], removal.per_image[earlier])
    removal.scores = {m: removal.scores[m] for m in maps}  # METHODS order, baselines last
    t3 = time.perf_counter()
    print(f"{len(pixels)} test images, model accuracy on them {accuracy:.1%}, layer {args.layer}")
    print_sanity(sanity)
    print_removal(removal, same)
    paired = paired_removal(removal)
    return {"images": len(pixels), "layer": args.layer, "accuracy": accuracy,
            "timing_s": {"load": t1 - t0, "sanity": t2 - t1, "removal": t3 - t2},
            "sanity": sanity.to_dict(), "removal": removal.to_dict(), "same_maps_as": same,
            "paired": paired}


def paired_removal(removal) -> dict:
    """Every method against GradCAM, the random map and the centre blob, per metric, paired by
    image (bootstrap 95 % interval, seed 0); printed and returned for results.json."""
    print("\nPaired by image (a - b, bootstrap 95 % interval)")
    paired = {}
    for b in ("gradcam", "random", "centre"):
        for a in removal.per_image:
            if a == b:
                continue
            for metric in ("deletion_auc", "insertion_auc", "road_morf", "road_lerf"):
                d = paired_difference(removal.per_image[a][metric],
                                      removal.per_image[b][metric], (a, b))
                paired[f"{a} - {b}/{metric}"] = d.to_dict()
                print(f"{metric:<14} {d.describe()}")
    return paired


def per_image_arrays(result: dict) -> dict[str, np.ndarray]:
    """Every image's values, taken out of ``result`` (they would make the JSON megabytes) for
    ``per_image.npz``: ``sanity/{method}/{measure}`` (steps x images), ``sanity/{method}/
    floor_{measure}`` and ``removal/{method}/{metric}`` (images), float16 (three significant
    digits, which is what every figure printed from them shows; the working tree must stay
    small enough for the GPU run to carry)."""
    arrays = {}
    for part in ("sanity", "removal"):
        for method, values in result[part].pop("per_image").items():
            for name, v in values.items():
                arrays[f"{part}/{method}/{name}"] = np.asarray(v, dtype=np.float16)
    return arrays


def main() -> None:
    args = parse_args()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    cpu = time.process_time()
    result = run(args)
    result["cpu_seconds"] = time.process_time() - cpu
    result.update(command="python " + shlex.join(sys.argv), started=started,
                  device=str(get_device(args.device)), cpu=cpu_name(),
                  torch=torch.__version__, threads=torch.get_num_threads(),
                  blur_sigma=BLUR_SIGMA, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.parent / "per_image.npz", **per_image_arrays(result))
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{result['cpu_seconds']:.0f} CPU s, {sum(result['timing_s'].values()):.0f} s wall; "
          f"written to {out}")


if __name__ == "__main__":
    main()
