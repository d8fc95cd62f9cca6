"""Hand-designed backbones from timm and torchvision, adapted to small inputs.

`small_stem` (default: on for inputs ≤ 64 px) replaces the stride-4 ImageNet stem of ResNets by a
3×3 stride-1 convolution without max-pool (the CIFAR stem), because a 28×28 image would otherwise
be 7×7 after the stem. Light models keep their stride-2 stems by default: that is what makes them
cheap, and it is the trade-off a query model makes.

`import hetsearch.models` registers these names (models/__init__.py imports this module); timm and
torchvision themselves are imported by the functions that use them, so registering costs nothing
and only building (or asking the input normalisation of) one of these backbones loads them
(seconds of import time that a server of another backbone, or of an exported net, never pays).
"""

from __future__ import annotations

import torch
from torch import nn

from hetsearch.errors import ConfigError
from hetsearch.models.registry import register_backbone

_SMALL_INPUT_PX = 64


def _timm_norm(timm_name: str):
    """The (mean, std) of timm's pretrained config for ``timm_name`` (ImageNet statistics)."""
    def norm(**_):
        import timm

        cfg = timm.models.get_pretrained_cfg(timm_name)
        cfg = cfg.to_dict() if cfg is not None else {}
        return cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN), cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)

    return norm


def _mobilenetv3_norm(family: str):
    def norm(width: float = 1.0, **_):
        return _timm_norm(f"{family}_{round(width * 100):03d}")()

    return norm


def _torchvision_norm(weights_enum: str):
    """The (mean, std) of torchvision's default weights' preprocessing for a model."""
    def norm(**_):
        import torchvision

        transforms = getattr(torchvision.models, weights_enum).DEFAULT.transforms()
        return transforms.mean, transforms.std

    return norm


def _use_small_stem(small_stem: bool | None, image_size: int) -> bool:
    return image_size <= _SMALL_INPUT_PX if small_stem is None else small_stem


def _timm_resnet(block: str, layers, *, in_chans: int, image_size: int, width: int = 64,
                 small_stem: bool | None = None) -> tuple[nn.Module, int]:
    """A timm ResNet of `block` ("BasicBlock" or "Bottleneck")."""
    from timm.models import resnet

    channels = tuple(width * 2**i for i in range(4))
    # timm feeds the first stage from a 64-channel stem unless the stem is "deep" (then
    # 2 x stem_width); the deep stem with stem_width = width/2 lets narrow ResNets stay narrow.
    model = resnet.ResNet(block=getattr(resnet, block), layers=layers, num_classes=0, in_chans=in_chans,
                   stem_type="deep", stem_width=width // 2, channels=channels)
    if _use_small_stem(small_stem, image_size):
        model.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model, model.num_features


@register_backbone("resnet18", input_norm=_timm_norm("resnet18"))
def resnet18(**kwargs) -> tuple[nn.Module, int]:
    """ResNet-18 (timm; options: width, small_stem)."""
    return _timm_resnet("BasicBlock", (2, 2, 2, 2), **kwargs)


@register_backbone("resnet34", input_norm=_timm_norm("resnet34"))
def resnet34(**kwargs) -> tuple[nn.Module, int]:
    """ResNet-34 (timm; options: width, small_stem)."""
    return _timm_resnet("BasicBlock", (3, 4, 6, 3), **kwargs)


@register_backbone("resnet50", input_norm=_timm_norm("resnet50"))
def resnet50(**kwargs) -> tuple[nn.Module, int]:
    """ResNet-50, bottleneck blocks (timm; options: width, small_stem)."""
    return _timm_resnet("Bottleneck", (3, 4, 6, 3), **kwargs)


def _timm_mobilenetv3(family: str, width: float, *, in_chans: int, image_size: int,
                      small_stem: bool = False) -> tuple[nn.Module, int]:
    import timm

    # timm registers MobileNetV3 only at a few width multipliers (e.g. small: 0.5, 0.75, 1.0)
    timm_name = f"{family}_{round(width * 100):03d}"
    if timm_name not in timm.list_models(f"{family}_*"):
        offered = sorted(int(n.rsplit("_", 1)[1]) / 100 for n in timm.list_models(f"{family}_*")
                         if n.rsplit("_", 1)[1].isdigit())
        raise ConfigError(f"model.backbone_args.width={width} for {family}: timm offers widths "
                          f"{', '.join(map(str, offered))}")
    model = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=in_chans)
    if small_stem:
        model.conv_stem.stride = (1, 1)
    # with num_classes=0 timm keeps the 1x1 "conv_head", so the pooled width is head_hidden_size
    return model, model.head_hidden_size


@register_backbone("mobilenetv3_small", input_norm=_mobilenetv3_norm("mobilenetv3_small"))
def mobilenetv3_small(*, width: float = 1.0, **kwargs) -> tuple[nn.Module, int]:
    """MobileNetV3-small (timm; options: width 0.5 / 0.75 / 1.0, small_stem)."""
    return _timm_mobilenetv3("mobilenetv3_small", width, **kwargs)


@register_backbone("mobilenetv3_large", input_norm=_mobilenetv3_norm("mobilenetv3_large"))
def mobilenetv3_large(*, width: float = 1.0, **kwargs) -> tuple[nn.Module, int]:
    """MobileNetV3-large (timm; options: width, small_stem)."""
    return _timm_mobilenetv3("mobilenetv3_large", width, **kwargs)


class _TorchvisionShuffleNetFeatures(nn.Module):
    """torchvision's ShuffleNetV2 without its classifier: returns globally pooled features."""

    def __init__(self, net: nn.Module):  # a torchvision.models.ShuffleNetV2
        super().__init__()
        self.net = net
        self.net.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _torchvision_shufflenet(width: str, *, in_chans: int, image_size: int,
                            small_stem: bool = False) -> tuple[nn.Module, int]:
    import torchvision

    net = getattr(torchvision.models, f"shufflenet_v2_x{width}")(weights=None)
    stem = net.conv1[0]
    net.conv1[0] = nn.Conv2d(in_chans, stem.out_channels, 3, 1 if small_stem else 2, 1, bias=False)
    features = net.fc.in_features
    return _TorchvisionShuffleNetFeatures(net), features


@register_backbone("shufflenetv2_x0_5", input_norm=_torchvision_norm("ShuffleNet_V2_X0_5_Weights"))
def shufflenetv2_x0_5(**kwargs) -> tuple[nn.Module, int]:
    """ShuffleNetV2 x0.5 (torchvision; option: small_stem)."""
    return _torchvision_shufflenet("0_5", **kwargs)


@register_backbone("shufflenetv2_x1_0", input_norm=_torchvision_norm("ShuffleNet_V2_X1_0_Weights"))
def shufflenetv2_x1_0(**kwargs) -> tuple[nn.Module, int]:
    """ShuffleNetV2 x1.0 (torchvision; option: small_stem)."""
    return _torchvision_shufflenet("1_0", **kwargs)
