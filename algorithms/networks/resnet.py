"""ResNet in plain PyTorch, for Image Classification's ``num_layers``.

Two families, as SageMaker offers them:

- ImageNet (He et al. 2016, "Deep Residual Learning"), ``num_layers`` 18, 34 (basic blocks) and 50, 101, 152,
  200 (bottlenecks; 200 is the depth of He et al.'s "Identity Mappings" paper, blocks (3, 24, 36, 3)): a 7x7
  stride-2 stem and a max-pool, four stages of 64/128/256/512 (x4 for bottlenecks) channels. The stride of a
  bottleneck sits on its 3x3 convolution (the "v1.5" layout torchvision uses).
- Small images (the paper's CIFAR-10 networks), ``num_layers`` 20, 32, 44, 56, 110 = 6n + 2: a 3x3 stem and three
  stages of n basic blocks with 16/32/64 channels; where a stage halves the size and widens, the shortcut
  subsamples and pads the new channels with zeros (the paper's option A, no parameters: ResNet-20 has 0.27M).

``state_dict`` key names are torchvision's, so weights saved from ``torchvision.models.resnet*`` load as they are
(``pretrainedWeights``), and stay stable across versions of this module:

    conv1.weight, bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
    layer{s}.{b}.conv{1,2[,3]}.weight, layer{s}.{b}.bn{1,2[,3]}.*      s = 1..4 (1..3 small), b = block
    layer{s}.0.downsample.0.weight, layer{s}.0.downsample.1.*           (ImageNet family: 1x1 conv + BN)
    fc.weight, fc.bias

A checkpoint is a plain ``state_dict`` file read with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_LAYERS = (18, 34, 50, 101, 152, 200)
SMALL_IMAGE_LAYERS = (20, 32, 44, 56, 110)
NUM_LAYERS = IMAGENET_LAYERS + SMALL_IMAGE_LAYERS
_IMAGENET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                    152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34 and the small-image family)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity, inplace=True)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, and a shortcut (ResNet-50 and deeper)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity, inplace=True)


class PadShortcut(nn.Module):
    """The small-image family's parameter-free shortcut: subsample by the stride, zero-pad the new channels."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class ResNet(nn.Module):
    """A ResNet of ``num_layers`` (one of :data:`NUM_LAYERS`) for ``num_classes`` and ``in_channels``."""

    def __init__(self, num_layers: int, num_classes: int, in_channels: int = 3, zero_init_residual: bool = False):
        super().__init__()
        if num_layers not in NUM_LAYERS:
            raise ValueError(f"num_layers must be one of {', '.join(map(str, NUM_LAYERS))}, got {num_layers}")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be positive, got {num_classes}, {in_channels}")
        self.num_layers = num_layers
        self.in_channels = in_channels
        self.small_images = num_layers in SMALL_IMAGE_LAYERS
        if self.small_images:
            n = (num_layers - 2) // 6
            self.conv1 = _conv3x3(in_channels, 16)
            self.bn1 = nn.BatchNorm2d(16)
            self.maxpool = nn.Identity()
            widths, blocks, block = (16, 32, 64), (n, n, n), BasicBlock
            cin = 16
        else:
            block = BasicBlock if num_layers < 50 else Bottleneck
            blocks = _IMAGENET_BLOCKS[num_layers]
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            widths = (64, 128, 256, 512)
            cin = 64
        for s, (planes, count) in enumerate(zip(widths, blocks, strict=True), 1):
            stride = 1 if s == 1 else 2
            layers = []
            for b in range(count):
                downsample = None
                if b == 0 and (stride != 1 or cin != planes * block.expansion):
                    if self.small_images:
                        downsample = PadShortcut(stride, planes - cin)
                    else:
                        downsample = nn.Sequential(_conv1x1(cin, planes * block.expansion, stride),
                                                   nn.BatchNorm2d(planes * block.expansion))
                layers.append(block(cin, planes, stride if b == 0 else 1, downsample))
                cin = planes * block.expansion
            self.add_module(f"layer{s}", nn.Sequential(*layers))
        self.num_stages = len(widths)
        self.num_features = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each block starts as the identity: helps large-batch training
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features the classifier sees: (n, num_features)."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        for s in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{s}")(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def replace_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised last layer for ``num_classes`` (transfer learning)."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        old = self.fc.weight
        self.fc = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)


def resnet(num_layers: int, num_classes: int, in_channels: int = 3, zero_init_residual: bool = False) -> ResNet:
    return ResNet(num_layers, num_classes, in_channels, zero_init_residual)


def load_state_dict_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a ``state_dict`` file, read with ``weights_only=True`` (no pickled code). Accepts a bare
    ``state_dict`` or one under a ``"state_dict"`` / ``"model"`` key, and strips DDP's ``module.`` prefix."""
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a state_dict file readable with torch.load(weights_only=True): {exc}") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors (a state_dict)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_weights(model: ResNet, state: Mapping[str, torch.Tensor] | str | os.PathLike,
                 replace_classifier: bool = True) -> bool:
    """Load weights saved in this module's (torchvision's) layer names into ``model``.

    When the checkpoint's last layer has another class count and ``replace_classifier`` is set, every other
    layer is loaded and ``fc`` is left freshly initialised (transfer learning); returns whether that happened.
    Any other mismatch (missing or unexpected keys, shapes) is an error listing the first offending names.
    """
    source = str(state) if isinstance(state, (str, os.PathLike)) else "state_dict"
    if isinstance(state, (str, os.PathLike)):
        state = load_state_dict_file(state)
    state = dict(state)
    own = model.state_dict()
    replaced = False
    fc = state.get("fc.weight")
    if fc is not None and fc.shape != own["fc.weight"].shape and fc.shape[1:] == own["fc.weight"].shape[1:]:
        if not replace_classifier:
            raise ValueError(f"{source}: the last layer has {fc.shape[0]} classes, the model {model.num_classes}")
        state.pop("fc.weight")
        state.pop("fc.bias", None)
        state.update({k: own[k] for k in ("fc.weight", "fc.bias")})
        replaced = True
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        problems = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if names:
                more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
                problems.append(f"{label}: {', '.join(names[:5])}{more}")
        raise ValueError(f"{source}: does not fit ResNet-{model.num_layers} with {model.in_channels} input "
                         f"channel(s) and {model.num_classes} classes; " + "; ".join(problems))
    model.load_state_dict(state)
    if replaced:
        model.replace_classifier(model.num_classes)
    return replaced
