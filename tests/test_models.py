import pytest
import torch
from torch import nn

from s9lib.models import LAYER_NAMES, ResNet18, count_parameters

pytestmark = pytest.mark.unit


def test_parameter_count_is_the_cifar_resnet18():
    assert count_parameters(ResNet18()) == 11_173_962


def test_output_and_feature_map_shapes():
    model = ResNet18().eval()
    sizes = {}
    hooks = [getattr(model, n).register_forward_hook(
        lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape))) for n in LAYER_NAMES]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 10)
    assert sizes == {"layer1": (2, 64, 32, 32), "layer2": (2, 128, 16, 16),
                     "layer3": (2, 256, 8, 8), "layer4": (2, 512, 4, 4)}


def test_relus_are_separate_non_inplace_modules():
    model = ResNet18()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 8 * 2  # the stem, then two per BasicBlock
    assert len({id(m) for m in relus}) == len(relus)
    assert not any(m.inplace for m in relus)


def test_no_max_pool_and_3x3_stem():
    model = ResNet18()
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)


def test_num_classes():
    assert ResNet18(num_classes=7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)
