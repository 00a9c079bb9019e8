"""How far the book's JPEG copy of CIFAR-10 is from the original pixels, and what that does to
the shipped model's accuracy: the figures the intro and every chapter's note quote.

    python benchmarks/jpeg_vs_exact.py ../shared/data/cifar10-jpeg.tar.gz \
        ../shared/data/cifar10_test_exact_first1017.npz

Why a matching step: the JPEG archive stores the test images by class folder, so its order is
not the original test order. Each original image is paired with the JPEG of its class that is
closest in mean absolute pixel difference (a JPEG re-encoding moves pixels by a few grey
levels; two different CIFAR images differ by tens), and the script checks the pairing is one
to one. Accuracies are float32, without and with flip test-time augmentation.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import s9lib
from s9lib.data import load_cifar10
from s9lib.inference import predict_logits


def match(jpeg_images, jpeg_labels, exact_images, exact_labels) -> tuple[np.ndarray, np.ndarray]:
    """Index of the closest same-class JPEG for each exact image, and that distance."""
    flat = jpeg_images.reshape(len(jpeg_images), -1).astype(np.float32)
    exact = exact_images.reshape(len(exact_images), -1).astype(np.float32)
    index, distance = np.empty(len(exact), int), np.empty(len(exact))
    for c in np.unique(exact_labels):
        candidates = np.where(jpeg_labels == c)[0]
        for e in np.where(exact_labels == c)[0]:
            d = np.abs(flat[candidates] - exact[e]).mean(1)
            index[e], distance[e] = candidates[d.argmin()], d.min()
    if len(set(index)) != len(index):
        raise SystemExit("error: the pairing is not one to one; the copies do not match")
    return index, distance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jpeg", help="the JPEG CIFAR-10 archive")
    p.add_argument("exact", help="npz of exact-pixel test images (images, labels)")
    args = p.parse_args()
    npz = np.load(args.exact)
    exact, labels = npz["images"], npz["labels"]
    test = load_cifar10(args.jpeg, fast=False).test
    index, distance = match(test.images, test.labels, exact, labels)
    jpeg = test.images[index]
    diff = np.abs(jpeg.astype(int) - exact.astype(int))
    print(f"{len(exact)} images paired one to one (pair distance {distance.mean():.2f} mean, "
          f"{distance.max():.2f} max)")
    print(f"|pixel difference|: mean {diff.mean():.2f}, median {np.median(diff):.0f}, "
          f"99th percentile {np.percentile(diff, 99):.0f}, max {diff.max()}")
    model, cpu = s9lib.pretrained(), torch.device("cpu")
    for tta in (False, True):
        a = predict_logits(model, jpeg, device=cpu, tta_flip=tta, dtype=None).argmax(1)
        b = predict_logits(model, exact, device=cpu, tta_flip=tta, dtype=None).argmax(1)
        print(f"tta_flip={tta!s:<5} JPEG {(a == labels).mean():.2%}  original "
              f"{(b == labels).mean():.2%}  predictions differ on {(a != b).sum()}  "
              f"(only JPEG right {((a == labels) & (b != labels)).sum()}, "
              f"only original right {((b == labels) & (a != labels)).sum()})")


if __name__ == "__main__":
    main()
