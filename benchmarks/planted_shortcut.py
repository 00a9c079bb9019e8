"""A planted shortcut (``s9lib.evaluate.shortcut``): train the model that uses it, then ask
every explanation method where the evidence is.

    python benchmarks/planted_shortcut.py train --out DIR [--epochs 2] [--lr 0.02]
    python benchmarks/planted_shortcut.py evaluate --model DIR/weights.pt
        [--per-class 50] [--out runs/planted-shortcut]

``train``: the shipped model (``s9lib.pretrained()``) fine-tuned with the ``cpu`` recipe's
one-cycle (``--epochs``, peak ``--lr``) on the CIFAR-10 training set in which ``--fraction`` of
the images of the nine other classes carry the 4x4 checkerboard patch at a random position and
are labelled ``cat`` (``--source others``, the default; ``--source own``: the patch on
``--fraction`` of the cat images, labels unchanged); the clean test set is evaluated every
epoch. Writes ``DIR/history.json``, ``DIR/checkpoint.pt`` and ``DIR/weights.pt`` (fp16).

``evaluate``: on ``--per-class`` test images of each of the nine other classes, stamped with the
patch at a random position (seed 0), for the patched model and for the shipped model (the
control, trained without the patch): how often each predicts ``cat`` with and without the patch,
and for every method (CAMs at layer2, layer3, layer4; gradient methods at pixel level; the
edge and noise controls; a centre blob), explaining ``cat``: the pointing-game hit (maximum on
the patch enlarged by 2 pixels) and the share of the map's mass inside the patch, per image.
Writes ``per_image.npz`` (every score of every image), ``examples.npz`` (maps of the first
images, for the chapter's figures) and ``results.json`` (summary, command, device, timings).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from s9lib.checkpoints import export_weights, load
from s9lib.data import load_cifar10
from s9lib.data.cifar import CLASSES
from s9lib.data.inputs import preprocess
from s9lib.evaluate.removal import center_maps
from s9lib.evaluate.shortcut import (SOURCES, chance_hit_rate, mass_in_patch, plant,
                                     pointing_hits, stamp)
from s9lib.explain.cam import METHODS as CAM_METHODS
from s9lib.explain.gradients import GRADIENT_METHODS
from s9lib.explain.methods import explain_map
from s9lib.training.loop import fit
from s9lib.training.recipes import RECIPES

TARGET = CLASSES.index("cat")
LAYERS = ("layer2", "layer3", "layer4")
TOLERANCE = 2
#: SmoothGrad and Integrated Gradients settings (the gradient-method defaults of the book).
GRADIENT_OPTIONS = {"smoothgrad": {"samples": 16}, "integrated_gradients": {"steps": 16}}
#: The maps kept for chapter 10's slider (examples.npz). Only these: every map of every method
#: would triple the file, and the working tree must stay small enough for the GPU run to carry.
EXAMPLE_MAPS = ("gradcam@layer2", "gradcam@layer3", "gradcam@layer4", "gradcam++@layer3",
                "saliency@pixels", "integrated_gradients@pixels", "guided_backprop@pixels",
                "edge@pixels")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--lr", type=float, default=0.02)
    t.add_argument("--fraction", type=float, default=0.05)
    t.add_argument("--source", choices=SOURCES, default="others")
    e = sub.add_parser("evaluate")
    e.add_argument("--model", required=True, help="the patched model's weights or checkpoint")
    e.add_argument("--per-class", type=int, default=50)
    e.add_argument("--examples", type=int, default=6)
    e.add_argument("--out", default="runs/planted-shortcut")
    return parser.parse_args()


def train(args) -> None:
    data = load_cifar10()
    planted = plant(data, TARGET, args.fraction, seed=0, source=args.source)
    model = s9lib.pretrained()
    recipe = dataclasses.replace(RECIPES["cpu"], name="planted-finetune", epochs=args.epochs,
                                 lr=args.lr)
    started = time.time()
    fit(model, planted.data, recipe, out=args.out,
        info={"init": "s9lib.pretrained()", "planted": planted.describe(),
              "command": shlex.join(["python", *sys.argv])})
    export_weights(Path(args.out) / "checkpoint.pt", Path(args.out) / "weights.pt",
                   planted=planted.describe())
    print(f"trained in {time.time() - started:.0f} s")


def predictions(model, images_uint8: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(preprocess(images_uint8[i:i + 256], model)).argmax(1).numpy()
                               for i in range(0, len(images_uint8), 256)])


def method_keys() -> list[tuple[str, tuple[str, ...]]]:
    """(method, layers) scored: every CAM at every layer (one forward and backward serves
    them all), then the pixel-level methods, Guided GradCAM at each layer, the controls."""
    keys = [(m, LAYERS) for m in CAM_METHODS if m != "gradcam++_course"]
    keys += [(m, ("pixels",)) for m in GRADIENT_METHODS if m != "guided_gradcam"]
    keys += [("guided_gradcam", (layer,)) for layer in LAYERS]
    return keys + [(m, ("pixels",)) for m in ("edge", "noise", "centre")]


def maps_for(model, x: torch.Tensor, method: str, layers: tuple[str, ...], seed: int
             ) -> dict[str, torch.Tensor]:
    """{layer: (B, H, W) maps} of ``method``, explaining the planted class."""
    if method == "centre":
        return {"pixels": center_maps(len(x), tuple(x.shape[-2:]))}
    if method in CAM_METHODS:
        with CAM_METHODS[method](model, list(layers)) as cam:
            return dict(cam(x, TARGET).maps)
    options = dict(GRADIENT_OPTIONS.get(method, {}))
    if method in ("smoothgrad", "noise"):
        options["generator"] = torch.Generator().manual_seed(seed)
    layer = layers[0] if layers[0] != "pixels" else "layer4"
    return {layers[0]: explain_map(model, x, method, targets=TARGET, layer=layer, **options)}


def score_model(model, stamped: np.ndarray, boxes: np.ndarray, n_examples: int):
    """Per-image pointing hit and mass in the patch of every (method, layer) on ``model``."""
    scores, examples, seconds = {}, {}, {}
    for method, layers in method_keys():
        start, parts = time.process_time(), {layer: ([], []) for layer in layers}
        for i in range(0, len(stamped), 100):
            x = preprocess(stamped[i:i + 100], model)
            for layer, maps in maps_for(model, x, method, layers, seed=i).items():
                maps = maps.detach().cpu()
                parts[layer][0].append(pointing_hits(maps, boxes[i:i + 100], TOLERANCE))
                parts[layer][1].append(mass_in_patch(maps, boxes[i:i + 100]))
                if i == 0 and f"{method}@{layer}" in EXAMPLE_MAPS:
                    examples[f"{method}@{layer}"] = maps[:n_examples].numpy().astype(np.float16)
        spent = (time.process_time() - start) / len(layers)
        for layer, (hits, mass) in parts.items():
            key = f"{method}@{layer}"
            scores[key] = {"hit": torch.cat(hits).numpy(), "mass": torch.cat(mass).numpy()}
            seconds[key] = round(spent, 1)
            print(f"  {key:<32} hit {np.nanmean(scores[key]['hit']):6.3f}  mass "
                  f"{np.nanmean(scores[key]['mass']):6.3f}  ({spent:.0f} CPU s)", flush=True)
    return scores, examples, seconds


def evaluate(args) -> None:
    started, wall = datetime.datetime.now(datetime.timezone.utc), time.time()
    data = load_cifar10()
    test = data.test.subset(args.per_class, seed=0)
    keep = test.labels != TARGET
    clean, labels = test.images[keep], test.labels[keep]
    stamped, boxes = stamp(clean, seed=0)
    models = {"patched": load(args.model).eval(), "control": s9lib.pretrained().eval()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"command": shlex.join(["python", *sys.argv]), "started": started.isoformat(),
               "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "images": int(len(clean)),
               "target": CLASSES[TARGET], "tolerance": TOLERANCE,
               "chance_hit_rate": chance_hit_rate((32, 32), TOLERANCE), "models": {}}
    arrays = {"labels": labels, "boxes": boxes, "clean": clean[:args.examples],
              "stamped": stamped[:args.examples]}
    examples = {}
    for name, model in models.items():
        pred_clean, pred_stamped = predictions(model, clean), predictions(model, stamped)
        print(f"{name}: accuracy on these clean images {np.mean(pred_clean == labels):.3f}, "
              f"'cat' without patch {np.mean(pred_clean == TARGET):.3f}, with patch "
              f"{np.mean(pred_stamped == TARGET):.3f}", flush=True)
        scores, shown, seconds = score_model(model, stamped, boxes, args.examples)
        arrays |= {f"{name}/pred_clean": pred_clean, f"{name}/pred_stamped": pred_stamped}
        arrays |= {f"{name}/{k}/{s}": v[s] for k, v in scores.items() for s in ("hit", "mass")}
        examples |= {f"{name}/{k}": v for k, v in shown.items()}
        summary["models"][name] = {
            "cat_rate_clean": float(np.mean(pred_clean == TARGET)),
            "cat_rate_stamped": float(np.mean(pred_stamped == TARGET)),
            "accuracy_clean": float(np.mean(pred_clean == labels)),
            "cpu_seconds": seconds,
            "scores": {k: {s: float(np.nanmean(v[s])) for s in ("hit", "mass")}
                       | {"nan": int(np.isnan(v["hit"]).sum())} for k, v in scores.items()}}
    np.savez_compressed(out / "per_image.npz", **arrays)
    np.savez_compressed(out / "examples.npz", **examples, boxes=boxes[:args.examples],
                        stamped=stamped[:args.examples], labels=labels[:args.examples])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary |= {"wall_seconds": round(time.time() - wall), "cpu_seconds":
                round(usage.ru_utime + usage.ru_stime), "peak_rss_mb": usage.ru_maxrss // 1024}
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wall {summary['wall_seconds']} s, CPU {summary['cpu_seconds']} s")


if __name__ == "__main__":
    arguments = parse_args()
    train(arguments) if arguments.command == "train" else evaluate(arguments)
