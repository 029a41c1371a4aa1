"""Model registry: sizes match the paper, every net runs for both image shapes and both norms."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kernels import catalog, models

SHAPES = [(1, 28, 10), (3, 32, 100)]  # (in_channels, image_size, num_classes)


def within(actual: int, target: float, rel: float = 0.02) -> bool:
    return abs(actual - target) <= rel * target


@pytest.mark.parametrize(
    ("name", "classes", "channels", "size", "paper_count"),
    [
        ("resnet56", 100, 3, 32, 0.61e6),
        ("resnet20", 100, 3, 32, 0.28e6),
        ("lenet5", 10, 1, 28, 61_706),
    ],
)
def test_parameter_counts_match_paper(name, classes, channels, size, paper_count):
    count = models.count_parameters(models.create(name, classes, channels, size))
    assert within(count, paper_count), f"{name}: {count} params, paper says about {paper_count:g}"


def test_available_equals_catalog():
    assert models.available() == catalog.MODELS


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError) as info:
        models.create("resnet9000", 10, 3, 32)
    message = str(info.value)
    assert "resnet9000" in message
    for name in catalog.MODELS:
        assert name in message


def test_unknown_norm_lists_known_norms():
    with pytest.raises(ValueError) as info:
        models.create("resnet20", 10, 3, 32, norm="instance")
    for norm in catalog.NORMS:
        assert norm in str(info.value)


@pytest.mark.parametrize("norm", catalog.NORMS)
@pytest.mark.parametrize(("channels", "size", "classes"), SHAPES)
@pytest.mark.parametrize("name", catalog.MODELS)
def test_forward_shape(name, channels, size, classes, norm):
    torch.manual_seed(0)
    model = models.create(name, classes, channels, size, norm=norm)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    if norm == "layer":
        kinds = [type(m) for m in model.modules()]
        assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
        if name.startswith("resnet"):
            assert nn.GroupNorm in kinds


@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_layer_norm_prediction_independent_of_batch(name):
    torch.manual_seed(0)
    model = models.create(name, 10, 3, 32, norm="layer").train()
    batch = torch.randn(4, 3, 32, 32)
    alone = model(batch[:1])
    other_batch = torch.cat([batch[:1], 5 * torch.randn(3, 3, 32, 32) + 2])
    with_others = model(batch)[:1]
    with_strangers = model(other_batch)[:1]
    torch.testing.assert_close(alone, with_others, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone, with_strangers, rtol=1e-4, atol=1e-5)


def test_batch_norm_prediction_depends_on_batch():
    # The control for the test above: with BatchNorm in train mode the batch does matter.
    torch.manual_seed(0)
    model = models.create("resnet20", 10, 3, 32, norm="batch").train()
    batch = torch.randn(4, 3, 32, 32)
    assert not torch.allclose(model(batch[:2])[:1], model(batch)[:1], atol=1e-4)


@pytest.mark.parametrize(("name", "block", "per_stage"), [
    ("resnet20", models.PreActBasicBlock, 3),
    ("resnet56", models.PreActBottleneck, 6),
    ("resnet110", models.PreActBottleneck, 12),
])
def test_block_kind_follows_depth(name, block, per_stage):
    model = models.create(name, 100, 3, 32)
    blocks = [m for m in model.modules() if isinstance(m, (models.PreActBasicBlock, models.PreActBottleneck))]
    assert len(blocks) == 3 * per_stage
    assert all(type(b) is block for b in blocks)
    assert model.fc.in_features == 64 * block.expansion


@pytest.mark.parametrize("name", catalog.MODELS)
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(0)
    model = models.create(name, 10, 3, 32, norm="layer").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        got = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_lenet_ignores_norm():
    a = models.create("lenet5", 10, 1, 28, norm="batch")
    b = models.create("lenet5", 10, 1, 28, norm="layer")
    assert models.count_parameters(a) == models.count_parameters(b)


def _paper_vgg16_count(in_channels: int, classes: int) -> int:
    # Written out from the paper's configuration, not from the module: thirteen 3x3 convolutions with
    # biases (64,64 | 128,128 | 256x3 | 512x3 | 512x3), then FC 512->512, 512->512, 512->classes.
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    count, cin = 0, in_channels
    for cout in widths:
        count += cin * cout * 3 * 3 + cout
        cin = cout
    return count + (512 * 512 + 512) * 2 + 512 * classes + classes


@pytest.mark.parametrize(("classes", "channels", "size"), [(100, 3, 32), (10, 1, 28)])
def test_vgg16_has_the_papers_classifier_and_parameter_count(classes, channels, size):
    model = models.create("vgg16", classes, channels, size)
    assert models.count_parameters(model) == _paper_vgg16_count(channels, classes)
    assert _paper_vgg16_count(3, 100) == 15_291_300   # CIFAR-100: about 15.3M
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Linear]
    assert all(m.p == 0.5 for m in model.classifier if isinstance(m, nn.Dropout))
    assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) for m in model.modules())


def test_vgg16_dropout_acts_in_train_mode_only():
    torch.manual_seed(0)
    model = models.create("vgg16", 10, 3, 32)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.allclose(model(x), model(x))


@pytest.mark.parametrize("block_cls", [models.PreActBasicBlock, models.PreActBottleneck])
def test_projection_shortcut_takes_the_raw_input(block_cls):
    # With every residual-branch conv zeroed, a block's output is its shortcut alone; the reference
    # is the 1x1 strided conv applied by hand to the raw x (not to relu(norm(x))).
    torch.manual_seed(0)
    block = block_cls(16, 32, 2, nn.BatchNorm2d).eval()
    for name, module in block.named_modules():
        if isinstance(module, nn.Conv2d) and not name.startswith("shortcut"):
            nn.init.zeros_(module.weight)
    nn.init.constant_(block.norm1.bias, 0.5)   # pre-activation differs from x (shift, then ReLU)
    x = torch.randn(2, 16, 8, 8)
    expected = torch.nn.functional.conv2d(x, block.shortcut.weight, stride=2)
    with torch.no_grad():
        got = block(x)
        pre = torch.relu(block.norm1(x))
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, torch.nn.functional.conv2d(pre, block.shortcut.weight, stride=2))
