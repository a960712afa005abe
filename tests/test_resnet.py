"""ResNet in plain PyTorch: the published parameter counts, depths, torchvision's state_dict names, loading
weights with ``weights_only=True`` (transfer learning replaces the last layer), and that it learns."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from algorithms.networks.resnet import (  # noqa: E402
    IMAGENET_LAYERS,
    NUM_LAYERS,
    SMALL_IMAGE_LAYERS,
    PadShortcut,
    ResNet,
    load_state_dict_file,
    load_weights,
    resnet,
)


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(num_layers: int, num_classes: int, in_channels: int = 3) -> ResNet:
    with torch.device("meta"):  # shapes only: ResNet-200 costs no memory
        return resnet(num_layers, num_classes, in_channels)


# torchvision's published counts for 1000 classes (ImageNet family); He et al.'s CIFAR-10 networks (option A
# shortcuts) as published: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
@pytest.mark.parametrize("layers, classes, count", [
    (18, 1000, 11_689_512), (34, 1000, 21_797_672), (50, 1000, 25_557_032), (101, 1000, 44_549_160),
    (152, 1000, 60_192_808)])
def test_imagenet_family_parameter_counts(layers, classes, count):
    assert params(on_meta(layers, classes)) == count


@pytest.mark.parametrize("layers, millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_small_image_family_parameter_counts(layers, millions):
    n = params(on_meta(layers, 10))
    assert round(n / 1e6, 2 if layers < 110 else 1) == millions
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in on_meta(layers, 10).modules())


@pytest.mark.parametrize("layers", NUM_LAYERS)
def test_depth_counts_weighted_layers(layers):
    """num_layers = convolutions on the main path + the classifier (shortcut projections do not count)."""
    model = on_meta(layers, 10)
    convs = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and "downsample" not in name]
    assert len(convs) + 1 == layers
    widths = [model.fc.in_features]
    assert widths == [64 if layers in SMALL_IMAGE_LAYERS else (512 if layers < 50 else 2048)]


def test_output_shapes_and_input_channels():
    torch.manual_seed(0)
    assert resnet(20, 10)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert resnet(20, 7, in_channels=1)(torch.randn(3, 1, 28, 28)).shape == (3, 7)
    assert resnet(18, 5, in_channels=1)(torch.randn(2, 1, 28, 28)).shape == (2, 5)  # small input, large network
    assert resnet(50, 4).features(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    with pytest.raises(ValueError, match="num_layers must be one of 18, 34, 50, 101, 152, 200, 20, 32, 44, 56, 110"):
        resnet(19, 10)


def test_pad_shortcut_subsamples_and_zero_pads():
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    y = PadShortcut(2, 4)(x)
    assert y.shape == (2, 6, 2, 2)
    assert torch.equal(y[:, 2:4], x[:, :, ::2, ::2]) and not y[:, :2].any() and not y[:, 4:].any()


def torchvision_names(blocks: tuple[int, ...], bottleneck: bool) -> set[str]:
    """torchvision's ResNet state_dict keys, written out from its documented layout."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    names = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{p}" for p in bn}
    for s, count in enumerate(blocks, 1):
        for b in range(count):
            for k in range(1, 4 if bottleneck else 3):
                names.add(f"layer{s}.{b}.conv{k}.weight")
                names |= {f"layer{s}.{b}.bn{k}.{p}" for p in bn}
            if b == 0 and (s > 1 or bottleneck):
                names.add(f"layer{s}.0.downsample.0.weight")
                names |= {f"layer{s}.0.downsample.1.{p}" for p in bn}
    return names


def test_state_dict_names_are_torchvisions():
    assert set(on_meta(18, 1000).state_dict()) == torchvision_names((2, 2, 2, 2), False)
    assert set(on_meta(50, 1000).state_dict()) == torchvision_names((3, 4, 6, 3), True)
    assert set(on_meta(200, 1000).state_dict()) == torchvision_names((3, 24, 36, 3), True)
    small = set(on_meta(20, 10).state_dict())
    assert "layer3.2.bn2.running_var" in small and not any(k.startswith("layer4") or "downsample" in k for k in small)


def test_weights_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    a = resnet(20, 10, in_channels=1)
    a.eval()
    path = tmp_path / "weights.pt"
    torch.save({f"module.{k}": v for k, v in a.state_dict().items()}, path)  # as a DDP-wrapped model saves
    b = resnet(20, 10, in_channels=1)
    b.eval()
    assert load_weights(b, path) is False
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(a(x), b(x))
    torch.save({"state_dict": a.state_dict(), "epoch": torch.tensor(3)}, tmp_path / "ckpt.pt")
    assert set(load_state_dict_file(tmp_path / "ckpt.pt")) == set(a.state_dict())


def test_transfer_learning_replaces_the_last_layer(tmp_path):
    torch.manual_seed(2)
    pretrained = resnet(20, 10)
    path = tmp_path / "pretrained.pt"
    torch.save(pretrained.state_dict(), path)
    model = resnet(20, 3)
    assert load_weights(model, path) is True
    assert model.fc.out_features == 3
    body = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("fc.")}
    for k, v in body.items():
        assert torch.equal(model.state_dict()[k], v)
    with pytest.raises(ValueError, match="the last layer has 10 classes, the model 3"):
        load_weights(resnet(20, 3), path, replace_classifier=False)
    model.replace_classifier(5)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_mismatched_weights_are_refused_with_the_names(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(resnet(32, 10).state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit ResNet-20 .*unexpected: layer1\.3\."):
        load_weights(resnet(20, 10), path)
    torch.save(resnet(20, 10, in_channels=1).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatch: conv1.weight \(16, 1, 3, 3\) vs \(16, 3, 3, 3\)"):
        load_weights(resnet(20, 10), path)
    (tmp_path / "evil.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a state_dict file readable with torch.load\\(weights_only=True\\)"):
        load_weights(resnet(20, 10), tmp_path / "evil.pt")


def test_resnet20_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = resnet(20, 4)
    x = torch.randn(16, 3, 32, 32)
    y = torch.arange(16) % 4
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    assert (model(x).argmax(1) == y).float().mean().item() >= 0.9


def test_imagenet_layers_use_bottlenecks_from_50():
    assert [type(on_meta(n, 10).layer1[0]).__name__ for n in IMAGENET_LAYERS] == (
        ["BasicBlock"] * 2 + ["Bottleneck"] * 4)
