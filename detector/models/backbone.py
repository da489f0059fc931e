"""Sparse 3D U-Net: submanifold convolutions within a level, strided sparse convolutions down,
inverse convolutions up (with the down convolution's rule book), skip connections by concatenation.

Output sites are exactly the input sites, so per-voxel predictions line up with the voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from spconv.pytorch import SparseConvTensor
from torch import nn

from detector.models.rulebooks import level_key, publish_sites_rule_book
from detector.ops import SparseConv3d, SparseInverseConv3d, SubMConv3d

__all__ = ["SparseUNet", "SubMBlock"]


class SubMBlock(nn.Module):
    """Submanifold 3x3x3 convolution + BatchNorm1d + ReLU on the features."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = SubMConv3d(in_channels, out_channels, kernel_size, bias=False, indice_key=indice_key)
        self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01)

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        x = self.conv(x)
        return x.replace_feature(torch.relu(self.norm(x.features)))


class _Down(nn.Module):
    """Strided (2x2x2, stride 2) sparse convolution + BN + ReLU: each output site is the parent of up
    to 8 input sites, as in max pooling. Its rule book is kept under ``indice_key`` for the way up."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str) -> None:
        super().__init__()
        self.conv = SparseConv3d(in_channels, out_channels, 2, stride=2, bias=False, indice_key=indice_key)
        self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01)

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        x = self.conv(x)
        return x.replace_feature(torch.relu(self.norm(x.features)))


class _Up(nn.Module):
    """Inverse of the level's down convolution + BN + ReLU, back onto the finer level's sites."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str) -> None:
        super().__init__()
        self.conv = SparseInverseConv3d(in_channels, out_channels, 2, bias=False, indice_key=indice_key)
        self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01)

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        x = self.conv(x)
        return x.replace_feature(torch.relu(self.norm(x.features)))


class SparseUNet(nn.Module):
    """U-Net over a ``SparseConvTensor``.

    channels: per level (level 0 at input resolution, each next level at half the resolution).
    blocks: submanifold blocks per level on the way down (int or one per level); the way up has one
        block per level after concatenating the skip connection.
    out_channels: channels of the output (a final 1x1-free block at level 0); default ``channels[0]``.
    key: prefix of the rule-book keys, so two U-Nets over the same tensor do not share rule books.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        blocks: int | Sequence[int] = 1,
        out_channels: int | None = None,
        key: str = "unet",
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels:
            raise ValueError("SparseUNet: channels must list at least one level")
        blocks = [int(blocks)] * len(channels) if isinstance(blocks, int) else [int(b) for b in blocks]
        if len(blocks) != len(channels) or min(blocks) < 1:
            raise ValueError(f"SparseUNet: blocks {blocks} must be >= 1 per level of channels {channels}")
        self.in_channels = int(in_channels)
        self.channels = channels
        self.out_channels = int(out_channels) if out_channels is not None else channels[0]
        self.key = key

        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for level, (c, n) in enumerate(zip(channels, blocks)):
            # level 0 starts from the input features; a deeper level from its down convolution's c
            c_in = self.in_channels if level == 0 else c
            layers = [SubMBlock(c_in if i == 0 else c, c, level_key(key, "subm", level)) for i in range(n)]
            self.encoders.append(nn.Sequential(*layers))
            if level + 1 < len(channels):
                self.downs.append(_Down(c, channels[level + 1], level_key(key, "down", level)))
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(channels) - 2, -1, -1):
            c = channels[level]
            self.ups.append(_Up(channels[level + 1], c, level_key(key, "down", level)))
            c_out = self.out_channels if level == 0 else c
            self.decoders.append(SubMBlock(2 * c, c_out, level_key(key, "subm", level)))
        if len(channels) == 1 and self.out_channels != channels[0]:
            self.decoders.append(SubMBlock(channels[0], self.out_channels, level_key(key, "subm", 0)))

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        if x.features.shape[1] != self.in_channels:
            raise ValueError(f"SparseUNet({self.key}): input has {x.features.shape[1]} channels, "
                             f"expected {self.in_channels}")
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < len(self.downs):
                skips.append(x)
                x = self.downs[level](x)
        for up, decoder in zip(self.ups, self.decoders):
            skip = skips.pop()
            x = up(x)
            x = decoder(x.replace_feature(torch.cat([x.features, skip.features], dim=1)))
        if len(self.channels) == 1 and len(self.decoders) == 1:
            x = self.decoders[0](x)
        # the output holds the input's sites: whatever runs next on them reuses the level-0 rule book
        return publish_sites_rule_book(x, level_key(self.key, "subm", 0))
