import os
import shutil
import tarfile

import numpy as np
import pytest
import torch

from s9lib.data import CLASSES, CifarDataset, Split, load_cifar10, resolve_source
from s9lib.data import augment

from helpers import archive_path, cifar, small_tree

pytestmark = pytest.mark.unit


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("S9LIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _tar(folder, dest):
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname=".")
    return dest


def test_full_archive_sizes_classes_and_cache(fresh_cache, tmp_path):
    data = load_cifar10(archive_path(), fast=False)
    assert data.classes == CLASSES
    assert data.train.images.shape == (50_000, 32, 32, 3)
    assert data.test.images.shape == (10_000, 32, 32, 3)
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    assert (data.train.class_counts() == 5_000).all()
    assert (data.test.class_counts() == 1_000).all()
    cached = list(fresh_cache.glob("arrays/*/train_images.npy"))
    assert len(cached) == 1

    # The second load must come from the cache: break a copy of the archive after caching
    # (same size and mtime, so the same cache key) and load it again.
    copy = tmp_path / "copy.tar.gz"
    shutil.copy2(archive_path(), copy)
    load_cifar10(copy, fast=False)
    st = copy.stat()
    copy.write_bytes(b"\0" * st.st_size)
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = load_cifar10(copy, fast=False)
    assert np.array_equal(again.test.images, data.test.images)


def test_test_images_keep_the_original_batch_order():
    # The archive keeps test_batch order within each class; the exact-pixel file holds the
    # first 1,017 images of test_batch, so its first cat must be the archive's first cat.
    exact = np.load(archive_path().parent / "cifar10_test_exact_first1017.npz")
    data = load_cifar10(archive_path(), fast=False)
    first_cat = exact["images"][np.flatnonzero(exact["labels"] == 3)[0]].astype(int)
    archive_cat = data.test.images[data.test.labels == 3][0].astype(int)
    assert np.abs(first_cat - archive_cat).mean() < 12  # JPEG error is ~6/255 on average


def test_fast_subset_is_stratified_and_deterministic(monkeypatch):
    monkeypatch.setenv("S9LIB_FAST", "1")
    a = load_cifar10(archive_path())
    b = load_cifar10(archive_path())
    assert len(a.train) == 500 and len(a.test) == 200
    assert (a.train.class_counts() == 50).all() and (a.test.class_counts() == 20).all()
    assert np.array_equal(a.train.images, b.train.images)
    assert a.train.labels[:10].tolist() == list(range(10))  # class-interleaved
    monkeypatch.setenv("S9LIB_FAST", "0")
    assert len(load_cifar10(archive_path()).train) == 50_000


def test_image_folder_and_small_archive(tmp_path, fresh_cache):
    tree = small_tree(tmp_path)
    data = load_cifar10(tree, fast=False, partial=True)  # a deliberate subset
    assert data.classes == CLASSES  # three classes present, numbered as in CIFAR-10
    assert sorted(set(data.train.labels.tolist())) == [0, 1, 2]
    assert len(data.train) == 9 and len(data.test) == 9
    from_tar = load_cifar10(f"partial:{_tar(tree, tmp_path / 'small.tar.gz')}", fast=False)
    assert np.array_equal(from_tar.train.images, data.train.images)


def test_source_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("S9LIB_DATA", str(tmp_path / "elsewhere.tar.gz"))
    assert resolve_source() == str(tmp_path / "elsewhere.tar.gz")
    with pytest.raises(FileNotFoundError, match="S9LIB_DATA"):
        load_cifar10()


def test_missing_path_says_where_it_looked_and_what_to_set(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(tmp_path / "nope.tar.gz")
    assert "nope.tar.gz" in str(err.value) and "S9LIB_DATA" in str(err.value)


def test_corrupt_jpeg_inside_archive_is_named_and_nothing_is_cached(tmp_path, fresh_cache):
    tree = small_tree(tmp_path)
    bad = tree / "cifar10-jpeg" / "train" / "bird" / "0001.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated JPEG
    archive = _tar(tree, tmp_path / "bad.tar.gz")
    with pytest.raises(ValueError, match=r"train/bird/0001\.jpg"):
        load_cifar10(archive, fast=False, partial=True)
    assert not list(fresh_cache.glob("arrays/*/classes.txt"))


def test_not_an_archive_and_wrong_layout(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match="not a readable tar archive"):
        load_cifar10(junk, fast=False)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        load_cifar10(empty, fast=False)


def test_wrong_image_size_is_refused(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        d = tmp_path / "t" / split / "cat"
        d.mkdir(parents=True)
        Image.new("RGB", (64, 48)).save(d / "0000.png")
    with pytest.raises(ValueError, match="64x48"):
        load_cifar10(tmp_path / "t", fast=False, use_cache=False, partial=True)


def test_split_validation_and_subset_errors():
    with pytest.raises(ValueError, match="32, 32, 3"):
        Split(np.zeros((2, 28, 28, 3), np.uint8), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="asked for"):
        cifar().train.subset(per_class=11)


def test_dataset_applies_the_transform():
    split = cifar().train
    ds = CifarDataset(split, augment.build("test"))
    x, y = ds[3]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y == int(split.labels[3])
    expected = (split.images[3] / 255.0 - augment.CIFAR10_MEAN) / augment.CIFAR10_STD
    assert np.allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    raw, _ = CifarDataset(split)[3]
    assert raw.dtype == torch.uint8 and raw.shape == (3, 32, 32)
