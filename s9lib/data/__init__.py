"""What the model reads: CIFAR-10 as uint8 arrays, how pixels become its input, and photos.

Modules: ``cifar`` (the data set from any source: archive, folder, torchvision, with its
cache and FAST subset), ``inputs`` (uint8 pixels -> normalised tensors: the one place
normalisation is written), ``augment`` (albumentations presets, loaded on first use: it
imports albumentations and OpenCV) and ``photos`` (any image file -> a 32x32 CIFAR input).

The names of ``cifar`` are re-exported here, so ``from s9lib.data import load_cifar10``
reads as what it is.
"""

from .cifar import (CLASSES, FULL_COUNTS, Cifar10, CifarDataset, Split, load_cifar10,
                    resolve_source)

__all__ = ["CLASSES", "FULL_COUNTS", "Cifar10", "CifarDataset", "Split", "load_cifar10",
           "resolve_source"]
