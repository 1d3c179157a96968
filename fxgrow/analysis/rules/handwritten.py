"""Views and sizes that models write out by hand, recognised as what they are.

* ``q, k, v = t[0], t[1], t[2]`` taking every position of an axis is ``unbind`` (the "3" of
  a fused qkv): a structure, not a channel space refused by integer indexing.
* ``x[..., i::s]`` is ``x`` viewed as ``(n / s, s)`` with offset ``i`` of the inner axis taken
  (RoPE's pairs): the outer factor grows, the inner stays.
* ``reshape(x.shape[:-1] + (-1,))``: a shape joined at run time, entry by entry.
"""

from __future__ import annotations

import operator

import torch
import torch.fx

from ..context import RuleContext, RuleError
from ..layout import Layout
from ..values import SizeInfo


def run_time_entries(cx: RuleContext, layouts: tuple, entries) -> None:
    """A shape built at run time entry by entry (``x.shape[:-1] + (-1,)``): an entry read from
    one axis sizes the result's axis, so the two share a space (it follows the width by
    itself); ``-1`` follows the width; a literal size on a channel axis cannot be rewritten
    inside the run-time value."""
    for lay, e in zip(layouts, entries):
        if isinstance(e, SizeInfo) and len(e.layouts) == 1 and not e.per_axis:
            cx.unify(lay, e.layouts[0], "shape read at run time from another tensor")
            cx.sizes_handled(e)
        elif isinstance(e, SizeInfo) or (cx.spaces.roots(lay) and e != -1):
            raise RuleError(
                "the target shape is one run-time value with a channel entry "
                "computed or written as a constant; fxgrow cannot rewrite it"
            )


def _int_position(cx: RuleContext, node: torch.fx.Node) -> tuple[int, int] | None:
    """(axis, index) of ``x[:, ..., :, i]`` (full slices, then one int), else None."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    raw = node.args[1]
    items = list(raw) if isinstance(raw, tuple) else [raw]
    if not all(isinstance(it, slice) and it == slice(None) for it in items[:-1]):
        return None
    last = cx.concrete(items[-1])
    return (len(items) - 1, last) if type(last) is int else None


def unbound_by_hand(cx: RuleContext, axis: int, n: int) -> bool:
    """``q, k, v = qkv[0], qkv[1], qkv[2]``: every position of the axis is taken out by an
    integer index, which is ``unbind`` written out (the "3" of a fused qkv): that axis is a
    structure, not a channel space that an op refuses."""
    here = _int_position(cx, cx.node)
    src = cx.node.args[0]
    if here is None or here[0] != axis or not isinstance(src, torch.fx.Node):
        return False
    taken = {
        p[1] % n for u in src.users if (p := _int_position(cx, u)) is not None and p[0] == axis
    }
    return taken == set(range(n))


def strided(cx: RuleContext, lay: Layout, axis: int, step: int) -> Layout:
    """``x[..., i::s]`` on an axis of size ``n = m s`` with ``i < s`` is ``x`` viewed as
    ``(m, s)`` with offset ``i`` taken from the inner axis (RoPE's ``x[..., ::2]`` and
    ``x[..., 1::2]``: the two halves of each pair).  The axis is factored as
    ``Prod(outer, inner)``: the outer ``m`` units grow (unit o keeps its ``s`` positions
    together, so the same ``i::s`` picks the copies) and the inner ``s`` stays, which the
    unchanged slice needs.  Taking every offset by such slices is a view written out
    (structure); one offset alone fixes the inner factor as an integer index does."""
    outer, inner = cx.spaces.split(lay, step, cx.blocker("strided slice"))
    src = cx.node.args[0]
    offsets = {
        p[1]
        for u in (src.users if isinstance(src, torch.fx.Node) else ())
        if (p := _stride_of(cx, u)) is not None and p[0] == axis and p[2] == step
    }
    if offsets == set(range(step)):
        cx.block(
            inner, "every offset taken by strided slices (a view as (n / step, step))", "structure"
        )
    else:
        cx.block(inner, "strided slice: the step must stay")
    return outer


def _stride_of(cx: RuleContext, node: torch.fx.Node) -> tuple[int, int, int] | None:
    """(axis, start, step) of ``x[:, ..., :, i::s]`` or ``x[..., i::s]`` (one strided slice,
    the rest full slices), else None."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    x = cx.example(node.args[0])
    if not isinstance(x, torch.Tensor):
        return None
    raw = node.args[1]
    items = list(raw) if isinstance(raw, tuple) else [raw]
    if items and items[0] is Ellipsis:
        items = [slice(None)] * (x.dim() - len(items) + 1) + items[1:]
    if not items or not all(isinstance(it, slice) and it == slice(None) for it in items[:-1]):
        return None
    last = items[-1]
    if not isinstance(last, slice) or last.stop is not None:
        return None
    start, step = cx.concrete(last.start) or 0, cx.concrete(last.step) or 1
    return (len(items) - 1, start, step) if type(start) is int and type(step) is int else None
