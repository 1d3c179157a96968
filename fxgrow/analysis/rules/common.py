"""Helpers shared by the op rules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..context import RuleContext, RuleError
from ..layout import Layout
from ..values import SizeInfo, TensorInfo


def same_layouts(cx: RuleContext, x: Any = None) -> TensorInfo:
    """Result has the layouts of ``x`` (the first argument by default), axis for axis."""
    info = cx.tensor(cx.arg(0) if x is None else x)
    return cx.out(info.layouts)


def broadcast(cx: RuleContext, operands: Iterable[Any]) -> TensorInfo:
    """Elementwise maths over broadcast operands.

    Replicating unit i of every operand the same way replicates unit i of the result, so every
    operand whose size on an axis equals the result's shares that axis's space.  An operand of
    size 1 broadcasts: it does not couple, but it must stay of size 1 (a [B,1,H,W] mask)."""
    shape = cx.out_shape()
    tensors = [v for v in (cx.value(o) for o in operands) if isinstance(v, TensorInfo)]
    if not tensors:
        raise RuleError("no tensor operand")
    out: list[Layout] = []
    for k in range(1, len(shape) + 1):
        n = shape[-k]
        along: list[Layout] = []
        for t in tensors:
            if t.ndim < k:
                continue
            if t.shape[-k] == n:
                along.append(t.layouts[-k])
            else:  # size 1 broadcast against n
                cx.block(t.layouts[-k], "broadcast against a wider axis: must stay of size 1")
        if not along:
            raise RuleError("cannot match operand shapes")
        for other in along[1:]:
            cx.unify(
                along[0], other, "operands of an elementwise op with different channel structure"
            )
        out.append(along[0])
    return cx.out(reversed(out))


def dim_arg(cx: RuleContext, i: int, name: str = "dim", default: Any = None) -> Any:
    """The concrete value of the dim argument at position ``i`` or keyword ``name``."""
    d = cx.arg(i, name, default)
    return cx.concrete(d)


def norm_dims(dims: Any, ndim: int) -> list[int]:
    """Normalise an int / sequence of dims (None means all)."""
    if dims is None:
        return list(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    return sorted({int(d) % ndim for d in dims})


def size_of(cx: RuleContext, v: Any) -> Any:
    """Mark a size argument (possibly read from a channel axis) as handled by this rule."""
    cx.sizes_handled(cx.value(v))
    return v


def sizes_in(cx: RuleContext, a: Any) -> list[SizeInfo]:
    """The SizeInfo values (ints read from shapes) anywhere inside argument ``a``."""
    from torch.utils import _pytree as pytree

    return [v for v in pytree.tree_leaves(cx.value(a)) if isinstance(v, SizeInfo)]
