"""Adebayo et al.'s data-randomisation test: a ResNet18 trained on permuted labels, and every
method's maps on it against the shipped model's.

    python benchmarks/data_randomization.py train --out DIR [--per-class 100] [--epochs 40]
    python benchmarks/data_randomization.py evaluate --model DIR/weights.pt [--images 100]
        [--out runs/data-randomization]

``train``: a fresh ResNet18 (seed 0) trained on ``--per-class`` training images of each class
(``data.train.subset``, seed 0) whose labels are permuted among them (seed 0: the class
balance is kept, the link between image and label is gone), without augmentation (it would
make the random labels harder to memorise, and memorising them is the point), Adam at a constant
1e-3, batch 64, until ``--epochs``. The history says how far it fitted its labels. Writes
``DIR/history.json``, ``DIR/checkpoint.pt`` and ``DIR/weights.pt``.

``evaluate``: on the first ``--images`` images of the class-balanced test subset, explaining the
shipped model's prediction for each image, every method's maps on the shipped model and on the
permuted-label model (``s9lib.evaluate.sanity.data_randomization``): Spearman and SSIM per image,
the floor (maps of two different images of the shipped model). Writes ``results.json``
(summary and per-image values, command, device, timings) and, with ``--examples N``,
``examples.npz`` (both models' maps of the first N images, for a figure; the book draws none,
and the repository's working tree must stay small enough for the GPU run to carry).
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
from s9lib.data.cifar import Cifar10, Split
from s9lib.data.inputs import preprocess
from s9lib.evaluate.sanity import data_randomization, predicted_classes
from s9lib.explain.methods import ALL_METHODS, explain_map
from s9lib.models import ResNet18
from s9lib.runtime import seed_everything
from s9lib.training.loop import fit
from s9lib.training.recipes import RECIPES

METHODS = tuple(m for m in ALL_METHODS if m != "gradcam++_course")
OPTIONS = {"smoothgrad": {"samples": 16}, "integrated_gradients": {"steps": 16}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--per-class", type=int, default=100)
    t.add_argument("--epochs", type=int, default=40)
    e = sub.add_parser("evaluate")
    e.add_argument("--model", required=True, help="the permuted-label model's weights")
    e.add_argument("--images", type=int, default=100)
    e.add_argument("--examples", type=int, default=0)
    e.add_argument("--out", default="runs/data-randomization")
    return parser.parse_args()


def permuted_labels(data: Cifar10, per_class: int, seed: int = 0) -> Cifar10:
    """``per_class`` training images of each class with their labels shuffled among them."""
    train = data.train.subset(per_class, seed=seed)
    labels = np.random.default_rng(seed).permutation(train.labels)
    test = data.test.subset(10, seed=seed)  # evaluated each epoch: chance is the expectation
    return Cifar10(Split(train.images, labels), test, data.classes, data.source, data.is_fast)


def train(args) -> None:
    data = permuted_labels(load_cifar10(), args.per_class)
    kept = float(np.mean(data.train.labels == load_cifar10().train.subset(args.per_class).labels))
    seed_everything(0)
    model = ResNet18(num_classes=10)
    recipe = dataclasses.replace(
        RECIPES["cpu"], name="permuted-labels", epochs=args.epochs, batch_size=64,
        optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", label_smoothing=0.0,
        device_augment=(), tta_flip=False)
    started = time.time()
    fit(model, data, recipe, out=args.out, info={
        "permuted": {"per_class": args.per_class, "seed": 0, "labels_unchanged": kept},
        "command": shlex.join(["python", *sys.argv])})
    export_weights(Path(args.out) / "checkpoint.pt", Path(args.out) / "weights.pt")
    print(f"trained in {time.time() - started:.0f} s; {kept:.1%} of labels unchanged by the "
          "permutation")


def evaluate(args) -> None:
    started, wall = datetime.datetime.now(datetime.timezone.utc), time.time()
    data = load_cifar10()
    test = data.test.subset(10, seed=0)
    images, labels = test.images[:args.images], test.labels[:args.images]
    shipped, permuted = s9lib.pretrained().eval(), load(args.model).eval()
    x = preprocess(images, shipped)
    targets = predicted_classes(shipped, x)
    report = data_randomization(shipped, permuted, x, "layer4", METHODS, targets, seed=0,
                                options=OPTIONS)
    examples = {}
    for name, model in (("shipped", shipped), ("permuted", permuted)) if args.examples else ():
        for m in METHODS:
            opts = dict(OPTIONS.get(m, {}))
            if m in ("smoothgrad", "noise"):
                opts["generator"] = torch.Generator().manual_seed(0)
            maps = explain_map(model, x[:args.examples], m,
                               targets[:args.examples], "layer4", **opts)
            examples[f"{name}/{m}"] = maps.detach().numpy().astype(np.float16)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.examples:
        np.savez_compressed(out / "examples.npz", images=images[:args.examples],
                            targets=targets[:args.examples].numpy(), **examples)
    summary = {"command": shlex.join(["python", *sys.argv]), "started": started.isoformat(),
               "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "images": int(len(images)),
               "shipped_accuracy": float(np.mean(targets.numpy() == labels)),
               "permuted_agrees_with_shipped": float(np.mean(
                   predicted_classes(permuted, x).numpy() == targets.numpy())),
               "options": OPTIONS, "report": report.to_dict(),
               "wall_seconds": round(time.time() - wall),
               "cpu_seconds": round(usage.ru_utime + usage.ru_stime)}
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    for m in METHODS:
        print(f"{m:<22} spearman {report.spearman[m][0].mean:6.3f}  ssim "
              f"{report.ssim[m][0].mean:6.3f}  floor {report.floor[m]['spearman'].mean:6.3f}")
    print(f"wall {summary['wall_seconds']} s, CPU {summary['cpu_seconds']} s")


if __name__ == "__main__":
    arguments = parse_args()
    train(arguments) if arguments.command == "train" else evaluate(arguments)
