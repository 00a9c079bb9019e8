"""Accuracy of a checkpoint evaluated in float32 and under bf16 autocast, with and without
flip test-time augmentation, on the 10,000 test images and the 1,017 exact-pixel ones.

    python benchmarks/eval_precision.py ../shared/reference-runs/fast-cpu-bf16-14ep/checkpoint.pt \
        --exact ../shared/data/cifar10_test_exact_first1017.npz

Why: training runs in bf16 where the hardware has it (``s9lib.runtime.amp_dtype``), and so
does evaluation by default; this checks that the lower precision does not move accuracy
(the project's bar: within 0.1 point). Prints one line per setting, with its seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from s9lib.checkpoints import load
from s9lib.data import load_cifar10
from s9lib.inference import predict_logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a run's checkpoint.pt or an s9lib weights file")
    p.add_argument("--data", default=None, help="CIFAR-10 source [default: $S9LIB_DATA]")
    p.add_argument("--exact", default=None,
                   help="also an npz of exact-pixel test images (images, labels)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()

    cpu = torch.device("cpu")
    model = load(args.checkpoint, device=cpu)
    data = load_cifar10(args.data, fast=False)
    sets = {"test": (data.test.images, data.test.labels)}
    if args.exact:
        npz = np.load(args.exact)
        sets["exact"] = (npz["images"], npz["labels"])
    figures = {}
    for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        for tta in (False, True):
            start = time.perf_counter()
            row = {}
            for split, (images, labels) in sets.items():
                logits = predict_logits(model, images, device=cpu,
                                 tta_flip=tta, dtype=dtype)
                row[f"{split}_acc"] = round(float((logits.argmax(1) == labels).mean()), 4)
            row["seconds"] = round(time.perf_counter() - start, 1)
            figures[f"{name}, tta_flip={tta}"] = row
            print(f"{name:<8} tta_flip={tta!s:<5} " + "  ".join(
                f"{k} {v:.2%}" if k.endswith("acc") else f"{k} {v}" for k, v in row.items()),
                flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
