"""The blur control: do removal metrics reward a map for being smooth?

    python benchmarks/blur_control.py [--images 100] [--sigmas 2,4] [--out runs/blur-control]

A removal metric could reward a map for being smooth rather than for being right: removing a
compact blob of pixels disturbs an image differently from removing the same number of scattered
pixels, and ROAD's linear imputation fills a blob from its border. Our CAMs are 4x4 grids upsampled to 32x32, smooth by
construction, and the gradient methods are pixel-level and rough, so the comparison between
the two families may be a comparison of smoothness. The test: score each map as it is and
blurred (a Gaussian of ``--sigmas`` pixels, ``s9lib.evaluate.removal.blur``), with deletion
AUC, insertion AUC and ROAD (MoRF and LeRF, mean p over 10-90 % removed), and compare each
blurred map with its own unblurred version, image by image (paired bootstrap interval). Where
blurring improves a score for maps that carry no information (``random``: noise on the 4x4
grid upsampled like a CAM; ``noise``: noise per pixel), that metric rewards smoothness itself.

Maps: every CAM at layer4 (GradCAM, GradCAM++, LayerCAM, EigenCAM; XGradCAM and HiResCAM are
GradCAM there, exactly, behind a global-average-pool head: chapter 9 and ``tests/test_cam.py``),
saliency, Integrated Gradients (16 steps), and the two content-free ones; explaining the
shipped model's prediction on the first ``--images`` images of the class-balanced test subset
(seed 0). Writes ``results.json``: every per-image score,
the paired intervals, command, device and timings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import s9lib
from s9lib.data import load_cifar10
from s9lib.data.inputs import preprocess
from s9lib.evaluate.faithfulness import random_maps
from s9lib.evaluate.removal import auc, blur, deletion_curves, insertion_curves, road_curves
from s9lib.evaluate.sanity import predicted_classes
from s9lib.evaluate.stats import paired_difference
from s9lib.explain.methods import explain_map

#: the CAMs that differ at layer4 (XGradCAM and HiResCAM equal GradCAM there)
CAMS = ("gradcam", "gradcam++", "layercam", "eigencam")
#: metric -> True when lower is better
METRICS = {"deletion_auc": True, "insertion_auc": False, "road_morf": True, "road_lerf": False}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--sigmas", default="2,4", help="blur widths, pixels")
    parser.add_argument("--out", default="runs/blur-control")
    return parser.parse_args()


def base_maps(model, x: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    maps = {m: explain_map(model, x, m, targets, "layer4") for m in CAMS}
    maps["saliency"] = explain_map(model, x, "saliency", targets)
    maps["integrated_gradients"] = explain_map(model, x, "integrated_gradients", targets,
                                               steps=16)
    maps["random"] = random_maps(len(x), (4, 4), (32, 32), g)
    maps["noise"] = torch.rand(len(x), 32, 32, generator=g)
    return {k: v.detach().cpu() for k, v in maps.items()}


def scores(model, images, maps, targets) -> dict[str, np.ndarray]:
    common = dict(targets=targets, seed=0)
    return {"deletion_auc": auc(deletion_curves(model, images, maps, **common)).numpy(),
            "insertion_auc": auc(insertion_curves(model, images, maps, **common)).numpy(),
            "road_morf": road_curves(model, images, maps, **common).mean(1).numpy(),
            "road_lerf": road_curves(model, images, maps, most_relevant_first=False,
                                     **common).mean(1).numpy()}


def main() -> None:
    args = parse_args()
    started, wall = datetime.datetime.now(datetime.timezone.utc), time.time()
    sigmas = [float(s) for s in args.sigmas.split(",")]
    model = s9lib.pretrained().eval()
    per_class = -(-args.images // 10)  # enough per class for --images, class-interleaved
    test = load_cifar10().test.subset(per_class, seed=0)
    images = test.images[:args.images]
    x = preprocess(images, model)
    targets = predicted_classes(model, x)
    per_image, summary = {}, {}
    for method, m in base_maps(model, x, targets).items():
        for sigma in [0.0, *sigmas]:
            blurred = m if sigma == 0 else blur(m[:, None], sigma)[:, 0]
            per_image[f"{method}@{sigma:g}"] = scores(model, images, blurred, targets)
        for sigma in sigmas:
            for metric, lower in METRICS.items():
                d = paired_difference(per_image[f"{method}@{sigma:g}"][metric],
                                      per_image[f"{method}@0"][metric],
                                      (f"{method} blurred {sigma:g}px", method))
                better = (d.high < 0) if lower else (d.low > 0)
                summary[f"{method}@{sigma:g}/{metric}"] = d.to_dict() | {"improves": better}
                print(f"{metric:<14} {d.describe()}{'  (blur improves it)' if better else ''}",
                      flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({
        "command": shlex.join(["python", *sys.argv]), "started": started.isoformat(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "images": len(images), "sigmas": sigmas,
        "paired": summary,
        "per_image": {k: {m: v.tolist() for m, v in s.items()} for k, s in per_image.items()},
        "wall_seconds": round(time.time() - wall),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime)}, indent=1) + "\n")
    print(f"wall {round(time.time() - wall)} s, CPU {round(usage.ru_utime + usage.ru_stime)} s")


if __name__ == "__main__":
    main()
