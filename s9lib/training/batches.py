"""Two ways to turn a uint8 ``Split`` into training batches on the device.

Why two: the albumentations ``DataLoader`` path is what the book teaches (any transform, one
image at a time, in worker processes), but on a fast GPU it becomes the bottleneck. CIFAR-10
is 180 MB as uint8, so the ``DeviceBatches`` path keeps all of it on the device and does the
augmentations that matter most for CIFAR (random crop from a 4-pixel reflect pad, horizontal
flip, cutout) on whole batches there. A recipe picks the path by name.

Both are repeatable: each epoch's shuffle and augmentations come from ``(seed, epoch)``, so a
run resumed from a checkpoint sees exactly the batches the uninterrupted run would have.

Both shard for distributed training (``rank``, ``world_size``): every rank draws the same
epoch order and takes its own slice (``tensor_split``) of each *global* batch of
``batch_size`` images, so N processes step through the same global batches one process would,
and every rank makes the same number of steps (DistributedDataParallel needs that).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from ..data.cifar import CifarDataset, Split
from ..data.inputs import CIFAR10_MEAN, CIFAR10_STD, standardize

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

    def __init__(self, dataset: CifarDataset, seed: int, rank: int = 0) -> None:
        self.dataset, self.seed, self.rank, self._epoch = dataset, seed, rank, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        epoch, i = divmod(key, len(self.dataset))
        if epoch != self._epoch:
            info = torch.utils.data.get_worker_info()
            stream = 2 + self.rank * 1024 + (info.id if info else 0)  # one per rank and worker
            self.dataset.reseed(epoch_seed(self.seed, epoch, stream))
            self._epoch = epoch
        return self.dataset[i]


class _RankBatchSampler(torch.utils.data.Sampler[list[int]]):
    """The epoch order cut into global batches; yields this rank's slice of each."""

    def __init__(self, order: _EpochSampler, batch_size: int, drop_last: bool, rank: int,
                 world_size: int) -> None:
        self.order, self.batch_size, self.drop_last = order, batch_size, drop_last
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        keys = torch.tensor(list(self.order))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = keys[start:start + self.batch_size]
            yield batch.tensor_split(self.world_size)[self.rank].tolist()


class LoaderBatches:
    """albumentations transform per image, in a ``DataLoader`` (workers, pinned memory)."""

    def __init__(self, split: Split, transform, batch_size: int, device: torch.device, *,
                 shuffle: bool, seed: int = 0, num_workers: int | None = None,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        self.device = device
        workers = default_num_workers(device) if num_workers is None else num_workers
        self.sampler = _EpochSampler(len(split), seed, shuffle)
        batches = _RankBatchSampler(self.sampler, batch_size, drop_last, rank, world_size)
        self.loader = torch.utils.data.DataLoader(
            _EpochSeededDataset(CifarDataset(split, transform), seed, rank),
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )
        self.num_images = _local_images(len(split), batch_size, drop_last, rank, world_size)

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
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        unknown = set(augment) - {"crop", "flip", "cutout"}
        if unknown:
            raise ValueError(f"Unknown device augmentation(s) {sorted(unknown)}; "
                             "use crop, flip, cutout.")
        self.batch_size, self.device, self.shuffle, self.seed = batch_size, device, shuffle, seed
        self.augment, self.cutout, self.pad, self.drop_last = set(augment), cutout, pad, drop_last
        self.rank, self.world_size = rank, world_size
        images = split.images
        if "crop" in self.augment:  # pad once, on the host: reflect-101 like the CPU path
            images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
        self.labels = torch.from_numpy(split.labels).to(device)
        self.mean, self.std = mean, std
        self.epoch = 0
        self.num_images = _local_images(len(split), batch_size, drop_last, rank, world_size)

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
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            # the whole global batch is augmented on every rank (cheap next to the model),
            # so the random draws, and the images, are those of a single process
            x, y = self._augment(self.images[idx], g), self.labels[idx]
            if self.world_size > 1:
                x, y = x.tensor_split(self.world_size)[self.rank], y.tensor_split(self.world_size)[self.rank]
            yield x, y

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """uint8 (B, 3, H+2pad, W+2pad) -> the normalised, augmented float batch."""
        if "crop" in self.augment:
            x = self._crop(x, g)
        x = standardize(x.float() / 255.0, self.mean, self.std)
        if "flip" in self.augment:
            x = self._flip(x, g)
        if "cutout" in self.augment and self.cutout > 0:
            x = self._cutout(x, g)
        return x.contiguous(memory_format=torch.channels_last)

    def _crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A random ``size x size`` window of each padded image (one gather, no loop)."""
        b, dev = x.shape[0], x.device
        size = x.shape[-1] - 2 * self.pad
        dy, dx = torch.randint(0, 2 * self.pad + 1, (2, b), generator=g, device=dev)
        ar = torch.arange(size, device=dev)
        rows = (dy[:, None] + ar)[:, None, :, None]  # (B,1,H,1)
        cols = (dx[:, None] + ar)[:, None, None, :]  # (B,1,1,W)
        return x[torch.arange(b, device=dev)[:, None, None, None],
                 torch.arange(3, device=dev)[None, :, None, None], rows, cols]

    @staticmethod
    def _flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Each image mirrored left-right with probability 1/2."""
        flip = torch.rand(x.shape[0], generator=g, device=x.device) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(3), x)

    def _cutout(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """With probability 1/2, a ``cutout``-sided square (clipped at the border) set to 0,
        which after normalisation is the mean pixel."""
        b, (h, w), dev = x.shape[0], x.shape[-2:], x.device
        cy = torch.randint(0, h, (b,), generator=g, device=dev)
        cx = torch.randint(0, w, (b,), generator=g, device=dev)
        top = (cy - self.cutout // 2)[:, None, None]
        left = (cx - self.cutout // 2)[:, None, None]
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        hole = (ys >= top) & (ys < top + self.cutout) & (xs >= left) & (xs < left + self.cutout)
        apply = torch.rand(b, generator=g, device=dev) < 0.5
        return x.masked_fill((hole & apply[:, None, None])[:, None], 0.0)


def _local_images(n: int, batch_size: int, drop_last: bool, rank: int, world_size: int) -> int:
    """Images one rank sees per epoch: its ``tensor_split`` share of every global batch."""
    steps = n // batch_size if drop_last else -(-n // batch_size)
    sizes = [min(batch_size, n - s * batch_size) for s in range(steps)]
    return sum(size // world_size + (rank < size % world_size) for size in sizes)
