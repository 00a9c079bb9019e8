"""How long loading CIFAR-10 takes: cold (decode every JPEG of the archive) and cached (read
the decoded arrays back). Prints one line per figure; copy them into BENCHMARKS.md.

    python benchmarks/data_load.py                         # S9LIB_DATA, else ../shared/data
    python benchmarks/data_load.py --data path/to/cifar10-jpeg.tar.gz --repeats 5

Why: every chapter and test starts by loading the data, so the cached load is the figure a
reader pays again and again; the cold load is paid once per machine (or per CI run).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from s9lib.data import load_cifar10

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"


def timed_load(source: str) -> float:
    start = time.perf_counter()
    data = load_cifar10(source, fast=False)
    seconds = time.perf_counter() - start
    assert len(data.train) == 50_000 and len(data.test) == 10_000
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("S9LIB_DATA") or str(DEFAULT_ARCHIVE),
                   help="archive or image folder in train|test/<class>/* layout")
    p.add_argument("--repeats", type=int, default=3, help="cached loads to time (median)")
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        p.error(f"no data at {args.data}; pass --data or set S9LIB_DATA")

    with tempfile.TemporaryDirectory() as cache:
        os.environ["S9LIB_CACHE"] = cache  # an empty cache: the first load decodes
        cold = timed_load(args.data)
        cached = statistics.median(timed_load(args.data) for _ in range(args.repeats))
    print(f"data: {args.data}  ({platform.machine()}, {os.cpu_count()} CPUs)")
    print(f"{'cold load (decode 60,000 JPEGs, write cache)':<46}: {cold:8.2f} s")
    print(f"{f'cached load (median of {args.repeats})':<46}: {cached:8.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
