"""s9lib: CIFAR-10 augmentation, the CIFAR ResNet18, training, and GradCAM / GradCAM++.

The library behind the s9-book chapters. Its parts, in the one direction imports run
(``tests/test_layout.py`` checks it): ``runtime``/``files`` -> ``data`` (CIFAR-10, inputs,
augment, photos) -> ``models``/``inference`` -> ``checkpoints`` -> ``training`` -> ``explain``
(CAMs, gradient methods) -> ``evaluate`` -> ``show`` (figures, widgets, chapter runs) ->
``__main__``. ``import s9lib`` loads only torch: albumentations, OpenCV and torchvision load
with the modules that need them.
"""

from .runtime import FAST_SIZES, cache_dir, fast_mode, get_device, seed_everything

# Bound after the submodule import on purpose: `s9lib.pretrained` is the function (the
# submodule stays importable as `from s9lib.checkpoints import ...`).
from .checkpoints import pretrained  # noqa: E402

__version__ = "0.1.0"

__all__ = ["FAST_SIZES", "cache_dir", "fast_mode", "get_device", "pretrained", "seed_everything",
           "__version__"]
