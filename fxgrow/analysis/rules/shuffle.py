"""Channel-moving CNN ops: pixel shuffle / unshuffle (channels to and from space) and channel
shuffle (the channels of g groups interleaved: a ``Zip`` of the groups' spaces)."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..context import RuleContext
from .registry import rule
from .shape import _several_spaces


@rule(nn.PixelShuffle, F.pixel_shuffle, torch.pixel_shuffle, aten=("pixel_shuffle.default",))
def pixel_shuffle(cx: RuleContext):
    """pixel_shuffle(r): [C r^2] -> C with the r^2 factor moved to space; channels must come
    in whole blocks of r^2 (the factor is fixed)."""
    x = cx.tensor(cx.arg(0))
    if cx.module is not None:
        r = cx.module_as(nn.PixelShuffle).upscale_factor
    else:
        r = cx.concrete(cx.arg(1))
    c, inner = cx.spaces.split(x.layouts[-3], r * r, cx.blocker("pixel_shuffle"))
    cx.block(inner, "moved into the spatial axes by pixel_shuffle")
    shape = cx.out_shape()
    return cx.out(
        x.layouts[:-3]
        + (c, cx.fixed(shape[-2], "spatial axis"), cx.fixed(shape[-1], "spatial axis"))
    )


@rule(
    nn.PixelUnshuffle, F.pixel_unshuffle, torch.pixel_unshuffle, aten=("pixel_unshuffle.default",)
)
def pixel_unshuffle(cx: RuleContext):
    """pixel_unshuffle(r): C -> [C r^2], each channel followed by its r^2 spatial offsets."""
    x = cx.tensor(cx.arg(0))
    if cx.module is not None:
        r = cx.module_as(nn.PixelUnshuffle).downscale_factor
    else:
        r = cx.concrete(cx.arg(1))
    c = cx.spaces.merge(x.layouts[-3], cx.fixed(r * r, "spatial offsets of pixel_unshuffle"))
    shape = cx.out_shape()
    return cx.out(
        x.layouts[:-3]
        + (c, cx.fixed(shape[-2], "spatial axis"), cx.fixed(shape[-1], "spatial axis"))
    )


@rule(
    nn.ChannelShuffle,
    F.channel_shuffle,
    torch.channel_shuffle,
    F.native_channel_shuffle,
    traits=("moves_positions",),
)
def channel_shuffle(cx: RuleContext):
    """channel_shuffle(G): [G, C/G] transposed to [C/G, G].  One space: the G groups share
    its map (a product).  Several spaces (e.g. two branches concatenated, as in ShuffleNet):
    the G rows keep their own maps and interleave (a Zip); they must grow alike."""
    x = cx.tensor(cx.arg(0))
    if cx.module is not None:
        G = cx.module_as(nn.ChannelShuffle).groups
    else:
        G = cx.concrete(cx.arg(1, "groups"))
    c = x.layouts[1]
    n = x.shape[1]
    if _several_spaces(cx, c):  # the rows keep their own maps
        rows = cx.spaces.stack(c, G, cx.blocker("channel_shuffle"))
        merged = cx.spaces.merge(rows, cx.fixed(G, "channel_shuffle groups"))
        return cx.out((x.layouts[0], merged, *x.layouts[2:]))
    g, per = cx.spaces.split(c, n // G, cx.blocker("channel_shuffle"))
    cx.block(g, "number of channel_shuffle groups is fixed")
    return cx.out((x.layouts[0], cx.spaces.merge(per, g), *x.layouts[2:]))
