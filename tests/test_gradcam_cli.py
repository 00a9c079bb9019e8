"""`python -m s9lib gradcam`: end to end on sample photos, and every refusal is clear."""

import shutil

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from s9lib import seed_everything
from s9lib.__main__ import main
from s9lib.models import ResNet18
from s9lib.checkpoints import export_weights
from s9lib.checkpoints import save_checkpoint
from s9lib.training.recipes import get_recipe

from helpers import REPO

pytestmark = pytest.mark.integration


CAT = REPO / "sampleimages" / "chelsea_cat.jpg"
GRAY = REPO / "sampleimages" / "camera_gray.jpg"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded random CIFAR ResNet18, saved the way training saves it."""
    seed_everything(0)
    path = tmp_path_factory.mktemp("run") / "checkpoint.pt"
    save_checkpoint(path, ResNet18())
    return path


def _run(capsys, *argv):
    rc = main(["gradcam", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_end_to_end_two_sample_photos(checkpoint, tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, out, err = _run(capsys, CAT, GRAY, "--checkpoint", checkpoint, "--out", out_dir)
    assert rc == 0, err
    written = out.split()
    assert written == [str(out_dir / "chelsea_cat_gradcam.png"),
                       str(out_dir / "camera_gray_gradcam.png")]
    for path in written:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 600 and im.height > 300


def test_gradcampp_layers_and_a_weights_file(tmp_path, capsys):
    seed_everything(1)
    save_checkpoint(tmp_path / "ck.pt", ResNet18(), recipe=get_recipe("fast"))
    weights = export_weights(tmp_path / "ck.pt", tmp_path / "w.pt")
    rc, out, err = _run(capsys, CAT, "--checkpoint", weights, "--method", "gradcam++",
                        "--layers", "layer4", "--out", tmp_path)
    assert rc == 0, err
    assert out.split() == [str(tmp_path / "chelsea_cat_gradcampp.png")]


def test_missing_and_non_image_files_and_a_repeated_name(checkpoint, tmp_path, capsys):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture\n")
    (tmp_path / "a").mkdir()
    shutil.copy(CAT, tmp_path / "a" / CAT.name)  # the same file name in another folder
    rc, out, err = _run(capsys, tmp_path / "missing.jpg", notes, CAT, tmp_path / "a" / CAT.name,
                        "--checkpoint", checkpoint, "--layers", "layer4",
                        "--out", tmp_path / "out")
    assert rc == 2
    assert "error: No image at" in err and "missing.jpg" in err
    assert "notes.jpg is not an image" in err
    assert "Traceback" not in err
    # the good photos are still explained, and the second one does not overwrite the first
    assert out.split() == [str(tmp_path / "out" / "chelsea_cat_gradcam.png"),
                           str(tmp_path / "out" / "chelsea_cat_gradcam-2.png")]


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    # a torchvision ResNet18 saved in s9lib's checkpoint format
    tv = {"format": 1, "arch": "ResNet", "num_classes": 10,
          "model": torchvision.models.resnet18(num_classes=10).state_dict()}
    torch.save(tv, tmp_path / "tv.pt")
    rc, _, err = _run(capsys, CAT, "--checkpoint", tmp_path / "tv.pt")
    assert rc == 2 and "not the CIFAR ResNet18" in err

    # a tiny nn.Linear whose checkpoint claims to be a ResNet18
    torch.save({"arch": "ResNet18", "model": nn.Linear(4, 2).state_dict()}, tmp_path / "lin.pt")
    rc, _, err = _run(capsys, CAT, "--checkpoint", tmp_path / "lin.pt")
    assert rc == 2 and "does not hold the CIFAR ResNet18" in err
    assert len(err) < 600  # a sentence, not torch's list of a hundred missing keys

    # a bare state dict is neither a checkpoint nor a weights file
    torch.save(ResNet18().state_dict(), tmp_path / "bare.pt")
    rc, _, err = _run(capsys, CAT, "--checkpoint", tmp_path / "bare.pt")
    assert rc == 2 and "neither an s9lib training checkpoint" in err


def test_unreadable_and_missing_checkpoint(tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("junk")
    rc, _, err = _run(capsys, CAT, "--checkpoint", tmp_path / "junk.pt")
    assert rc == 2 and "junk.pt is not a readable s9lib checkpoint" in err
    rc, _, err = _run(capsys, CAT, "--checkpoint", tmp_path / "none.pt")
    assert rc == 2 and "No checkpoint at" in err


def test_default_weights_missing_says_what_to_pass(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("S9LIB_WEIGHTS", str(tmp_path / "gone.pt"))
    rc, _, err = _run(capsys, CAT)
    assert rc == 2 and "gone.pt" in err and "checkpoint" in err


def test_unknown_layer_lists_valid_names(checkpoint, tmp_path, capsys):
    rc, _, err = _run(capsys, CAT, "--checkpoint", checkpoint, "--layers", "layer5",
                      "--out", tmp_path)
    assert rc == 2 and "layer4" in err
