"""s9lib.evaluate.shortcut: the planted patch, where it lands, and the two scores of a map
(pointing game, mass in the patch), on real CIFAR-10 images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s9lib.evaluate.shortcut import (PATCH, PATCH_SIZE, chance_hit_rate, mass_in_patch,
                                     patch_masks, plant, pointing_hits, stamp)

pytestmark = pytest.mark.unit


def test_stamp_puts_the_patch_in_each_box_and_leaves_the_input_alone(data):
    images = data.test.images[:20]
    before = images.copy()
    stamped, boxes = stamp(images, seed=3)
    assert np.array_equal(images, before)  # the caller's images are not touched
    for img, orig, (t, l, b, r) in zip(stamped, images, boxes):
        assert (b - t, r - l) == (PATCH_SIZE, PATCH_SIZE)
        assert np.array_equal(img[t:b, l:r], PATCH)
        outside = np.ones(img.shape[:2], bool)
        outside[t:b, l:r] = False
        assert np.array_equal(img[outside], orig[outside])
    again, boxes2 = stamp(images, seed=3)
    assert np.array_equal(again, stamped) and np.array_equal(boxes2, boxes)
    assert not np.array_equal(stamp(images, seed=4)[1], boxes)


def test_stamp_refuses_what_is_not_a_uint8_image_batch(data):
    with pytest.raises(ValueError, match="uint8"):
        stamp(data.test.images[:2].astype(np.float32), seed=0)
    with pytest.raises(ValueError, match="smaller than"):
        stamp(np.zeros((1, 3, 3, 3), np.uint8), seed=0)


def test_plant_relabels_a_share_of_the_other_classes_as_the_target(data):
    planted = plant(data, target=3, fraction=0.1, seed=0)
    train, before = planted.data.train, data.train
    changed = np.flatnonzero((train.images != before.images).any(axis=(1, 2, 3)))
    assert set(changed) <= set(planted.indices)  # only stamped images differ
    assert (before.labels[planted.indices] != 3).all()  # taken from the other classes
    assert (train.labels[planted.indices] == 3).all()  # and labelled as the target
    others = np.delete(np.arange(len(train.labels)), planted.indices)
    assert np.array_equal(train.labels[others], before.labels[others])
    assert len(planted.indices) == round(0.1 * (before.labels != 3).sum())
    assert planted.data.test is data.test
    assert planted.describe()["planted_class"] == "cat"
    assert planted.describe()["source"] == "others"


def test_plant_on_the_target_class_itself_keeps_every_label(data):
    planted = plant(data, target=3, fraction=0.5, seed=0, source="own")
    assert (data.train.labels[planted.indices] == 3).all()
    assert np.array_equal(planted.data.train.labels, data.train.labels)
    assert len(planted.indices) == round(0.5 * (data.train.labels == 3).sum())


def test_plant_refuses_a_bad_fraction_class_or_source(data):
    with pytest.raises(ValueError, match="fraction"):
        plant(data, target=3, fraction=0)
    with pytest.raises(ValueError, match="class index"):
        plant(data, target=10)
    with pytest.raises(ValueError, match="source"):
        plant(data, target=3, source="everywhere")


def test_pointing_game_and_mass_on_maps_whose_answer_is_known():
    boxes = np.array([[4, 20, 8, 24], [4, 20, 8, 24], [4, 20, 8, 24], [4, 20, 8, 24]])
    maps = torch.zeros(4, 32, 32)
    maps[0, 5, 21] = 1.0  # maximum on the patch
    maps[1, 30, 1] = 1.0  # far from it
    maps[2, 9, 25] = 1.0  # one pixel outside on each axis: inside the 2-pixel tolerance
    # maps[3] stays all zero: it points nowhere
    hits = pointing_hits(maps, boxes, tolerance=2)
    assert hits[:3].tolist() == [1.0, 0.0, 1.0] and torch.isnan(hits[3])
    assert pointing_hits(maps, boxes, tolerance=0)[2] == 0.0
    mass = mass_in_patch(maps, boxes)
    assert mass[:3].tolist() == [1.0, 0.0, 0.0] and torch.isnan(mass[3])
    spread = torch.ones(1, 32, 32)
    spread[0, 0, 0] = 0.0  # not constant, almost uniform
    assert mass_in_patch(spread, boxes[:1])[0] == pytest.approx(16 / 1023, rel=1e-3)
    assert patch_masks(boxes, (32, 32)).sum(dim=(1, 2)).tolist() == [16] * 4


def test_chance_hit_rate_is_what_a_random_maximum_scores(data):
    """A map whose maximum lands uniformly at random hits the enlarged patch at the chance
    rate: measured on 20,000 stamped positions of real images."""
    _, boxes = stamp(np.repeat(data.test.images[:1], 20_000, axis=0), seed=0)
    maps = torch.rand(20_000, 32, 32, generator=torch.Generator().manual_seed(0))
    rate = pointing_hits(maps, boxes, tolerance=2).mean().item()
    assert rate == pytest.approx(chance_hit_rate((32, 32), 2), abs=0.006)
    assert chance_hit_rate((32, 32), 0) == pytest.approx(16 / 1024)
