"""training.models: the SmallCNN family, ResNet-18 for small images, recommended layers."""

import pytest
import torch

from training.config import TrainConfig
from training.models import SmallCNN, build_model, conv_layers, record_layers, resnet18_small


@pytest.mark.parametrize("depth, width, batchnorm, dropout",
                         [(1, 4, False, 0.0), (3, 4, True, 0.5), (4, 2, False, 0.2)])
def test_small_cnn_shapes_and_names(depth, width, batchnorm, dropout):
    model = SmallCNN(depth, width, batchnorm, dropout, n_classes=7)
    x = torch.randn(2, 3, 16, 16)
    assert model(x).shape == (2, 7)
    names = dict(model.named_modules())
    assert record_layers(model) == [*(f"conv{i}" for i in range(1, depth + 1)), "fc"]
    assert all(name in names for name in record_layers(model))
    assert ("conv1.bn" in names) == batchnorm
    seen = {}
    hooks = [names[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o)) for n in conv_layers(model)]
    model(x)
    for h in hooks:
        h.remove()
    for i, name in enumerate(conv_layers(model)):
        channels = width * min(2**i, 4)
        assert seen[name].shape == (2, channels, 16 >> i, 16 >> i)
        assert seen[name].min() >= 0  # post-ReLU: what the next layer sees


def test_dropout_only_in_training():
    model = SmallCNN(2, 4, dropout=0.5).eval()
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_resnet18_small_keeps_64x64_resolution():
    model = resnet18_small(n_classes=10).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert record_layers(model) == ["layer1", "layer2", "layer3", "layer4", "fc"]
    shapes = {}
    names = dict(model.named_modules())
    hooks = [names[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
             for n in record_layers(model)]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    for h in hooks:
        h.remove()
    assert shapes == {"layer1": (1, 64, 64, 64), "layer2": (1, 128, 32, 32), "layer3": (1, 256, 16, 16),
                      "layer4": (1, 512, 8, 8), "fc": (1, 10)}


def test_build_model_from_config_and_unknown_models():
    model = build_model(TrainConfig(depth=2, width=3, batchnorm=True), n_classes=4)
    assert isinstance(model, SmallCNN) and model.fc.out_features == 4 and hasattr(model.conv2, "bn")
    assert build_model(TrainConfig(model="resnet18"), 5).fc.out_features == 5
    with pytest.raises(TypeError, match="name record_layers explicitly"):
        record_layers(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="depth >= 1"):
        SmallCNN(depth=0)
