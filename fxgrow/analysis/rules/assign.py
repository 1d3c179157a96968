"""Item assignment into a tensor: ``t[key] = v`` (``operator.setitem``).

The written positions take ``v``'s values; fxgrow does not follow which units of ``t`` they
are.  Where every axis of ``t`` and ``v`` is fixed (a table built from sizes, as timm's
ConViT builds its relative positions) nothing can change with a width and the write is
exact; otherwise every channel space of both is blocked."""

from __future__ import annotations

import operator

from ..context import RuleContext, RuleError
from ..values import TensorInfo
from .common import sizes_in
from .registry import rule


@rule(operator.setitem)
def setitem(cx: RuleContext):
    """t[key] = v: exact when t and v hold no channel space (fixed axes); blocks otherwise."""
    target = cx.value(cx.arg(0))
    if not isinstance(target, TensorInfo):
        raise RuleError("item assignment into a value that is not a tensor")
    value = cx.value(cx.arg(2))
    layouts = [*target.layouts, *(value.layouts if isinstance(value, TensorInfo) else ())]
    for size in sizes_in(cx, (cx.arg(1), cx.arg(2))):
        layouts.extend(size.layouts)
        cx.sizes_handled(size)
    for lay in layouts:
        if not cx.spaces.is_fixed(lay):
            cx.block(
                lay,
                "written by item assignment (t[key] = v): fxgrow does not follow "
                "which units are written",
            )
    return None
