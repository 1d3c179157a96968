"""Indexing and size reads.

Integer indexing fixes the selected units and slicing cuts the layout (``join.window``); views
written out by hand (``t[0], t[1], t[2]``, ``x[..., i::s]``, ``x.shape[:-1] + (-1,)``) are
recognised in ``handwritten``.  size / shape reads are tracked: a size read from a channel axis
may only feed size arguments that are rewritten (see ``dependency._check_sizes``).
"""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.fx

from ..context import RuleContext, RuleError
from ..layout import Layout
from ..values import TENSOR_METADATA, SizeInfo, TensorInfo
from . import gather
from .handwritten import strided, unbound_by_hand
from .join import window
from .registry import rule


@rule(operator.getitem, traits=("moves_positions",))
def getitem(cx: RuleContext):
    """x[i]: element of a tuple (split outputs, sizes) or tensor indexing."""
    container = cx.value(cx.arg(0))
    idx = cx.concrete(cx.arg(1))
    if isinstance(container, (tuple, list)):
        return container[idx]
    if isinstance(container, SizeInfo):
        if not container.per_axis:
            raise RuleError("indexing a derived size")
        sel = container.layouts[idx]
        cx.sizes_handled(container)  # the result tracks the selected axes; the rest is unused
        if isinstance(idx, slice):
            return SizeInfo(tuple(sel), per_axis=True)
        return SizeInfo((sel,))
    if isinstance(container, TensorInfo):
        return _index_tensor(cx, container)
    return cx.example()


def _expand_ellipsis(raw, ndim: int, n_axes: int) -> list:
    """Index items with ``...`` replaced by the full slices it stands for."""
    items = list(raw) if isinstance(raw, tuple) else [raw]
    out = []
    for it in items:
        if it is Ellipsis:
            out += [slice(None)] * (ndim - n_axes)
        else:
            out.append(it)
    return out


def _index_tensor(cx: RuleContext, x: TensorInfo):
    """Basic indexing: ints select (the selected unit is fixed and its offset rewritten),
    slices cut (offsets rewritten; a step s on a channel axis is a view as (n / s, s), see
    ``handwritten.strided``, or blocks), None adds an axis."""
    raw = cx.node.args[1]
    items = list(raw) if isinstance(raw, tuple) else [raw]
    concrete = [
        slice(cx.concrete(it.start), cx.concrete(it.stop), cx.concrete(it.step))
        if isinstance(it, slice)
        else cx.concrete(it)
        for it in items
    ]
    if any(isinstance(c, (list, bool)) for c in concrete):
        raise RuleError("advanced (list or bool) indexing")
    n_axes = sum(1 for c in concrete if c is not None and c is not Ellipsis)
    if any(isinstance(c, torch.Tensor) for c in concrete):
        return gather.gather_index(cx, x, _expand_ellipsis(raw, x.ndim, n_axes))
    expanded_items = _expand_ellipsis(raw, x.ndim, n_axes)
    expanded = _expand_ellipsis(tuple(concrete), x.ndim, n_axes)
    out: list[Layout] = []
    rewrites: dict[int, Any] = {}
    axis = 0
    for k, c in enumerate(expanded):
        if c is None:
            out.append(cx.fixed(1, "axis added by indexing"))
            continue
        lay, n = x.layouts[axis], x.shape[axis]
        axis += 1
        if isinstance(c, int):
            i = c % n
            before, piece = window(cx, lay, i, i + 1, "index")
            if unbound_by_hand(cx, k, n):
                cx.block(
                    piece,
                    "every position selected by an integer index (an unbind "
                    "written out: the axis is not a channel space)",
                    "structure",
                )
            else:
                cx.block(piece, "selected by an integer index")
            if cx.spaces.roots(lay):
                rewrites[k] = ("int", before)
            continue
        if not isinstance(c, slice):
            raise RuleError(f"index {c!r}")
        if c == slice(None):
            out.append(lay)
            continue
        start, stop, step = c.indices(n)
        if step != 1:
            if (
                step > 1
                and n % step == 0
                and start < step
                and c.stop is None
                and cx.spaces.roots(lay)
            ):
                out.append(strided(cx, lay, k, step))
                continue
            cx.block(lay, "strided slice on this axis")
            out.append(cx.fixed(len(range(start, stop, step)), "strided slice"))
            continue
        before, piece = window(cx, lay, start, max(stop, start), "slice")
        out.append(piece)
        if cx.spaces.roots(lay):
            rewrites[k] = ("slice", before, piece)
    out.extend(x.layouts[axis:])
    if rewrites:
        for k in rewrites:
            it = expanded_items[k]
            vals = [it.start, it.stop, it.step] if isinstance(it, slice) else [it]
            cx.sizes_handled(*[cx.value(v) for v in vals])

        def new_args(size, args, kwargs):
            new_items = _expand_ellipsis(args[1], x.ndim, n_axes)
            for k, r in rewrites.items():
                if r[0] == "int":
                    new_items[k] = size(r[1])
                else:
                    s0 = size(r[1])
                    new_items[k] = slice(s0, s0 + size(r[2]), None)
            idx = (
                tuple(new_items) if isinstance(raw, tuple) or len(new_items) != 1 else new_items[0]
            )
            return (args[0], idx), kwargs

        cx.rewrite_args(new_args, *[lay for r in rewrites.values() for lay in r[1:]])
    return cx.out(out)


@rule("size", traits=("size_read", "reads_metadata"))
def size(cx: RuleContext):
    """x.size() / x.size(d): sizes read at run time, tracked by the axes they come from."""
    x = cx.tensor(cx.arg(0))
    d = cx.concrete(cx.arg(1, "dim", None))
    if d is None:
        return SizeInfo(x.layouts, per_axis=True)
    return SizeInfo((x.layouts[x.dim(d)],))


@rule("dim", traits=("size_read",))
@rule(
    "dim",
    "ndimension",
    "is_contiguous",
    "element_size",
    "is_floating_point",
    "get_device",
    traits=("reads_metadata",),
)
def metadata(cx: RuleContext):
    """Facts about a tensor that do not depend on channel widths (rank, dtype ...)."""
    cx.tensor(cx.arg(0))
    return cx.example()


@rule("numel", "nelement", traits=("reads_metadata",))
def numel(cx: RuleContext):
    """The number of elements depends on every axis's width: tracked like a size."""
    return SizeInfo(cx.tensor(cx.arg(0)).layouts)


@rule(builtins.getattr, traits=("size_read",))
def get_attribute(cx: RuleContext):
    """getattr(x, name): x.shape is a run-time size; x.T transposes; others are metadata."""
    obj = cx.value(cx.arg(0))
    name = cx.concrete(cx.arg(1))
    if isinstance(obj, TensorInfo):
        if name == "shape":
            return SizeInfo(obj.layouts, per_axis=True)
        if name in ("T", "mT", "mH", "H"):
            lay = list(obj.layouts)
            if name in ("T",):
                lay = list(reversed(lay))
            else:
                lay[-1], lay[-2] = lay[-2], lay[-1]
            return cx.out(lay)
        if name in ("data",):
            return cx.out(obj.layouts)
        if name in TENSOR_METADATA:
            return cx.example()
        raise RuleError(f"tensor attribute {name!r}")
    if isinstance(obj, (tuple, list)):  # torch.return_types: max(x, d).values, sort(..).indices
        ex = cx.example(cx.arg(0))
        item = getattr(ex, name, None)
        for i, v in enumerate(ex if isinstance(ex, (tuple, list)) else ()):
            if v is item and i < len(obj):
                return obj[i]
        raise RuleError(f"attribute {name!r} of a tuple")
    return cx.example()


@rule(torch._assert)
def assertion(cx: RuleContext):
    """torch._assert(cond, msg): computes nothing.  ``a == b`` on two sizes links the axes
    they were read from (they must stay equal in the student); a condition on any other size
    read from a channel axis blocks it (the check would fail in a wider student)."""
    cond = cx.arg(0, "condition")
    if (
        isinstance(cond, torch.fx.Node)
        and cond.op == "call_function"
        and cond.target is operator.eq
        and len(cond.args) == 2
    ):
        a, b = cx.value(cond.args[0]), cx.value(cond.args[1])
        if (
            isinstance(a, SizeInfo)
            and isinstance(b, SizeInfo)
            and len(a.layouts) == len(b.layouts) == 1
            and not a.per_axis
            and not b.per_axis
        ):
            cx.unify(a.layouts[0], b.layouts[0], "sizes asserted equal")
            cx.sizes_handled(cx.value(cond))
    return None


@rule(builtins.len)
def length(cx: RuleContext):
    """len(x): the first axis's size (tracked) or a container's length."""
    v = cx.value(cx.arg(0))
    if isinstance(v, TensorInfo):
        return SizeInfo((v.layouts[0],))
    if isinstance(v, SizeInfo):
        cx.sizes_handled(v)
    return cx.example()
