"""Convolutions, module and functional.

Weight ``[C_out, C_in / G, k...]`` (transposed: ``[C_in, C_out / G, k...]``).

* G = 1: output channels are a new space (producer: rows copied); input channels are
  contracted (consumer: column j = column g(j) / c(g(j))).
* 1 < G < C_in: channel i lives in block i // (C_in / G).  Every block must grow equally and a
  replica must stay in its source's block; fxgrow gives all G blocks one shared map (the blocks
  are united), which satisfies both.  The same holds on the output side.
* Depthwise (G = C_in, C_out = k C_in): output channel o reads input channel o // k only, so
  the output space is the input space times a fixed multiplier k; nothing is divided.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..arguments import with_argument
from ..context import CONSUME, PRODUCE, SCALE, RuleContext, RuleError
from ..layout import Layout
from ..values import SizeInfo, TensorInfo
from .registry import rule

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class _Weights:
    """Access to a conv's weight/bias axes for the module and the functional form alike."""

    def __init__(self, cx: RuleContext, weight, bias) -> None:
        self.cx = cx
        self.weight, self.bias = weight, bias

    def axis(self, which: str, axis: int, role: str) -> Layout | None:
        ref = self.weight if which == "weight" else self.bias
        if ref is None:
            return None
        if isinstance(ref, str):  # module parameter name
            return self.cx.module_param(ref, axis, role)
        info = self.cx.value(ref)
        if not isinstance(info, TensorInfo):
            raise RuleError("conv weight is not a tensor")
        if self.cx.spaces.is_fixed(info.layouts[axis]):
            # a size-1 axis read through get_attr is fixed: it produces and reads no space
            return info.layouts[axis]
        if role == CONSUME:
            self.cx.consume(ref, axis, info.layouts[axis])
        elif role == PRODUCE:
            self.cx.produce(ref, axis)
        elif role == SCALE:
            src = self.cx._param_source(ref, axis)
            if src is not None:
                self.cx.param(src[0], src[1], SCALE)
        return info.layouts[axis]

    def weight_axis(self, axis: int, role: str) -> Layout:
        """``axis("weight", ...)``: every convolution has a weight."""
        lay = self.axis("weight", axis, role)
        if lay is None:
            raise RuleError("convolution without a weight")
        return lay


def _blocks(cx: RuleContext, layout: Layout, groups: int, what: str) -> Layout:
    """Cut a channel layout into ``groups`` equal blocks that share one map; return block 0."""
    pieces = cx.spaces.equal_blocks(
        layout,
        groups,
        cx.blocker(f"{what} blocks"),
        cx.blocker(f"{what}: every group of a grouped conv must grow alike"),
    )
    return pieces[0]


def conv_channels(
    cx: RuleContext, x: Layout, w: _Weights, groups: int, cin: int, cout: int
) -> Layout:
    """Couple the input channel layout ``x`` to the weights; return the output channel layout."""
    if groups == 1:
        cx.unify(x, w.weight_axis(1, CONSUME), "input channels of a conv")
        out = w.weight_axis(0, PRODUCE)
    elif groups == cin:
        mult = cout // cin
        out = cx.spaces.merge(x, cx.fixed(mult, "depthwise channel multiplier")) if mult > 1 else x
        cx.unify(out, w.weight_axis(0, SCALE), "depthwise conv")
    else:
        local = _blocks(cx, x, groups, "input channel")
        cx.unify(local, w.weight_axis(1, CONSUME), "input channels of a grouped conv")
        out = w.weight_axis(0, PRODUCE)
        _blocks(cx, out, groups, "output channel")
    b = w.axis("bias", 0, SCALE if groups == cin and groups > 1 else PRODUCE)
    if b is not None:
        cx.unify(out, b, "conv bias")
    return out


def conv_transpose_channels(
    cx: RuleContext, x: Layout, w: _Weights, groups: int, cin: int, cout: int
) -> Layout:
    """Couple the input channel layout ``x`` to a transposed conv's weights (``[cin, cout/g,
    ...]``); return the output channel layout.  Only dense and depthwise ones are handled."""
    if groups == 1:
        cx.unify(x, w.weight_axis(0, CONSUME), "input channels of a transposed conv")
        out = w.weight_axis(1, PRODUCE)
    elif groups == cin == cout:
        cx.unify(x, w.weight_axis(0, SCALE), "depthwise transposed conv")
        out = x
    else:
        raise RuleError(
            "grouped transposed convolution (1 < groups, not depthwise) is not supported"
        )
    b = w.axis("bias", 0, PRODUCE)
    if b is not None:
        cx.unify(out, b, "conv bias")
    return out


def spatial_axes(cx: RuleContext, x: TensorInfo, first: int, pointwise: bool) -> tuple:
    """Output layouts of the spatial axes (from ``first`` on).  A pointwise window (kernel 1,
    stride 1, no padding) keeps each position; any other window mixes or drops positions, so
    the input's spatial axes must keep their size (blocked) and the output's are fixed."""
    shape = cx.out_shape()
    if pointwise and shape[first:] == x.shape[first:]:
        return x.layouts[first:]
    for lay in x.layouts[first:]:
        cx.block(lay, "spatial axis read by a sliding window: its size is fixed")
    return tuple(cx.fixed(n, "spatial axis") for n in shape[first:])


def _pointwise(m) -> bool:
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,)
    st = m.stride if isinstance(m.stride, tuple) else (m.stride,)
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
    return (
        all(v == 1 for v in (*k, *st))
        and all(v in (0, "valid") for v in pad)
        and getattr(m, "padding_mode", "zeros") == "zeros"
        and all(v == 0 for v in getattr(m, "output_padding", (0,)))
    )


def _conv_module(cx: RuleContext, channels) -> TensorInfo:
    m = cx.module_as(nn.modules.conv._ConvNd)
    x = cx.tensor(cx.arg(0))
    unbatched = x.ndim == m.weight.dim() - 1
    ch = 0 if unbatched else 1
    w = _Weights(cx, "weight", "bias" if m.bias is not None else None)
    xin = x.layouts[ch]
    out = channels(cx, xin, w, m.groups, m.in_channels, m.out_channels)
    cx.size_attr("in_channels", xin)
    cx.size_attr("out_channels", out)
    if m.groups == m.in_channels and m.groups > 1:  # depthwise: one group per channel
        cx.size_attr("groups", xin)
    lead = () if unbatched else (x.layouts[0],)
    return cx.out(lead + (out,) + spatial_axes(cx, x, ch + 1, _pointwise(m)))


@rule(*_CONV)
def conv_module(cx: RuleContext):
    """nn.ConvNd: see the module docstring."""
    return _conv_module(cx, conv_channels)


@rule(*_CONV_T)
def conv_transpose_module(cx: RuleContext):
    """nn.ConvTransposeNd: input channels contracted (weight axis 0), outputs produced (axis 1)."""
    return _conv_module(cx, conv_transpose_channels)


def _depthwise_groups(cx: RuleContext, x: Layout, groups, groups_at: int) -> None:
    """The ``groups`` argument (positional index ``groups_at``) of a functional depthwise conv
    is the channel count: a constant is rewritten to the new width of ``x``; a size read at run
    time from a channel axis (``x.shape[1]``) follows the width by itself once that axis shares
    ``x``'s space."""
    v = cx.value(groups)
    if isinstance(v, SizeInfo):
        if len(v.layouts) != 1:
            raise RuleError("functional depthwise conv whose groups is computed from several sizes")
        cx.unify(x, v.layouts[0], "groups of a depthwise conv read from another tensor")
        cx.sizes_handled(v)
        return

    def new_args(size, args, kwargs):
        return with_argument(args, kwargs, groups_at, "groups", size(x))

    cx.rewrite_args(new_args, x)


@rule(F.conv1d, F.conv2d, F.conv3d, aten=("conv1d.default", "conv2d.default", "conv3d.default"))
@rule(
    F.conv1d,
    F.conv2d,
    F.conv3d,
    aten=("conv1d.default", "conv2d.default", "conv3d.default"),
    traits=("affine",),
)
def conv_function(cx: RuleContext):
    """F.convNd(x, weight, bias, stride, padding, dilation, groups).  Depthwise (groups =
    C_in > 1, a blur filter ``[C, 1, k, k]`` or a ``[1, 1, k, k]`` one expanded to C rows):
    filter rows and bias are per channel (copied with g) and ``groups`` becomes the new C_in,
    so output channel o still reads input channel o // multiplier only."""
    return _conv_call(cx, 6, transposed=False)


@rule(aten=("convolution.default",))
def aten_convolution(cx: RuleContext):
    """aten.convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding,
    groups): the core ATen convolution (every convNd and conv_transposeNd)."""
    return _conv_call(cx, 8, transposed=bool(cx.concrete(cx.arg(6, "transposed"))))


@rule(
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    aten=("conv_transpose1d.default", "conv_transpose2d.input", "conv_transpose3d.input"),
)
def conv_transpose_function(cx: RuleContext):
    """F.conv_transposeNd(x, weight, bias, stride, padding, output_padding, groups, dilation)."""
    return _conv_call(cx, 6, transposed=True)


def _conv_call(cx: RuleContext, groups_at: int, transposed: bool) -> TensorInfo:
    """A functional convolution whose ``groups`` is argument ``groups_at``."""
    x = cx.tensor(cx.arg(0, "input"))
    wref, bref = cx.arg(1, "weight"), cx.arg(2, "bias", None)
    groups_arg = cx.arg(groups_at, "groups", 1)
    groups = cx.concrete(groups_arg)
    wt = cx.example(wref)
    unbatched = x.ndim == wt.dim() - 1
    ch = 0 if unbatched else 1
    cin = x.shape[ch]
    cout = wt.shape[1] * groups if transposed else wt.shape[0]
    if groups == cin and groups > 1:
        _depthwise_groups(cx, x.layouts[ch], groups_arg, groups_at)
    channels = conv_transpose_channels if transposed else conv_channels
    out = channels(cx, x.layouts[ch], _Weights(cx, wref, bref), groups, cin, cout)
    for lay in cx.tensor(wref).layouts[2:]:
        cx.block(lay, "kernel size of a convolution", "structure")
    lead = () if unbatched else (x.layouts[0],)
    return cx.out(lead + (out,) + spatial_axes(cx, x, ch + 1, False))
