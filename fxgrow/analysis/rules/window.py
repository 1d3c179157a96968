"""Sliding windows that copy positions out instead of reducing them.

* ``Tensor.unfold(d, size, step)``: axis ``d`` becomes the window index and a new last axis
  the offset inside the window, ``out[..., w, ..., k] = x[..., w * step + k, ...]``.  Every
  other axis passes through unchanged, so a channel axis keeps its space (unit c of the result
  is unit c of the input).  Axis ``d`` is read by position: its size is fixed.
* ``nn.Unfold`` / ``F.unfold`` (im2col) on ``[N, C, *S]``: the result is ``[N, C * K, L]``
  with row ``c * K + k`` the kernel offset ``k`` of channel ``c`` (``K`` = kernel volume), i.e.
  channel x a fixed factor: c -> [c K, (c + 1) K), as a flatten of channel x spatial.  The
  spatial axes are read by position (fixed), ``L`` (the window index) is fixed.
* ``nn.Fold`` / ``F.fold`` (col2im), the inverse: ``[N, C * K, L] -> [N, C, *S]``, row
  ``c * K + k`` summed into channel ``c``.  The rows are factored as (C, K): C is the result's
  channel space, K (kernel offsets) and L are positions.  The sum of overlapping windows is per
  channel, so replicated rows give replicated channels.
"""

from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F

from ..context import RuleContext, RuleError
from .registry import rule


@rule("unfold")
def tensor_unfold(cx: RuleContext):
    """Tensor.unfold(dimension, size, step): see the module docstring."""
    x = cx.tensor(cx.arg(0))
    d = cx.concrete(cx.arg(1, "dimension"))
    size = cx.concrete(cx.arg(2, "size"))
    if not isinstance(d, int) or not isinstance(size, int):
        raise RuleError("unfold with a dimension or window size that is not a constant")
    d = x.dim(d)
    shape = cx.out_shape()
    cx.block(x.layouts[d], "axis cut into sliding windows: its size is fixed")
    layouts = list(x.layouts)
    layouts[d] = cx.fixed(shape[d], "window index of unfold")
    return cx.out([*layouts, cx.fixed(size, "offset inside an unfold window")])


@rule(nn.Unfold, F.unfold)
def im2col(cx: RuleContext):
    """nn.Unfold / F.unfold (im2col): see the module docstring."""
    x = cx.tensor(cx.arg(0, "input"))
    kernel: int | tuple[int, ...]
    if cx.module is not None:
        kernel = cx.module_as(nn.Unfold).kernel_size
    else:
        kernel = cx.concrete(cx.arg(1, "kernel_size"))
    if x.ndim not in (3, 4):
        raise RuleError(f"unfold of a {x.ndim}-d input")
    ch = x.ndim - 3  # (C, H, W) unbatched or (N, C, H, W)
    kernel = (kernel,) * 2 if isinstance(kernel, int) else tuple(kernel)
    k = math.prod(kernel)
    for lay in x.layouts[ch + 1 :]:
        cx.block(lay, "spatial axis read by a sliding window: its size is fixed")
    rows = (
        x.layouts[ch]
        if k == 1
        else cx.spaces.merge(x.layouts[ch], cx.fixed(k, "kernel offset of unfold"))
    )
    shape = cx.out_shape()
    return cx.out([*x.layouts[:ch], rows, cx.fixed(shape[-1], "window index of unfold")])


@rule(nn.Fold, F.fold)
def col2im(cx: RuleContext):
    """nn.Fold / F.fold (col2im): see the module docstring."""
    x = cx.tensor(cx.arg(0, "input"))
    kernel: int | tuple[int, ...]
    if cx.module is not None:
        kernel = cx.module_as(nn.Fold).kernel_size
    else:
        kernel = cx.concrete(cx.arg(2, "kernel_size"))
    if x.ndim not in (2, 3):
        raise RuleError(f"fold of a {x.ndim}-d input")
    ch = x.ndim - 2  # (C K, L) unbatched or (N, C K, L)
    kernel = (kernel,) * 2 if isinstance(kernel, int) else tuple(kernel)
    k = math.prod(kernel)
    cx.block(x.layouts[-1], "window index of fold: its size is fixed")
    if k == 1:
        rows = x.layouts[ch]
    else:
        rows, offsets = cx.spaces.split(x.layouts[ch], k, cx.blocker("fold rows"))
        cx.block(offsets, "kernel offsets of fold", "structure")
    shape = cx.out_shape()
    return cx.out([*x.layouts[:ch], rows, *(cx.fixed(n, "spatial axis") for n in shape[ch + 1 :])])
