"""s9lib.evaluate.faithfulness (Average Drop / Increase in Confidence) on the real model and real images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import archive_path

from s9lib.data import augment as aug
from s9lib.__main__ import main
from s9lib.evaluate.faithfulness import (drop_and_increase, faithfulness, format_report,
                                random_maps)
from s9lib.data.inputs import to_unit
from s9lib.models import ResNet18
from s9lib.checkpoints import save_checkpoint

pytestmark = pytest.mark.unit


N = 8
MEAN, STD = aug.CIFAR10_MEAN, aug.CIFAR10_STD


@pytest.fixture(scope="module")
def model() -> ResNet18:
    torch.manual_seed(0)
    return ResNet18().eval()


@pytest.fixture(scope="module")
def report(model, data):
    return faithfulness(model, data.test.images, data.test.labels, n=N, seed=0, batch_size=8)


def test_all_ones_map_gives_no_drop_and_no_increase(model, data):
    x01 = to_unit(data.test.images[:N])
    drop, up = drop_and_increase(model, x01, torch.ones(N, 32, 32), MEAN, STD)
    assert torch.equal(drop, torch.zeros(N)) and not up.any()
    ones = ("ones", lambda m, x, layer, c: torch.ones(len(x), *x.shape[-2:]))
    rep = faithfulness(model, data.test.images, n=N, methods=[ones], batch_size=8)
    assert rep["ones"].average_drop == 0 and rep["ones"].increase_in_confidence == 0


def test_masking_is_in_pixel_space(model, data):
    """A zero map makes the image black (pixel 0), not the mean colour (normalised 0)."""
    x01 = to_unit(data.test.images[:4])
    drop, _ = drop_and_increase(model, x01, torch.zeros(4, 32, 32), MEAN, STD)
    with torch.no_grad():
        p = torch.softmax(model(aug_normalise(x01)), 1)
        black = torch.softmax(model(aug_normalise(torch.zeros_like(x01))), 1)
    c = p.argmax(1)
    y, o = p[torch.arange(4), c], black[torch.arange(4), c]
    torch.testing.assert_close(drop, (y - o).clamp(min=0) / y * 100)


def aug_normalise(x01: torch.Tensor) -> torch.Tensor:
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (x01 - m) / s


def test_report_values_in_range(report):
    assert [r.method for r in report.rows] == ["gradcam", "gradcam++", "random"]
    assert report.n == N and report.layer == "layer4" and 0 <= report.accuracy <= 1
    for row in report.rows:
        assert 0 <= row.average_drop <= 100
        assert 0 <= row.increase_in_confidence <= 100
        assert len(row.drop_per_image) == N
        assert all(0 <= d <= 100 for d in row.drop_per_image)
    text = format_report(report)
    assert "Average Drop" in text and "gradcam++" in text and "pixel space" in text
    json.dumps(report.to_dict())  # serialisable


def test_deterministic_with_a_seed(model, data, report):
    again = faithfulness(model, data.test.images, data.test.labels, n=N, seed=0, batch_size=8)
    assert again.to_dict(per_image=True) == report.to_dict(per_image=True)
    other = faithfulness(model, data.test.images, n=N, seed=1, methods=["random"], batch_size=8)
    assert other["random"].drop_per_image != report["random"].drop_per_image


def test_random_maps_look_like_cams():
    maps = random_maps(3, (4, 4), (32, 32), torch.Generator().manual_seed(0))
    assert maps.shape == (3, 32, 32) and maps.min() == 0
    assert torch.allclose(maps.flatten(1).max(1).values, torch.ones(3))
    again = random_maps(3, (4, 4), (32, 32), torch.Generator().manual_seed(0))
    assert torch.equal(maps, again)


def test_restores_mode_and_rejects_bad_input(data):
    torch.manual_seed(0)
    model = ResNet18().train()
    faithfulness(model, data.test.images, n=2, methods=["gradcam"])
    assert model.training
    with pytest.raises(ValueError, match="Unknown method"):
        faithfulness(model, data.test.images, n=2, methods=["lime"])
    with pytest.raises(ValueError, match="Unknown layer"):
        faithfulness(model, data.test.images, n=2, layer="layer9")
    with pytest.raises(ValueError, match="uint8"):
        faithfulness(model, data.test.images.astype(np.float32), n=2)


def test_cli_end_to_end(tmp_path, monkeypatch, capsys):
    if not archive_path().exists():
        pytest.skip("CIFAR-10 archive not found")
    torch.manual_seed(0)
    ckpt = tmp_path / "checkpoint.pt"
    save_checkpoint(ckpt, ResNet18())
    monkeypatch.setenv("S9LIB_FAST", "1")
    out = tmp_path / "report.json"
    rc = main(["faithfulness", "--checkpoint", str(ckpt), "-n", "10", "--layer", "layer3",
               "--data", str(archive_path()), "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "Faithfulness at layer3, 10 images" in printed and "random" in printed
    saved = json.loads(out.read_text())
    assert saved["n"] == 10 and [r["method"] for r in saved["rows"]] == ["gradcam", "gradcam++",
                                                                        "random"]


def test_cli_with_missing_default_weights_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("S9LIB_WEIGHTS", str(tmp_path / "gone.pt"))
    rc = main(["faithfulness", "-n", "2"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "gone.pt" in err and "checkpoint" in err
