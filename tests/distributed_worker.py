"""Run by ``torchrun`` in tests/test_distributed.py (not collected by pytest itself).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_worker.py MODE OUT

MODE ``step``: one optimisation step of the fast recipe (SyncBatchNorm, float32) on a small
real subset, the checkpoint written to OUT by rank 0. MODE ``grad64``: in float64, the
gradients DistributedDataParallel averages over two half batches (BatchNorm over the global
batch) against one process's gradients on the whole batch; rank 0 writes the largest relative
difference to OUT. MODE ``fail``: rank 1 raises in its first training step, the way a real
fault (out of memory, a bad batch) would surface.
"""

from __future__ import annotations

import sys

import s9lib
from s9lib.training import loop as train
from s9lib.models import ResNet18

from helpers import cifar, step_recipe  # tests/ is on PYTHONPATH (test_distributed.py)


def grad64(out: str) -> None:
    import copy
    import json

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from s9lib.training import distributed
    from s9lib.data.inputs import preprocess

    job = distributed.from_environment("cpu")
    data = cifar(8, 2).train
    x, y = preprocess(data.images).double(), torch.from_numpy(data.labels)
    s9lib.seed_everything(0)
    model = ResNet18().double()
    reference = copy.deepcopy(model)
    distributed.sync_batchnorm(model, torch.device("cpu"))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    mine = x.tensor_split(job.world_size)[job.rank], y.tensor_split(job.world_size)[job.rank]
    F.cross_entropy(ddp(mine[0]), mine[1]).backward()
    if job.is_main:
        F.cross_entropy(reference(x), y).backward()
        worst = max(float((a.grad - b.grad).abs().max() / b.grad.abs().max())
                    for a, b in zip(model.parameters(), reference.parameters()))
        with open(out, "w") as f:
            json.dump({"max_relative_difference": worst}, f)
    dist.destroy_process_group()


def main(mode: str, out: str) -> None:
    if mode == "grad64":
        return grad64(out)
    if mode == "fail":
        import os

        if os.environ["RANK"] == "1":
            def broken(*args, **kwargs):
                raise RuntimeError("rank 1 failed on purpose")
            train.train_step = broken
    s9lib.seed_everything(0)
    train.fit(ResNet18(), cifar(8, 2), step_recipe(), epochs=1, out=out, progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:3])
