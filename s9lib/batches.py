"""Two ways to turn a uint8 ``Split`` into training batches on the device.

Why two: the albumentations ``DataLoader`` path is what the book teaches (any transform, one
image at a time, in worker processes), but on a fast GPU it becomes the bottleneck. CIFAR-10
is 180 MB as uint8, so the ``DeviceBatches`` path keeps all of it on the device and does the
augmentations that matter most for CIFAR (random crop from a 4-pixel reflect pad, horizontal
flip, cutout) on whole batches there. A recipe picks the path by name.

Both are repeatable: each epoch's shuffle and augmentations come from ``(seed, epoch)``, so a
run resumed from a checkpoint sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from .augment import CIFAR10_MEAN, CIFAR10_STD
from .data import CifarDataset, Split

__all__ = ["epoch_seed", "LoaderBatches", "DeviceBatches", "default_num_workers"]


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed for ``(seed, epoch, stream)``, independent across all three."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(2, np.uint64)[0] >> 1)


def default_num_workers(device: torch.device) -> int:
    """Worker processes for the albumentations path.

    On CPU the model step (~16 ms an image) dwarfs augmentation (~0.1 ms), and workers would
    only steal cores from it: 0. On a GPU: up to 8, leaving a core for the main process.
    """
    if device.type == "cpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class _EpochSampler(torch.utils.data.Sampler[int]):
    """Yields ``epoch * N + i`` so workers can tell which epoch a sample belongs to."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 1))
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        return iter((order + self.epoch * self.n).tolist())


class _EpochSeededDataset(torch.utils.data.Dataset):
    """Reseeds the transform whenever a new epoch's first sample reaches this worker."""

    def __init__(self, dataset: CifarDataset, seed: int) -> None:
        self.dataset, self.seed, self._epoch = dataset, seed, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        epoch, i = divmod(key, len(self.dataset))
        if epoch != self._epoch:
            info = torch.utils.data.get_worker_info()
            self.dataset.reseed(epoch_seed(self.seed, epoch, 2 + (info.id if info else 0)))
            self._epoch = epoch
        return self.dataset[i]


class LoaderBatches:
    """albumentations transform per image, in a ``DataLoader`` (workers, pinned memory)."""

    def __init__(self, split: Split, transform, batch_size: int, device: torch.device, *,
                 shuffle: bool, seed: int = 0, num_workers: int | None = None,
                 drop_last: bool = False) -> None:
        self.device = device
        workers = default_num_workers(device) if num_workers is None else num_workers
        self.sampler = _EpochSampler(len(split), seed, shuffle)
        self.loader = torch.utils.data.DataLoader(
            _EpochSeededDataset(CifarDataset(split, transform), seed),
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            drop_last=drop_last,
        )
        self.num_images = len(split) - (len(split) % batch_size if drop_last else 0)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield (x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last),
                   y.to(self.device, non_blocking=True))


class DeviceBatches:
    """The whole split on the device; crop, flip and cutout per batch, on the device.

    ``augment`` is a subset of ``{"crop", "flip", "cutout"}``; an empty one gives plain
    normalised batches (use ``shuffle=False`` for evaluation).
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device, *, shuffle: bool,
                 seed: int = 0, augment: tuple[str, ...] = ("crop", "flip", "cutout"),
                 cutout: int = 12, pad: int = 4, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                 drop_last: bool = False) -> None:
        unknown = set(augment) - {"crop", "flip", "cutout"}
        if unknown:
            raise ValueError(f"Unknown device augmentation(s) {sorted(unknown)}; "
                             "use crop, flip, cutout.")
        self.batch_size, self.device, self.shuffle, self.seed = batch_size, device, shuffle, seed
        self.augment, self.cutout, self.pad, self.drop_last = set(augment), cutout, pad, drop_last
        images = split.images
        if "crop" in self.augment:  # pad once, on the host: reflect-101 like the CPU path
            images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
        self.labels = torch.from_numpy(split.labels).to(device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.epoch = 0
        n = len(split)
        self.num_images = n - (n % batch_size if drop_last else 0)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        g = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, self.epoch, 1))
        order = (torch.randperm(n, generator=g, device=self.device) if self.shuffle
                 else torch.arange(n, device=self.device))
        for start in range(0, self.num_images, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self._augment(self.images[idx], g), self.labels[idx]

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, dev = x.shape[0], x.device
        if "crop" in self.augment:
            size = x.shape[-1] - 2 * self.pad
            dy, dx = (torch.randint(0, 2 * self.pad + 1, (2, b), generator=g, device=dev))
            ar = torch.arange(size, device=dev)
            rows = (dy[:, None] + ar)[:, None, :, None]  # (B,1,H,1)
            cols = (dx[:, None] + ar)[:, None, None, :]  # (B,1,1,W)
            x = x[torch.arange(b, device=dev)[:, None, None, None],
                  torch.arange(3, device=dev)[None, :, None, None], rows, cols]
        x = (x.float() - self.mean) / self.std
        if "flip" in self.augment:
            flip = torch.rand(b, generator=g, device=dev) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if "cutout" in self.augment and self.cutout > 0:
            h, w = x.shape[-2:]
            cy = torch.randint(0, h, (b,), generator=g, device=dev)
            cx = torch.randint(0, w, (b,), generator=g, device=dev)
            top = (cy - self.cutout // 2)[:, None, None]
            left = (cx - self.cutout // 2)[:, None, None]
            ys = torch.arange(h, device=dev)[None, :, None]
            xs = torch.arange(w, device=dev)[None, None, :]
            hole = (ys >= top) & (ys < top + self.cutout) & (xs >= left) & (xs < left + self.cutout)
            apply = torch.rand(b, generator=g, device=dev) < 0.5
            x = x.masked_fill((hole & apply[:, None, None])[:, None], 0.0)  # 0 = the mean pixel
        return x.contiguous(memory_format=torch.channels_last)
