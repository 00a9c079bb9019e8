"""Process-wide switches, read in one place: FAST mode, seeding, the device, the cache dir.

Why one module: notebooks, tests, the CLI and the library must agree on what ``S9LIB_FAST=1``
means and which device runs the model. Reading environment variables by hand in several
places is how they drift apart.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["fast_mode", "FastSettings", "FAST_SIZES", "seed_everything", "get_device", "cache_dir",
           "AMP_SETTINGS", "amp_dtype", "autocast", "cpu_bf16_flags", "env_flag",
           "available_devices", "check_device"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def env_flag(name: str) -> bool:
    """The on/off switch in environment variable ``name``: 1/true/yes/on or 0/false/no/off
    (any case; unset or empty is off).

    Why refuse anything else: ``S9LIB_FAST=ture`` silently meaning "off" starts an hour-long
    full run that the user meant to be a one-minute smoke test.
    """
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={os.environ[name]!r} is not an on/off switch; set it to one of "
                     "1, true, yes, on or 0, false, no, off (or unset it).")


def fast_mode() -> bool:
    """True when ``S9LIB_FAST`` is set to 1/true/yes/on: tiny subsets, one short epoch."""
    return env_flag("S9LIB_FAST")


@dataclass(frozen=True)
class FastSettings:
    """How small FAST mode makes things. Stratified subsets keep every class present."""

    train_per_class: int = 50  # 500 training images
    test_per_class: int = 20  # 200 test images
    epochs: int = 1


#: The sizes FAST mode uses (read them when ``fast_mode()`` is true).
FAST_SIZES = FastSettings()


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to train and explain on: CUDA, else Apple MPS, else CPU.

    ``prefer`` (a name or a ``torch.device``; or the ``S9LIB_DEVICE`` environment variable)
    overrides the choice, e.g. ``"cpu"`` to keep a notebook off a busy GPU.
    """
    choice = prefer or os.environ.get("S9LIB_DEVICE")
    if choice:
        return check_device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The device names this machine can run on, best first: ``cuda[:i]``, ``mps``, ``cpu``."""
    names = []
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names + ["cpu"]


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a ``torch.device`` if this machine has it; else ``ValueError`` listing
    those it has (torch itself fails later, deep inside the first ``.to()``)."""
    if isinstance(name, torch.device):
        dev = name
    else:
        try:
            dev = torch.device(str(name).strip())
        except RuntimeError:
            raise ValueError(f"Unknown device {name!r}; available here: "
                             f"{', '.join(available_devices())}.") from None
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        ok = mps is not None and mps.is_available()
    else:
        ok = dev.type == "cpu"
    if not ok:
        raise ValueError(f"Device {str(name)!r} is not available on this machine; available "
                         f"here: {', '.join(available_devices())}.")
    return dev


#: What ``S9LIB_AMP`` / ``Recipe.amp`` accept: pick per device, float32, bf16 or fp16 autocast.
AMP_SETTINGS = ("auto", "off", "bf16", "fp16")


def cpu_bf16_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    """The CPU's native bf16 instruction sets, from Linux's ``/proc/cpuinfo``: ``amx_bf16``
    (Intel Sapphire Rapids and later), ``avx512_bf16`` (those, Cooper Lake, AMD Zen 4 and
    later). Empty where the CPU has neither or the file is missing (macOS, Windows)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return set()
    return {"amx_bf16", "avx512_bf16"} & set(flags)


def amp_dtype(device: torch.device | str, setting: str | None = None) -> torch.dtype | None:
    """The autocast dtype to train and evaluate with on ``device``; None means float32.

    ``setting`` (else ``$S9LIB_AMP``, else ``"auto"``) is one of ``AMP_SETTINGS``. ``"auto"``
    takes the fastest type that trains as well as float32, by device, as measured
    (BENCHMARKS.md):

    * CUDA: bf16 where the GPU computes it natively (compute capability 8.0 and up: A100,
      H100, RTX 30xx+); fp16 on older GPUs such as Colab's T4, whose tensor cores do fp16
      but only emulate bf16 (``fit`` then scales the loss with a ``GradScaler``).
    * CPU: bf16 where the CPU computes it natively (:func:`cpu_bf16_flags`). A ResNet18
      training step on 2 cores: 203 vs 64 img/s on a Xeon with AMX, 109 vs 55 img/s on an
      AMD EPYC with avx512_bf16. Without either, bf16 has no native instructions and
      float32 is kept.
    * MPS and anything else: float32.
    """
    setting = (setting or os.environ.get("S9LIB_AMP") or "auto").strip().lower()
    if setting not in AMP_SETTINGS:
        raise ValueError(f"Unknown autocast setting {setting!r} (S9LIB_AMP or Recipe.amp); "
                         f"use one of {', '.join(AMP_SETTINGS)}.")
    kind = torch.device(device).type
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    if kind == "cuda":
        native_bf16 = torch.cuda.get_device_capability(torch.device(device))[0] >= 8
        return torch.bfloat16 if native_bf16 else torch.float16
    if kind == "cpu" and cpu_bf16_flags():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; plain float32 when ``dtype`` is None.

    Pick ``dtype`` with :func:`amp_dtype` (bf16 on recent GPUs and on CPUs with bf16
    instructions).
    """
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def cache_dir() -> Path:
    """Where decoded data and downloads live: ``S9LIB_CACHE`` or the user cache dir."""
    env = os.environ.get("S9LIB_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("s9lib"))


#: Environment variables that hold paths (data source, cache).
PATH_VARIABLES = ("S9LIB_DATA", "S9LIB_CACHE")


def absolute_path_variables() -> dict[str, str]:
    """``PATH_VARIABLES`` that are set, made absolute where they name an existing relative path.

    Notebook kernels (nbval, ``python -m s9lib.show.book``) run in ``book/``, so a relative
    ``S9LIB_DATA=../shared/...`` would change meaning there; pass them these values instead.
    """
    out = {}
    for key in PATH_VARIABLES:
        value = os.environ.get(key)
        if value:
            relative = not os.path.isabs(value) and os.path.exists(value)
            out[key] = os.path.abspath(value) if relative else value
    return out
