"""s9lib: CIFAR-10 augmentation, the CIFAR ResNet18, training, and GradCAM / GradCAM++.

The library behind the s9-book chapters. Modules, in data-flow order:
``data`` -> ``augment`` -> ``models`` -> ``train`` -> ``cam`` -> ``viz`` / ``widgets``.
"""

from .runtime import FAST, cache_dir, fast_mode, get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["FAST", "cache_dir", "fast_mode", "get_device", "seed_everything", "__version__"]


def __getattr__(name: str):
    # Lazy: `s9lib.pretrained()` without importing torch-heavy modules at `import s9lib`.
    if name == "pretrained":
        from .pretrained import pretrained

        return pretrained
    raise AttributeError(f"module 's9lib' has no attribute {name!r}")
