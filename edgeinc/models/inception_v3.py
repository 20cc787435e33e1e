"""Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", 2015).

The released graph (TF-slim ``inception_v3``, torchvision ``Inception3``, timm ``inception_v3``), with
state-dict names identical to torchvision's and timm's so that their checkpoints load strictly, plus
what the paper describes and no public implementation offers:

* the receptive-field variants of section 9 / Table 2 (299, 151 and 79 pixels) with almost equal cost;
* the "BN-auxiliary" head of Table 3 (a BatchNorm on the auxiliary classifier's fully connected layer);
* the Inception-v2 7x7 stem of Table 3 as an ablation switch;
* TF-slim's ``depth_multiplier`` / ``min_depth``.

Every ReLU and pool is a module (no functional calls in ``forward``) so quantization and export tools
see every op. Shapes in comments are for the 299 variant at full width, as (channels x grid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from ..config import ModelOptions

BN_EPS = 1e-3  # TF-slim's batch_norm_epsilon; torchvision and timm use the same

Stem = Literal["factorized", "7x7"]


class InceptionOutputs(NamedTuple):
    """What ``forward`` returns in training mode when the auxiliary head is on."""

    logits: Tensor
    aux_logits: Tensor


# --------------------------------------------------------------------------------------------
# Spatial arithmetic of the stem: the one place the variants differ
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StemSpec:
    """How the first layers treat the grid. Everything after the stem is the same in every variant."""

    first_conv_stride: int = 2
    first_maxpool: bool = True
    stem: Stem = "factorized"

    def spatial_ops(self) -> list[tuple[str, int, int, int]]:
        """(name, kernel, stride, padding) of every grid-changing op, input to 8x8 output."""
        s = self.first_conv_stride
        if self.stem == "7x7":
            # One 7x7 conv in place of the three 3x3 convs, padded so it reaches the same grid.
            ops = [("Conv2d_1a_7x7", 7, s, 0 if s == 2 else 1)]
        else:
            ops = [("Conv2d_1a_3x3", 3, s, 0), ("Conv2d_2a_3x3", 3, 1, 0), ("Conv2d_2b_3x3", 3, 1, 1)]
        if self.first_maxpool:
            ops.append(("maxpool1", 3, 2, 0))
        ops += [
            ("Conv2d_4a_3x3", 3, 1, 0),
            ("maxpool2", 3, 2, 0),  # -> the 35x35 grid (Mixed_5b-5d)
            ("Mixed_6a", 3, 2, 0),  # -> the 17x17 grid (Mixed_6b-6e, aux head)
            ("Mixed_7a", 3, 2, 0),  # -> the 8x8 grid (Mixed_7b-7c)
        ]
        return ops

    def grids(self, input_size: int) -> tuple[int, int, int]:
        """Side of the three Inception grids (after maxpool2, Mixed_6a, Mixed_7a) for a square input."""
        side, out = input_size, {}
        for name, k, stride, pad in self.spatial_ops():
            side = (side + 2 * pad - k) // stride + 1
            out[name] = side
        return out["maxpool2"], out["Mixed_6a"], out["Mixed_7a"]

    def min_input_size(self) -> int:
        """Smallest input side every op accepts (each kernel fits in the grid it slides over)."""
        side = 1
        for _, k, stride, pad in reversed(self.spatial_ops()):
            side = (side - 1) * stride + k - 2 * pad
        return side


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU: torchvision's names ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


Depth = Callable[[int], int]


def _avg_pool_3x3() -> nn.AvgPool2d:
    # count_include_pad=True as in torchvision's F.avg_pool2d, so its checkpoints give the same outputs.
    return nn.AvgPool2d(kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-5d): the 5x5 branch of Inception-v1 kept, plus two stacked 3x3."""

    def __init__(self, in_channels: int, pool_features: int, depth: Depth) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, depth(64), kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, depth(48), kernel_size=1)
        self.branch5x5_2 = BasicConv2d(depth(48), depth(64), kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, depth(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(depth(64), depth(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(depth(96), depth(96), kernel_size=3, padding=1)
        self.pool = _avg_pool_3x3()
        self.branch_pool = BasicConv2d(in_channels, depth(pool_features), kernel_size=1)
        self.out_channels = depth(64) + depth(64) + depth(96) + depth(pool_features)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction (Mixed_6a, Fig. 10): strided convs beside a strided max-pool."""

    def __init__(self, in_channels: int, depth: Depth) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, depth(384), kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, depth(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(depth(64), depth(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(depth(96), depth(96), kernel_size=3, stride=2)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.out_channels = depth(384) + depth(96) + in_channels

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, b3d, self.pool(x)], 1)


class InceptionC(nn.Module):
    """17x17 block (Mixed_6b-6e, Fig. 6): 7x7 convolutions factorized into 1x7 and 7x1."""

    def __init__(self, in_channels: int, channels_7x7: int, depth: Depth) -> None:
        super().__init__()
        c7 = depth(channels_7x7)
        self.branch1x1 = BasicConv2d(in_channels, depth(192), kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, depth(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, depth(192), kernel_size=(1, 7), padding=(0, 3))
        self.pool = _avg_pool_3x3()
        self.branch_pool = BasicConv2d(in_channels, depth(192), kernel_size=1)
        self.out_channels = 4 * depth(192)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7d = conv(b7d)
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b7, b7d, bp], 1)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction (Mixed_7a)."""

    def __init__(self, in_channels: int, depth: Depth) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, depth(192), kernel_size=1)
        self.branch3x3_2 = BasicConv2d(depth(192), depth(320), kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, depth(192), kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(depth(192), depth(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(depth(192), depth(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(depth(192), depth(192), kernel_size=3, stride=2)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.out_channels = depth(320) + depth(192) + in_channels

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        return torch.cat([b3, b7, self.pool(x)], 1)


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b-7c, Fig. 7): expanded filter banks, 1x3 and 3x1 side by side."""

    def __init__(self, in_channels: int, depth: Depth) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, depth(320), kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, depth(384), kernel_size=1)
        self.branch3x3_2a = BasicConv2d(depth(384), depth(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(depth(384), depth(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, depth(448), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(depth(448), depth(384), kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(depth(384), depth(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(depth(384), depth(384), kernel_size=(3, 1), padding=(1, 0))
        self.pool = _avg_pool_3x3()
        self.branch_pool = BasicConv2d(in_channels, depth(192), kernel_size=1)
        self.out_channels = depth(320) + 4 * depth(384) + depth(192)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b3, b3d, bp], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 grid (Mixed_6e): avg-pool 5x5/3 -> 1x1 conv -> 5x5 conv -> FC.

    With ``bn=True`` (the paper's "BN-auxiliary", last row of Table 3) the fully connected layer is
    batch-normalized like every conv: FC without bias, then BatchNorm1d (``fc_bn``). With ``bn=False``
    it is the released head and loads torchvision's ``AuxLogits`` weights.

    torchvision's head needs a 17x17 input (avg-pool to 5x5, then the 5x5 conv). Here a grid smaller
    than 17 is adaptively pooled to 5x5 instead, so the same weights run at every input size the
    variant accepts (TF-slim shrinks the kernels instead, which would change the weights' shapes).
    """

    def __init__(self, in_channels: int, num_classes: int, depth: Depth, bn: bool) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(kernel_size=5, stride=3)
        self.small_grid_pool = nn.AdaptiveAvgPool2d(5)
        self.conv0 = BasicConv2d(in_channels, depth(128), kernel_size=1)
        self.conv1 = BasicConv2d(depth(128), depth(768), kernel_size=5)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(depth(768), num_classes, bias=not bn)
        self.fc_bn = nn.BatchNorm1d(num_classes, eps=BN_EPS) if bn else nn.Identity()
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(x) if min(x.shape[-2:]) >= 17 else self.small_grid_pool(x)  # 768 x 5 x 5
        x = self.conv1(self.conv0(x))  # 768 x 1 x 1
        return self.fc_bn(self.fc(self.flatten(self.global_pool(x))))


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantConfig:
    """What later steps need to know about a registered variant (timm's ``pretrained_cfg``)."""

    name: str
    input_size: int
    stem: StemSpec
    description: str
    paper_top1: float | None = None  # Table 2/3 single-crop ImageNet top-1, for reports only
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # Inception preprocessing: pixels to [-1, 1]
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop_fraction: float = 0.875  # TF-slim central_fraction at evaluation
    interpolation: str = "bilinear"
    grids: tuple[int, int, int] = field(init=False)
    min_input_size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grids", self.stem.grids(self.input_size))
        object.__setattr__(self, "min_input_size", self.stem.min_input_size())

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "input_size": self.input_size,
            "first_conv_stride": self.stem.first_conv_stride,
            "first_maxpool": self.stem.first_maxpool,
            "stem": self.stem.stem,
            "grids": list(self.grids),
            "min_input_size": self.min_input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_fraction": self.crop_fraction,
            "interpolation": self.interpolation,
            "paper_top1": self.paper_top1,
        }


def make_depth(depth_multiplier: float, min_depth: int) -> Depth:
    """TF-slim: ``max(int(d * depth_multiplier), min_depth)``."""
    if not depth_multiplier > 0:
        raise ValueError(f"depth_multiplier must be > 0, got {depth_multiplier}")
    if min_depth < 1:
        raise ValueError(f"min_depth must be >= 1, got {min_depth}")
    return lambda d: max(int(d * depth_multiplier), min_depth)


class InceptionV3(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        *,
        first_conv_stride: int = 2,
        first_maxpool: bool = True,
        options: ModelOptions | None = None,
        variant: VariantConfig | None = None,
    ) -> None:
        """``options``: width, heads, dropout, stem (edgeinc.config.ModelOptions: the one set of
        defaults the recipe, the factory and the weights metadata share)."""
        super().__init__()
        options = options or ModelOptions()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if first_conv_stride not in (1, 2):
            raise ValueError(f"first_conv_stride must be 1 or 2, got {first_conv_stride}")
        self.options = options
        stem, in_chans = options.stem, options.in_chans
        depth = make_depth(options.depth_multiplier, options.min_depth)
        self.stem_spec = StemSpec(first_conv_stride, first_maxpool, stem)
        self.variant = variant
        self.num_classes = num_classes
        self.aux_logits = options.aux_logits
        self.aux_bn = options.aux_bn
        self.depth_multiplier = options.depth_multiplier
        self.min_depth = options.min_depth

        s = first_conv_stride
        if stem == "7x7":  # Inception-v2's first layer (Table 3 ablation)
            pad = self.stem_spec.spatial_ops()[0][3]
            self.Conv2d_1a_7x7 = BasicConv2d(in_chans, depth(64), kernel_size=7, stride=s, padding=pad)
        else:  # the factorized stem of Inception-v3                   # 299: 3 x 299 x 299
            self.Conv2d_1a_3x3 = BasicConv2d(in_chans, depth(32), kernel_size=3, stride=s)  # 32 x 149
            self.Conv2d_2a_3x3 = BasicConv2d(depth(32), depth(32), kernel_size=3)  # 32 x 147
            self.Conv2d_2b_3x3 = BasicConv2d(depth(32), depth(64), kernel_size=3, padding=1)  # 64 x 147
        # 79: removed, so that the 36x36 grid is reached from a 79 input
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2) if first_maxpool else nn.Identity()  # 64 x 73
        self.Conv2d_3b_1x1 = BasicConv2d(depth(64), depth(80), kernel_size=1)  # 80 x 73
        self.Conv2d_4a_3x3 = BasicConv2d(depth(80), depth(192), kernel_size=3)  # 192 x 71
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)  # 192 x 35
        self.Mixed_5b = InceptionA(depth(192), pool_features=32, depth=depth)  # 256 x 35
        self.Mixed_5c = InceptionA(self.Mixed_5b.out_channels, pool_features=64, depth=depth)  # 288 x 35
        self.Mixed_5d = InceptionA(self.Mixed_5c.out_channels, pool_features=64, depth=depth)  # 288 x 35
        self.Mixed_6a = InceptionB(self.Mixed_5d.out_channels, depth=depth)  # 768 x 17
        self.Mixed_6b = InceptionC(self.Mixed_6a.out_channels, channels_7x7=128, depth=depth)  # 768 x 17
        self.Mixed_6c = InceptionC(self.Mixed_6b.out_channels, channels_7x7=160, depth=depth)  # 768 x 17
        self.Mixed_6d = InceptionC(self.Mixed_6c.out_channels, channels_7x7=160, depth=depth)  # 768 x 17
        self.Mixed_6e = InceptionC(self.Mixed_6d.out_channels, channels_7x7=192, depth=depth)  # 768 x 17
        aux_in = self.Mixed_6e.out_channels
        self.AuxLogits = InceptionAux(aux_in, num_classes, depth, options.aux_bn) if options.aux_logits else None
        self.Mixed_7a = InceptionD(self.Mixed_6e.out_channels, depth=depth)  # 1280 x 8
        self.Mixed_7b = InceptionE(self.Mixed_7a.out_channels, depth=depth)  # 2048 x 8
        self.Mixed_7c = InceptionE(self.Mixed_7b.out_channels, depth=depth)  # 2048 x 8
        self.num_features = self.Mixed_7c.out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # 2048 x 1 x 1
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(p=options.dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self._stages = [name for name, *_ in self._feature_modules()]
        self.init_weights()

    # -- construction helpers ------------------------------------------------------------------

    def _feature_modules(self) -> list[tuple[str, nn.Module]]:
        names = ["Conv2d_1a_7x7"] if self.stem_spec.stem == "7x7" else ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"]
        names += ["maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"]
        names += ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]
        names += ["Mixed_7a", "Mixed_7b", "Mixed_7c"]
        return [(n, getattr(self, n)) for n in names]

    def init_weights(self) -> None:
        """TF-slim's initialisers: He (fan-in) for convs, small normals for the aux head and logits."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.AuxLogits is not None:
            nn.init.trunc_normal_(self.AuxLogits.conv1.conv.weight, std=0.01, a=-0.02, b=0.02)
            self._init_linear(self.AuxLogits.fc, std=0.001)
        self._init_linear(self.fc, std=0.001)

    @staticmethod
    def _init_linear(fc: nn.Linear, std: float) -> None:
        nn.init.trunc_normal_(fc.weight, std=std, a=-2 * std, b=2 * std)
        if fc.bias is not None:
            nn.init.zeros_(fc.bias)

    @property
    def min_input_size(self) -> int:
        return self.stem_spec.min_input_size()

    @property
    def feature_info(self) -> list[dict]:
        """timm-style: channels and stride of the ends of the 35, 17 and 8 grids."""
        sizes = self.stem_spec.grids(self.variant.input_size if self.variant else 299)
        ref = self.variant.input_size if self.variant else 299
        ends = [("Mixed_5d", sizes[0]), ("Mixed_6e", sizes[1]), ("Mixed_7c", sizes[2])]
        return [
            {"module": n, "num_chs": getattr(self, n).out_channels, "reduction": round(ref / g, 2)} for n, g in ends
        ]

    # -- forward ---------------------------------------------------------------------------------

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected an NCHW batch, got a tensor of shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            name = self.variant.name if self.variant else "this network"
            raise ValueError(
                f"input {h}x{w} is smaller than {name} accepts: at least "
                f"{self.min_input_size}x{self.min_input_size} (stem {self.stem_spec})"
            )

    def forward_endpoints(self, x: Tensor) -> dict[str, Tensor]:
        """Every stage's output by name (TF-slim's ``end_points``), then ``AuxLogits`` and ``Logits``."""
        self._check_input(x)
        end_points: dict[str, Tensor] = {}
        for name, module in self._feature_modules():
            x = module(x)
            end_points[name] = x
            if name == "Mixed_6e" and self.AuxLogits is not None:
                end_points["AuxLogits"] = self.AuxLogits(x)
        end_points["PreLogits"] = self.forward_head(x, pre_logits=True)
        end_points["Logits"] = self.fc(end_points["PreLogits"])
        return end_points

    def forward_features(self, x: Tensor) -> Tensor:
        """Input -> the 2048 x 8 x 8 feature map (no aux head)."""
        self._check_input(x)
        for _, module in self._feature_modules():
            x = module(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(self.flatten(self.avgpool(x)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor | InceptionOutputs:
        self._check_input(x)
        aux = None
        for name, module in self._feature_modules():
            x = module(x)
            if name == "Mixed_6e" and self.training and self.AuxLogits is not None:
                aux = self.AuxLogits(x)
        logits = self.forward_head(x)
        return InceptionOutputs(logits, aux) if aux is not None else logits

    # -- classifier surgery ----------------------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised classifiers (main and auxiliary) for ``num_classes`` classes."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        device = self.fc.weight.device
        self.fc = nn.Linear(self.num_features, num_classes, device=device)
        self._init_linear(self.fc, std=0.001)
        if self.AuxLogits is not None:
            aux = self.AuxLogits
            aux.fc = nn.Linear(aux.fc.in_features, num_classes, bias=not aux.bn, device=device)
            aux.fc_bn = nn.BatchNorm1d(num_classes, eps=BN_EPS, device=device) if aux.bn else nn.Identity()
            self._init_linear(aux.fc, std=0.001)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, stem={self.stem_spec}, aux_logits={self.aux_logits}, "
            f"aux_bn={self.aux_bn}, depth_multiplier={self.depth_multiplier}, min_depth={self.min_depth}"
        )
