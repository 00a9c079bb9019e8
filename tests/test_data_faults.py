"""Data that is not what it claims is refused with one clear error, and nothing is cached.

Real files only: prefixes of the real archive cut mid-file or exactly at a member boundary
(plain .tar and re-gzipped), image trees copied from it, a file that even root cannot read
(a link to ``/proc/self/mem``, whose first page is unmapped: reading it fails with EIO),
and a cache path under a regular file, which no user, root included, can create.
"""

import gzip
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from s9lib.data import CLASSES, load_cifar10

from helpers import REPO, archive_path, small_tree

pytestmark = pytest.mark.integration


#: Cut after this many archive members: all 10,000 test images (the archive stores test/
#: first) and ~590 training airplanes, so both splits are there, one of them short.
MEMBERS = 10_600


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("S9LIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    """Prefixes of the real archive: {'boundary.tar', 'boundary.tar.gz', 'midfile.tar',
    'midfile.tar.gz'} -> path."""
    folder = tmp_path_factory.mktemp("cut")
    with tarfile.open(archive_path()) as tar:
        for i, member in enumerate(tar):
            if i == MEMBERS:
                boundary = member.offset  # where this member's header starts
                break
    with gzip.open(archive_path()) as stream:
        head = stream.read(boundary + 700)  # 700: past the 512-byte header, inside the data
    paths = {"boundary.tar": head[:boundary], "midfile.tar": head}
    out = {}
    for name, blob in paths.items():
        (folder / name).write_bytes(blob)
        (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        out[name], out[name + ".gz"] = folder / name, folder / f"{name}.gz"
    raw = archive_path().read_bytes()
    out["raw-cut.tar.gz"] = folder / "raw-cut.tar.gz"  # the .gz bytes themselves cut short
    out["raw-cut.tar.gz"].write_bytes(raw[: len(raw) // 40])
    return out


@pytest.mark.parametrize("name, needle", [
    ("boundary.tar", "not the whole of CIFAR-10"),
    ("boundary.tar.gz", "not the whole of CIFAR-10"),
    ("midfile.tar", "cut short"),
    ("midfile.tar.gz", "cut short"),
    ("raw-cut.tar.gz", "cut short"),
])
def test_an_archive_that_ends_early_is_refused_and_nothing_is_cached(cut, fresh_cache, name,
                                                                     needle):
    with pytest.raises(ValueError, match=needle) as err:
        load_cifar10(cut[name], fast=False)
    assert str(cut[name]) in str(err.value) and "\n" not in str(err.value)
    assert not list(fresh_cache.glob("arrays/*/classes.txt"))


def test_the_cli_says_so_in_one_line(cut, tmp_path):
    env = {**os.environ, "S9LIB_FAST": "1", "S9LIB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "s9lib", "train", "--out", str(tmp_path / "r"),
                           "--data", str(cut["boundary.tar"])], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert re.search(r"train/airplane has \d+ of 5,000", lines[0]), lines[0]
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "cache").glob("arrays/*/classes.txt"))


def test_a_subset_is_refused_unless_asked_for(tmp_path, fresh_cache):
    tree = small_tree(tmp_path, per_class=2, classes=CLASSES)
    with pytest.raises(ValueError, match=r"train/airplane has 2 of 5,000.*partial=True"):
        load_cifar10(tree, fast=False)
    assert not list(fresh_cache.glob("arrays/*/classes.txt"))
    data = load_cifar10(f"partial:{tree}", fast=False)
    assert len(data.train) == 20 and (data.test.class_counts() == 2).all()


def test_a_class_set_that_is_not_cifar10s_is_refused_by_name(tmp_path, fresh_cache):
    tree = small_tree(tmp_path, per_class=1, classes=CLASSES)
    root = tree / "cifar10-jpeg"
    for split in ("train", "test"):
        (root / split / "cat").rename(root / split / "kitty")
    for partial in (False, True):  # a deliberate subset still uses CIFAR-10's names
        with pytest.raises(ValueError, match="'kitty' is not a CIFAR-10 class"):
            load_cifar10(tree, fast=False, partial=partial)
    for split in ("train", "test"):
        (root / split / "kitty").rename(root / split / "cat")
    for f in (root / "test" / "ship").iterdir():
        f.unlink()
    (root / "test" / "ship").rmdir()
    with pytest.raises(ValueError, match="test/ lacks the classes ship"):
        load_cifar10(tree, fast=False, partial=True)
    assert not list(fresh_cache.glob("arrays/*/classes.txt"))


def test_a_subset_keeps_cifar10_numbering(tmp_path, fresh_cache):
    tree = small_tree(tmp_path, per_class=1, classes=("cat", "truck"))
    data = load_cifar10(tree, fast=False, partial=True)
    assert data.classes == CLASSES and data.train.labels.tolist() == [3, 9]


def test_an_unreadable_file_is_named_in_one_line(tmp_path, fresh_cache):
    tree = small_tree(tmp_path, per_class=1)
    victim = tree / "cifar10-jpeg" / "train" / "bird" / "0000.jpg"
    victim.unlink()
    victim.symlink_to("/proc/self/mem")  # unreadable for root too: EIO
    with pytest.raises(ValueError, match=r"Cannot read .*train/bird/0000\.jpg") as err:
        load_cifar10(tree, fast=False, partial=True)
    assert "\n" not in str(err.value)
    assert not list(fresh_cache.glob("arrays/*/classes.txt"))


def test_a_cache_that_cannot_be_written_warns_and_the_data_still_loads(tmp_path, monkeypatch):
    tree = small_tree(tmp_path, per_class=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for cache in (blocker, blocker / "cache"):
        monkeypatch.setenv("S9LIB_CACHE", str(cache))
        with pytest.warns(UserWarning, match="Could not write the CIFAR-10 cache"):
            data = load_cifar10(tree, fast=False, partial=True)
        assert len(data.train) == 3 and data.train.labels.tolist() == [0, 1, 2]
    assert blocker.read_text() == "not a folder"
    np.testing.assert_array_equal(data.test.labels, [0, 1, 2])
