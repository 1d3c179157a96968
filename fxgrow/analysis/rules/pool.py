"""Spatial ops: pooling, resampling, padding.

They act on each channel separately (max/avg over a spatial window, interpolation), so every
leading axis passes through and the spatial axes are fixed.  A constant pad of a channel axis
adds constant positions around its units (kept as fixed segments); a reflect / replicate /
circular pad of a channel axis copies units by position: it blocks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import RuleContext, RuleError
from ..values import TensorInfo
from .registry import rule

_POOLS = {
    1: (
        nn.MaxPool1d,
        nn.AvgPool1d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveMaxPool1d,
        nn.LPPool1d,
        F.max_pool1d,
        F.avg_pool1d,
        F.adaptive_avg_pool1d,
        F.adaptive_max_pool1d,
        F.lp_pool1d,
        F.max_pool1d_with_indices,
        F.adaptive_max_pool1d_with_indices,
        torch.max_pool1d,
        torch.avg_pool1d,
        torch.adaptive_avg_pool1d,
        torch.adaptive_max_pool1d,
    ),
    2: (
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveMaxPool2d,
        nn.LPPool2d,
        F.max_pool2d,
        F.avg_pool2d,
        F.adaptive_avg_pool2d,
        F.adaptive_max_pool2d,
        F.lp_pool2d,
        F.max_pool2d_with_indices,
        F.adaptive_max_pool2d_with_indices,
        torch.max_pool2d,
    ),
    3: (
        nn.MaxPool3d,
        nn.AvgPool3d,
        nn.AdaptiveAvgPool3d,
        nn.AdaptiveMaxPool3d,
        nn.LPPool3d,
        F.max_pool3d,
        F.avg_pool3d,
        F.adaptive_avg_pool3d,
        F.adaptive_max_pool3d,
        F.lp_pool3d,
        F.max_pool3d_with_indices,
        F.adaptive_max_pool3d_with_indices,
        torch.max_pool3d,
    ),
}
"""Pooling modules and functions by their number of spatial axes."""


def _spatial_op(cx: RuleContext, k: int):
    x = cx.tensor(cx.arg(0))
    lead = x.layouts[: x.ndim - k]
    for lay in x.layouts[x.ndim - k :]:
        cx.block(lay, "spatial axis read by pooling/resampling: its size is fixed")
    example = cx.example()

    def info(t: torch.Tensor) -> TensorInfo:
        shape = tuple(int(n) for n in t.shape)
        return TensorInfo(
            shape, lead + tuple(cx.fixed(n, "spatial axis") for n in shape[len(lead) :])
        )

    if isinstance(example, (tuple, list)):  # values and indices
        return tuple(info(t) for t in example)
    return info(example)


_POOLS_ATEN = {
    1: (
        "max_pool1d.default",
        "max_pool1d_with_indices.default",
        "avg_pool1d.default",
        "adaptive_avg_pool1d.default",
        "adaptive_max_pool1d.default",
    ),
    2: (
        "max_pool2d.default",
        "max_pool2d_with_indices.default",
        "avg_pool2d.default",
        "adaptive_avg_pool2d.default",
        "_adaptive_avg_pool2d.default",
        "adaptive_max_pool2d.default",
    ),
    3: (
        "max_pool3d.default",
        "max_pool3d_with_indices.default",
        "avg_pool3d.default",
        "adaptive_avg_pool3d.default",
        "_adaptive_avg_pool3d.default",
        "adaptive_max_pool3d.default",
    ),
}
"""The same ops as ATen overloads (``torch.export`` graphs)."""


@rule(*_POOLS[1], aten=_POOLS_ATEN[1])
def pool1d(cx: RuleContext):
    """Pooling over the last axis: per channel, so channels pass through."""
    return _spatial_op(cx, 1)


@rule(*_POOLS[2], aten=_POOLS_ATEN[2])
def pool2d(cx: RuleContext):
    """Pooling over the two trailing spatial axes: per channel, so channels pass through."""
    return _spatial_op(cx, 2)


@rule(*_POOLS[3], aten=_POOLS_ATEN[3])
def pool3d(cx: RuleContext):
    """Pooling over the three trailing spatial axes: per channel, so channels pass through."""
    return _spatial_op(cx, 3)


@rule(
    nn.Upsample,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
    F.interpolate,
    F.upsample,
    F.upsample_nearest,
    F.upsample_bilinear,
    aten=(
        "upsample_nearest1d.vec",
        "upsample_nearest2d.vec",
        "upsample_nearest3d.vec",
        "upsample_linear1d.vec",
        "upsample_bilinear2d.vec",
        "upsample_bicubic2d.vec",
        "upsample_trilinear3d.vec",
        "_upsample_nearest_exact2d.vec",
        "_upsample_bilinear2d_aa.vec",
        "upsample_nearest2d.default",
        "upsample_bilinear2d.default",
    ),
)
def interpolate(cx: RuleContext):
    """Resampling of the spatial axes (everything after batch and channel)."""
    x = cx.tensor(cx.arg(0))
    return _spatial_op(cx, x.ndim - 2)


def _pad_classes(*kinds: str) -> tuple:
    return tuple(
        getattr(nn, f"{k}Pad{n}d") for k in kinds for n in (1, 2, 3) if hasattr(nn, f"{k}Pad{n}d")
    )


_CONSTANT_PADS = _pad_classes("Zero", "Constant")
_PAD_MODULES = _CONSTANT_PADS + _pad_classes("Reflection", "Replication", "Circular")


def _pad(cx: RuleContext, widths, constant: bool) -> TensorInfo:
    """Axis ``ndim - 1 - i`` gets ``widths[2i]`` positions before and ``widths[2i + 1]`` after.

    A constant pad is a cat with constant segments: the result's axis is
    ``Fixed(before) + x's layout + Fixed(after)``, so a channel axis keeps its space (unit c
    sits at ``before + c`` and the padding stays constant whatever the width; the widths are
    not sizes of the channel, nothing is rewritten).  A reflect / replicate / circular pad
    copies units chosen by their position near the ends, which replication does not preserve,
    and a negative width crops the last units: those block a channel axis."""
    x = cx.tensor(cx.arg(0))
    shape = cx.out_shape()
    layouts = list(x.layouts)
    if len(widths) % 2 or len(widths) // 2 > x.ndim:
        raise RuleError(f"pad widths {list(widths)} do not fit a {x.ndim}-d input")
    for i in range(len(widths) // 2):
        d = x.ndim - 1 - i
        before, after = widths[2 * i], widths[2 * i + 1]
        if not (before or after):
            continue
        if cx.spaces.is_fixed(layouts[d]):
            layouts[d] = cx.fixed(shape[d], "padded axis")
        elif constant and before >= 0 and after >= 0:
            layouts[d] = (
                *(cx.fixed(before, "constant padding") if before else ()),
                *layouts[d],
                *(cx.fixed(after, "constant padding") if after else ()),
            )
        else:
            cx.block(layouts[d], "padded axis (cropped, or padded with copies of its end units)")
            layouts[d] = cx.fixed(shape[d], "padded axis")
    return cx.out(layouts)


@rule(F.grid_sample, aten=("grid_sampler_2d.default", "grid_sampler.default"))
def grid_sample(cx: RuleContext):
    """grid_sample(x [N, C, H, W], grid [N, Ho, Wo, 2]): each channel sampled separately at
    the grid's positions, so channels pass through; x's spatial axes and the grid's own axes
    are positions (fixed), the batch axes are shared."""
    x, grid = cx.tensor(cx.arg(0)), cx.tensor(cx.arg(1))
    for lay in (*x.layouts[2:], *grid.layouts[1:]):
        cx.block(lay, "sampling positions and the sampled axes are fixed")
    cx.unify(x.layouts[0], grid.layouts[0], "batch axis of grid_sample")
    shape = cx.out_shape()
    return cx.out(x.layouts[:2] + tuple(cx.fixed(n, "spatial axis") for n in shape[2:]))


def _pad_widths(cx: RuleContext) -> tuple:
    widths = cx.concrete(cx.arg(1, "pad"))
    if not all(isinstance(w, int) for w in widths):
        raise RuleError("pad widths that are not constants")
    return widths


@rule(F.pad, aten=("pad.default",))
def pad(cx: RuleContext):
    """F.pad (``aten.pad(x, pad, mode, value)``): see ``_pad``."""
    widths = _pad_widths(cx)
    return _pad(cx, widths, cx.concrete(cx.arg(2, "mode", "constant")) == "constant")


@rule(torch.constant_pad_nd, aten=("constant_pad_nd.default",))
def constant_pad(cx: RuleContext):
    """constant_pad_nd(x, pad, value): ``F.pad`` in mode "constant"; see ``_pad``."""
    return _pad(cx, _pad_widths(cx), True)


@rule(
    aten=(
        "reflection_pad1d.default",
        "reflection_pad2d.default",
        "reflection_pad3d.default",
        "replication_pad1d.default",
        "replication_pad2d.default",
        "replication_pad3d.default",
    )
)
def aten_copy_pad(cx: RuleContext):
    """aten.reflection_padNd / replication_padNd(x, padding): see ``_pad`` (not constant)."""
    return _pad(cx, tuple(cx.concrete(cx.arg(1, "padding"))), False)


@rule(*_PAD_MODULES)
def pad_module(cx: RuleContext):
    """nn.ZeroPadNd / ConstantPadNd / ReflectionPadNd / ReplicationPadNd / CircularPadNd:
    ``F.pad`` with the module's ``padding``; see ``_pad``."""
    m = cx.module
    if not isinstance(m, _PAD_MODULES):
        raise RuleError(f"expected a padding module, got {type(m).__name__}")
    return _pad(cx, tuple(m.padding), isinstance(m, _CONSTANT_PADS))
