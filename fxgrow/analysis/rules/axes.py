"""Ops that move, add, drop or tile axes.

permute / transpose / squeeze / unsqueeze / expand / repeat: axes move, appear or tile (repeat:
o -> o mod C; repeat_interleave: o -> o // r); expand's size entries on channel axes become -1
so that they keep the input's size.
"""

from __future__ import annotations

import torch
import torch.fx
from torch.utils import _pytree as pytree

from ..context import RuleContext, RuleError
from ..values import SizeInfo
from .registry import rule
from .shape import _rewrite_sizes


@rule(torch.permute, "permute", aten=("permute.default",), traits=("keeps_zero", "permute_axes"))
def permute(cx: RuleContext):
    """permute(dims): axes are reordered."""
    x = cx.tensor(cx.arg(0))
    dims = cx.concrete(
        list(cx.node.args[1:]) if "dims" not in cx.node.kwargs else cx.node.kwargs["dims"]
    )
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = dims[0]
    return cx.out(tuple(x.layouts[x.dim(d)] for d in dims))


@rule(torch.transpose, "transpose", aten=("transpose.int",), traits=("keeps_zero", "swap_axes"))
@rule(
    torch.transpose,
    "transpose",
    torch.swapaxes,
    "swapaxes",
    torch.swapdims,
    "swapdims",
    aten=("transpose.int", "swapaxes.default"),
)
@rule(
    torch.swapaxes,
    "swapaxes",
    torch.swapdims,
    "swapdims",
    aten=("swapaxes.default",),
    traits=("swap_axes",),
)
def transpose(cx: RuleContext):
    """transpose(d0, d1): two axes swap."""
    x = cx.tensor(cx.arg(0))
    d0, d1 = x.dim(cx.concrete(cx.arg(1, "dim0"))), x.dim(cx.concrete(cx.arg(2, "dim1")))
    lay = list(x.layouts)
    lay[d0], lay[d1] = lay[d1], lay[d0]
    return cx.out(lay)


@rule(torch.t, "t", aten=("t.default",), traits=("matrix_transpose",))
def t(cx: RuleContext):
    """t(): a 2-d transpose."""
    x = cx.tensor(cx.arg(0))
    return cx.out(tuple(reversed(x.layouts)))


@rule(torch.movedim, "movedim", torch.moveaxis, "moveaxis", aten=("movedim.int",))
def movedim(cx: RuleContext):
    """movedim(source, destination)."""
    x = cx.tensor(cx.arg(0))
    src, dst = cx.concrete(cx.arg(1, "source")), cx.concrete(cx.arg(2, "destination"))
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    src, dst = [x.dim(s) for s in src], [x.dim(d) for d in dst]
    order = [d for d in range(x.ndim) if d not in src]
    for s, d in sorted(zip(dst, src)):
        order.insert(s, d)
    return cx.out(tuple(x.layouts[d] for d in order))


@rule(torch.unsqueeze, "unsqueeze", aten=("unsqueeze.default",))
def unsqueeze(cx: RuleContext):
    """unsqueeze(d): a new fixed axis of size 1."""
    x = cx.tensor(cx.arg(0))
    d = cx.concrete(cx.arg(1, "dim"))
    d = d % (x.ndim + 1)
    lay = list(x.layouts)
    lay.insert(d, cx.fixed(1, "axis added by unsqueeze"))
    return cx.out(lay)


@rule(torch.squeeze, "squeeze", aten=("squeeze.dim", "squeeze.dims", "squeeze.default"))
def squeeze(cx: RuleContext):
    """squeeze(dims): size-1 axes disappear (a size-1 channel space must then stay size 1)."""
    x = cx.tensor(cx.arg(0))
    dims = cx.concrete(cx.arg(1, "dim", None))
    dims = (
        [d for d in range(x.ndim)]
        if dims is None
        else [x.dim(d) for d in ([dims] if isinstance(dims, int) else dims)]
    )
    keep = []
    for d, (n, lay) in enumerate(zip(x.shape, x.layouts)):
        if d in dims and n == 1:
            cx.block(lay, "size-1 axis removed by squeeze")
        else:
            keep.append(lay)
    return cx.out(keep)


@rule("expand", torch.broadcast_to, "broadcast_to", aten=("expand.default",))
def expand(cx: RuleContext):
    """expand(sizes): size-1 axes repeat (they must stay size 1); new leading axes are fixed.
    Size entries on channel axes become -1 (keep the input's size)."""
    x = cx.tensor(cx.arg(0))
    shape = cx.out_shape()
    lead = len(shape) - x.ndim
    layouts = [cx.fixed(n, "axis added by expand") for n in shape[:lead]]
    for n, lay, m in zip(x.shape, x.layouts, shape[lead:]):
        if n == m:
            layouts.append(lay)
        else:
            cx.block(lay, "expanded from size 1: must stay of size 1")
            layouts.append(cx.fixed(m, "expanded axis"))
    _rewrite_sizes(cx, tuple(layouts), 1, "expand")
    return cx.out(layouts)


@rule("expand_as", aten=("expand_as.default",))
def expand_as(cx: RuleContext):
    """expand_as(other): axes of equal size are shared with ``other``; size-1 axes expand."""
    x, other = cx.tensor(cx.arg(0)), cx.tensor(cx.arg(1))
    lead = other.ndim - x.ndim
    layouts = list(other.layouts[:lead])
    for n, lay, olay, m in zip(x.shape, x.layouts, other.layouts[lead:], other.shape[lead:]):
        if n == m:
            cx.unify(lay, olay, "expand_as")
        else:
            cx.block(lay, "expanded from size 1: must stay of size 1")
        layouts.append(olay)
    return cx.out(layouts)


@rule("repeat", torch.tile, "tile", aten=("repeat.default",))
def repeat(cx: RuleContext):
    """repeat(r...): an axis repeated r times is tiled: o -> o mod C (a fixed factor outside)."""
    x = cx.tensor(cx.arg(0))
    reps = cx.concrete(list(cx.node.args[1:]))
    if len(reps) == 1 and isinstance(reps[0], (list, tuple)):
        reps = list(reps[0])
    read = [r for r in pytree.tree_leaves(cx.value(cx.node.args[1:])) if isinstance(r, SizeInfo)]
    for r in read:  # the counts stay constants: the axes they are read from must keep their size
        for lay in r.layouts:
            cx.block(lay, "repeat counts are read from the size of this axis", "structure")
    cx.sizes_handled(*read)
    lead = len(reps) - x.ndim
    if lead < 0:  # torch.tile pads the repeats with ones
        reps, lead = [1] * -lead + reps, 0
    layouts = [cx.fixed(r, "axis added by repeat") for r in reps[:lead]]
    for r, lay in zip(reps[lead:], x.layouts):
        layouts.append(lay if r == 1 else cx.spaces.merge(cx.fixed(r, "repeat count"), lay))
    return cx.out(layouts)


@rule(torch.repeat_interleave, "repeat_interleave")
def repeat_interleave(cx: RuleContext):
    """repeat_interleave(r, dim): o -> o // r (a fixed factor inside)."""
    x = cx.tensor(cx.arg(0))
    r = cx.concrete(cx.arg(1, "repeats"))
    d = cx.concrete(cx.arg(2, "dim", None))
    if not isinstance(r, int) or d is None:
        raise RuleError("repeat_interleave with tensor repeats or without dim")
    d = x.dim(d)
    lay = list(x.layouts)
    lay[d] = cx.spaces.merge(lay[d], cx.fixed(r, "repeat count"))
    return cx.out(lay)


@rule(
    torch.flip,
    "flip",
    torch.roll,
    "roll",
    torch.fliplr,
    torch.flipud,
    aten=("flip.default", "roll.default"),
)
def flip(cx: RuleContext):
    """flip/roll: a reordering of positions; fine on fixed axes, blocks channel axes."""
    x = cx.tensor(cx.arg(0))
    rolls = (torch.roll, "roll", torch.ops.aten.roll.default)
    dims = cx.concrete(cx.arg(2 if cx.node.target in rolls else 1, "dims", None))
    dims = range(x.ndim) if dims is None else ([dims] if isinstance(dims, int) else dims)
    for d in dims:
        cx.block(x.layouts[x.dim(d)], "positions reordered (flip/roll)")
    return cx.out(x.layouts)
