"""Ops that move, merge, cut and join axes.

* view / reshape / flatten / unflatten: axes are matched by products of sizes; merged axes get a
  row-major product layout (channel x spatial: c -> [c S, (c+1) S); channels-last: s C + c), a
  split axis is factored (heads: c = h D + d).  Size constants that lie on channel axes are
  rewritten to the new sizes (``-1`` stays ``-1``).
* permute / transpose / squeeze / unsqueeze / expand / repeat: axes move, appear or tile
  (repeat: o -> o mod C; repeat_interleave: o -> o // r).
* cat: input k occupies [off_k, off_k + C_k) of the result (the same tensor twice gives two
  segments with one map); split / narrow / slicing cut the layout at offsets, which are
  rewritten; chunk and equal splits tie the pieces to one map; unbind and integer indexing fix
  the selected units.  Views written out by hand (``t[0], t[1], t[2]``, ``x[..., i::s]``,
  ``x.shape[:-1] + (-1,)``) are recognised in ``handwritten``.
* size / shape reads are tracked: a size read from a channel axis may only feed size arguments
  that are rewritten (see ``dependency._check_sizes``).
"""
from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils import _pytree as pytree

from ..context import RuleContext, RuleError
from ..layout import Fixed, Layout, Zip
from ..values import SizeInfo, TensorInfo
from . import gather
from .handwritten import run_time_entries, strided, unbound_by_hand
from .registry import aten_op, rule


# -- reshape ---------------------------------------------------------------------------------
def reshape_layouts(cx: RuleContext, x: TensorInfo, out_shape: tuple) -> tuple:
    """Layouts of ``x`` viewed as ``out_shape`` (row-major)."""
    sp = cx.spaces
    ins, outs = x.shape, tuple(out_shape)
    result: list[Layout] = []
    i = j = 0
    while i < len(ins) or j < len(outs):
        if i < len(ins) and ins[i] == 1 and (j >= len(outs) or outs[j] != 1):
            cx.block(x.layouts[i], "size-1 axis removed by a reshape")
            i += 1
            continue
        if j < len(outs) and outs[j] == 1 and (i >= len(ins) or ins[i] != 1):
            result.append(cx.fixed(1, "axis added by a reshape"))
            j += 1
            continue
        if i >= len(ins) or j >= len(outs):
            raise RuleError("reshape sizes do not match")
        i1, j1, pi, pj = i + 1, j + 1, ins[i], outs[j]
        while pi != pj:
            if pi < pj:
                pi *= ins[i1]
                i1 += 1
            else:
                pj *= outs[j1]
                j1 += 1
        merged = x.layouts[i]
        for lay in x.layouts[i + 1:i1]:
            merged = sp.merge(merged, lay)
        pieces: list[Layout] = []
        for k in reversed(range(j + 1, j1)):
            merged, piece = sp.split(merged, outs[k], cx.blocker("reshape"))
            pieces.insert(0, piece)
        result.extend([merged, *pieces])
        i, j = i1, j1
    return tuple(result)


def _shape_arg_positions(cx: RuleContext, first: int):
    """The shape given to view/reshape/expand: (container, is_varargs)."""
    for key in ("shape", "size"):
        if key in cx.node.kwargs:
            return cx.node.kwargs[key], False
    args = cx.node.args[first:]
    if len(args) == 1 and not isinstance(cx.concrete(args[0]), int):
        return args[0], False
    return tuple(args), True


def _rewrite_sizes(cx: RuleContext, layouts: tuple, first: int, keep: str) -> None:
    """Rewrite the size entries that lie on channel axes (``keep``: value left as-is, e.g. -1
    for view; for expand, channel entries become -1 so they keep the input's size)."""
    container, varargs = _shape_arg_positions(cx, first)
    if not any(cx.spaces.roots(lay) for lay in layouts):
        return
    if isinstance(container, torch.fx.Node):
        v = cx.value(container)
        if isinstance(v, SizeInfo) and v.per_axis and len(v.layouts) == len(layouts):
            # y.view(x.shape): the shape is read from x at run time, so it follows x's
            # widths; exact when every axis of the result shares x's axis spaces
            for lay, src in zip(layouts, v.layouts):
                cx.unify(lay, src, "shape read at run time from another tensor")
            cx.sizes_handled(v)
            return
        if isinstance(v, (tuple, list)) and len(v) == len(layouts):
            run_time_entries(cx, layouts, v)
            return
        raise RuleError("the target shape is one run-time value; fxgrow cannot rewrite its "
                        "channel entries")
    entries = list(container)
    if len(entries) != len(layouts):
        raise RuleError("shape arguments do not match the result's rank")
    positions = [k for k, lay in enumerate(layouts) if cx.spaces.roots(lay)]
    for k in positions:
        cx.sizes_handled(cx.value(entries[k]))

    def replace(entries, size):
        new = list(entries)
        for k in positions:
            if keep == "minus-one" and isinstance(new[k], int) and new[k] == -1:
                continue
            new[k] = -1 if keep == "expand" else size(layouts[k])
        return new

    def new_args(size, args, kwargs):
        for key in ("shape", "size"):
            if key in kwargs:
                return args, {**kwargs, key: tuple(replace(kwargs[key], size))}
        if varargs:
            return (*args[:first], *replace(args[first:], size)), kwargs
        return (*args[:first], tuple(replace(args[first], size)), *args[first + 1:]), kwargs

    cx.rewrite_args(new_args, *layouts)


_aten = torch.ops.aten


def _is(node: torch.fx.Node, methods: tuple, functions: tuple) -> bool:
    return (node.op == "call_method" and node.target in methods) or \
        (node.op == "call_function" and node.target in functions)


def _only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _shuffle_axis(cx: RuleContext, x: TensorInfo, shape: tuple) -> int | None:
    """The axis d if this reshape is the first step of a channel shuffle written by hand:
    ``view(.., g, C/g, ..)`` splitting axis d, then ``transpose(d, d+1)``, optionally
    ``contiguous()``, then a reshape/flatten that merges the two axes back into C.  Its rows
    then keep their own maps (they become a Zip) instead of sharing one."""
    ins = x.shape
    if len(shape) != len(ins) + 1:
        return None
    d = next((k for k in range(len(ins)) if shape[k] != ins[k]), None)
    if d is None or shape[:d] != ins[:d] or shape[d + 2:] != ins[d + 1:] or \
            shape[d] * shape[d + 1] != ins[d] or shape[d] < 2:
        return None
    t = _only_user(cx.node)
    if t is None or not _is(t, ("transpose", "swapaxes", "swapdims"),
                            (torch.transpose, torch.swapaxes, torch.swapdims,
                             _aten.transpose.int, _aten.swapaxes.default)):
        return None
    dims = cx.concrete([t.args[i] if i < len(t.args) else t.kwargs.get(k)
                        for i, k in ((1, "dim0"), (2, "dim1"))])
    if sorted(k % len(shape) for k in dims if isinstance(k, int)) != [d, d + 1]:
        return None
    m = _only_user(t)
    if m is not None and _is(m, ("contiguous",), (_aten.contiguous.default, _aten.clone.default)):
        m = _only_user(m)
    if m is None or not _is(m, ("view", "reshape", "flatten"), (
            torch.reshape, torch.flatten, _aten.view.default, _aten.reshape.default,
            _aten._unsafe_view.default, _aten.flatten.using_ints)):
        return None
    out = cx.example(m)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(ins):
        return None
    return d


def _several_spaces(cx: RuleContext, layout: Layout) -> bool:
    """A layout of several segments, or an interleave: a shuffle keeps its rows apart."""
    segs = cx.spaces.resolve(layout)
    return len(segs) > 1 or isinstance(segs[0], Zip)


_AS_OTHER = ("view_as", "reshape_as", aten_op("view_as.default"), aten_op("reshape_as.default"))


@rule("view", "reshape", torch.reshape,
      aten=("view.default", "reshape.default", "_unsafe_view.default"),
      traits=("keeps_zero", "reshape"))
@rule("view", "reshape", torch.reshape, "view_as", "reshape_as",
      aten=("view.default", "reshape.default", "_unsafe_view.default", "view_as.default",
            "reshape_as.default"))
def reshape(cx: RuleContext):
    """view/reshape: see the module docstring.  The first reshape of a channel shuffle keeps
    its rows apart (see ``_shuffle_axis``)."""
    x = cx.tensor(cx.arg(0))
    shape = cx.out_shape()
    if cx.node.target in _AS_OTHER:
        other = cx.tensor(cx.arg(1))
        layouts = reshape_layouts(cx, x, shape)
        for a, b in zip(layouts, other.layouts):
            cx.unify(a, b, "view_as/reshape_as target")
        return cx.out(layouts)
    if cx.node.target == "view" and len(cx.node.args) == 2 and \
            isinstance(cx.concrete(cx.node.args[1]), torch.dtype):
        raise RuleError("view as another dtype")
    d = _shuffle_axis(cx, x, shape)
    if d is not None and _several_spaces(cx, x.layouts[d]):
        g = shape[d]
        rows = cx.spaces.stack(x.layouts[d], g, cx.blocker("channel shuffle"))
        layouts = (*x.layouts[:d], cx.fixed(g, "channel shuffle groups"), rows,
                   *x.layouts[d + 1:])
    else:
        layouts = reshape_layouts(cx, x, shape)
    _rewrite_sizes(cx, layouts, 1, "minus-one")
    return cx.out(layouts)


def _flatten(cx: RuleContext, x: TensorInfo, start: int, end: int):
    if x.ndim == 0:
        return cx.out((cx.fixed(1, "flatten of a scalar"),))
    start, end = x.dim(start), x.dim(end)
    merged = x.layouts[start]
    for lay in x.layouts[start + 1:end + 1]:
        merged = cx.spaces.merge(merged, lay)
    return cx.out(x.layouts[:start] + (merged,) + x.layouts[end + 1:])


@rule(torch.flatten, "flatten", aten=("flatten.using_ints",), traits=("keeps_zero", "reshape"))
def flatten(cx: RuleContext):
    """flatten(start_dim, end_dim): the axes merge row-major (channel x spatial: c S + s)."""
    x = cx.tensor(cx.arg(0))
    return _flatten(cx, x, cx.concrete(cx.arg(1, "start_dim", 0)),
                    cx.concrete(cx.arg(2, "end_dim", -1)))


@rule(nn.Flatten)
def flatten_module(cx: RuleContext):
    """nn.Flatten: as torch.flatten with the module's start_dim/end_dim."""
    return _flatten(cx, cx.tensor(cx.arg(0)), cx.module.start_dim, cx.module.end_dim)


@rule(torch.unflatten, "unflatten", nn.Unflatten, aten=("unflatten.int",))
@rule(torch.unflatten, "unflatten", aten=("unflatten.int",), traits=("reshape",))
def unflatten(cx: RuleContext):
    """unflatten(dim, sizes): one axis factored into several (row-major)."""
    x = cx.tensor(cx.arg(0))
    shape = cx.out_shape()
    layouts = reshape_layouts(cx, x, shape)
    if cx.module is not None:
        d = x.dim(cx.module.dim)
        k = len(cx.module.unflattened_size)
        new = layouts[d:d + k]
        if any(cx.spaces.roots(lay) for lay in new):
            old = tuple(cx.module.unflattened_size)
            cx.set_attr("unflattened_size", lambda size: tuple(
                -1 if o == -1 else size(lay) for o, lay in zip(old, new)), *new)
        return cx.out(layouts)
    d = x.dim(cx.concrete(cx.arg(1, "dim")))
    sizes = cx.arg(2, "sizes")
    k = len(sizes)
    new = layouts[d:d + k]
    if any(cx.spaces.roots(lay) for lay in new):
        for s in sizes:
            cx.sizes_handled(cx.value(s))

        def new_args(size, args, kwargs):
            vals = tuple(-1 if s == -1 else size(lay) for s, lay in zip(sizes, new))
            if len(args) > 2:
                return (*args[:2], vals, *args[3:]), kwargs
            return args, {**kwargs, "sizes": vals}
        cx.rewrite_args(new_args, *new)
    return cx.out(layouts)


# -- moving axes -----------------------------------------------------------------------------
@rule(torch.permute, "permute", aten=("permute.default",), traits=("keeps_zero", "permute_axes"))
def permute(cx: RuleContext):
    """permute(dims): axes are reordered."""
    x = cx.tensor(cx.arg(0))
    dims = cx.concrete(list(cx.node.args[1:]) if "dims" not in cx.node.kwargs
                       else cx.node.kwargs["dims"])
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = dims[0]
    return cx.out(tuple(x.layouts[x.dim(d)] for d in dims))


@rule(torch.transpose, "transpose", aten=("transpose.int",), traits=("keeps_zero", "swap_axes"))
@rule(torch.transpose, "transpose", torch.swapaxes, "swapaxes", torch.swapdims, "swapdims",
      aten=("transpose.int", "swapaxes.default"))
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
    dims = [d for d in range(x.ndim)] if dims is None else \
        [x.dim(d) for d in ([dims] if isinstance(dims, int) else dims)]
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
    if any(cx.spaces.roots(lay) for r in read for lay in r.layouts):
        raise RuleError("repeat counts read from the size of a channel axis (they would "
                        "change with the width)")
    cx.sizes_handled(*read)  # counts read from batch / spatial axes: the same in the student
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


@rule(torch.flip, "flip", torch.roll, "roll", torch.fliplr, torch.flipud,
      aten=("flip.default", "roll.default"))
def flip(cx: RuleContext):
    """flip/roll: a reordering of positions; fine on fixed axes, blocks channel axes."""
    x = cx.tensor(cx.arg(0))
    rolls = (torch.roll, "roll", torch.ops.aten.roll.default)
    dims = cx.concrete(cx.arg(2 if cx.node.target in rolls else 1, "dims", None))
    dims = range(x.ndim) if dims is None else ([dims] if isinstance(dims, int) else dims)
    for d in dims:
        cx.block(x.layouts[x.dim(d)], "positions reordered (flip/roll)")
    return cx.out(x.layouts)


# -- joining and cutting -----------------------------------------------------------------------
def _tensor_list(cx: RuleContext, a: Any) -> list[TensorInfo]:
    v = cx.value(a)
    if isinstance(v, TensorInfo):
        raise RuleError("expected a sequence of tensors")
    return [t for t in v]


@rule(torch.cat, torch.concat, torch.concatenate, aten=("cat.default", "concat.default"))
def cat(cx: RuleContext):
    """cat(tensors, dim): input k occupies [off_k, off_k + C_k) of the result; the other axes
    of all inputs share spaces."""
    infos = [t for t in _tensor_list(cx, cx.arg(0, "tensors"))]
    d = cx.concrete(cx.arg(1, "dim", 0))
    infos = [t for t in infos if not (t.ndim == 1 and t.shape[0] == 0)]
    d = infos[0].dim(d)
    for k in range(infos[0].ndim):
        if k != d:
            for t in infos[1:]:
                cx.unify(infos[0].layouts[k], t.layouts[k], "non-concatenated axes of cat")
    joined = tuple(seg for t in infos for seg in t.layouts[d])
    lay = list(infos[0].layouts)
    lay[d] = joined
    return cx.out(lay)


@rule(torch.stack, aten=("stack.default",))
def stack(cx: RuleContext):
    """stack(tensors, dim): a new fixed axis; the inputs' axes share spaces."""
    infos = _tensor_list(cx, cx.arg(0, "tensors"))
    d = cx.concrete(cx.arg(1, "dim", 0)) % (infos[0].ndim + 1)
    for k in range(infos[0].ndim):
        for t in infos[1:]:
            cx.unify(infos[0].layouts[k], t.layouts[k], "stacked tensors")
    lay = list(infos[0].layouts)
    lay.insert(d, cx.fixed(len(infos), "axis added by stack"))
    return cx.out(lay)


def _pieces_value(cx: RuleContext, x: TensorInfo, d: int, pieces: list[Layout]):
    outs = cx.example()
    result = []
    for p, o in zip(pieces, outs):
        lay = list(x.layouts)
        lay[d] = p
        result.append(TensorInfo(tuple(o.shape), tuple(lay)))
    return type(outs)(result) if isinstance(outs, (tuple, list)) else tuple(result)


@rule(torch.split, "split", torch.split_with_sizes, "split_with_sizes",
      aten=("split.Tensor", "split_with_sizes.default"))
def split(cx: RuleContext):
    """split(sizes | size, dim): pieces [off_k, off_k + s_k).  Explicit sizes are rewritten;
    an equal split size ties the pieces to one map (they must stay equal)."""
    x = cx.tensor(cx.arg(0))
    sizes = cx.concrete(cx.arg(1, "split_size_or_sections",
                               cx.node.kwargs.get("split_size", cx.node.kwargs.get("split_sizes"))))
    d = x.dim(cx.concrete(cx.arg(2, "dim", 0)))
    n = x.shape[d]
    blk = cx.blocker("split")
    if isinstance(sizes, int):
        if n % sizes:
            if cx.spaces.roots(x.layouts[d]):
                cx.block(x.layouts[d], "uneven split: the last piece could not follow the width")
            pieces = cx.spaces.cut(x.layouts[d], range(sizes, n, sizes), blk)
            return _pieces_value(cx, x, d, pieces)
        pieces = cx.spaces.cut(x.layouts[d], range(sizes, n, sizes), blk)
        grow_alike(cx, pieces, "equal split: pieces must grow alike")
        if cx.spaces.roots(x.layouts[d]):
            first = pieces[0]
            cx.sizes_handled(cx.value(cx.arg(1, "split_size_or_sections", None)))

            def new_args(size, args, kwargs):
                return _replace_arg(args, kwargs, 1, ("split_size_or_sections", "split_size"),
                                    size(first))
            cx.rewrite_args(new_args, first)
        return _pieces_value(cx, x, d, pieces)
    offsets, acc = [], 0
    for s in sizes[:-1]:
        acc += s
        offsets.append(acc)
    pieces = cx.spaces.cut(x.layouts[d], offsets, blk)
    if cx.spaces.roots(x.layouts[d]):
        cx.sizes_handled(cx.value(cx.arg(1, "split_size_or_sections", None)))

        def new_args(size, args, kwargs):
            return _replace_arg(args, kwargs, 1, ("split_size_or_sections", "split_sizes"),
                                [size(p) for p in pieces])
        cx.rewrite_args(new_args, *pieces)
    return _pieces_value(cx, x, d, pieces)


def grow_alike(cx: RuleContext, pieces: list[Layout], reason: str) -> None:
    """Equal pieces (chunk, equal split) must stay equal.  Sharing one map is the simple way;
    pieces of an interleave (a channel shuffle's Zip) would be forced into a common structure
    cut down to single units, so there they are only tied to grow by the same amount."""
    if any(isinstance(seg, Zip) for p in pieces for seg in cx.spaces.resolve(p)):
        cx.spaces.tie(pieces, cx.blocker(reason))
        return
    for p in pieces[1:]:
        cx.unify(pieces[0], p, reason)


def window(cx: RuleContext, lay: Layout, start: int, stop: int, what: str):
    """Cut ``lay`` at ``start`` and ``stop``: (layout before start, layout of the window)."""
    n = cx.spaces.size(lay)
    pieces = cx.spaces.cut(lay, [p for p in (start, stop) if 0 < p < n], cx.blocker(what))
    before = pieces.pop(0) if start > 0 else ()
    piece = pieces.pop(0) if stop > start else ()
    return before, piece


def _replace_arg(args, kwargs, i, names, value):
    if len(args) > i:
        return (*args[:i], value, *args[i + 1:]), kwargs
    for name in names:
        if name in kwargs:
            return args, {**kwargs, name: value}
    raise RuleError("argument to rewrite not found")


@rule(torch.chunk, "chunk", aten=("chunk.default",))
def chunk(cx: RuleContext):
    """chunk(n, dim): n equal pieces that must stay equal, so they share one map (a fused qkv,
    GLU halves)."""
    x = cx.tensor(cx.arg(0))
    k = cx.concrete(cx.arg(1, "chunks"))
    d = x.dim(cx.concrete(cx.arg(2, "dim", 0)))
    n = x.shape[d]
    outs = cx.example()
    step = -(-n // k)
    if n % k and cx.spaces.roots(x.layouts[d]):
        # torch cuts at multiples of ceil(n / k): unless k divides n, the pieces (their sizes,
        # even their number: chunk(3) of 4 gives 2 + 2) change differently from the width
        cx.block(x.layouts[d], f"chunk({k}) of {n} is not {k} equal pieces: the pieces "
                               "could not follow the width")
    pieces = cx.spaces.cut(x.layouts[d], range(step, n, step), cx.blocker("chunk"))
    if n % step == 0:
        grow_alike(cx, pieces, "chunks must grow alike")
    assert len(pieces) == len(outs)
    return _pieces_value(cx, x, d, pieces)


@rule(torch.unbind, "unbind", aten=("unbind.int",))
def unbind(cx: RuleContext):
    """unbind(dim): one tensor per position; the positions are fixed."""
    x = cx.tensor(cx.arg(0))
    d = x.dim(cx.concrete(cx.arg(1, "dim", 0)))
    cx.block(x.layouts[d], "unbound into separate tensors", "structure")
    rest = x.layouts[:d] + x.layouts[d + 1:]
    outs = cx.example()
    return tuple(TensorInfo(tuple(o.shape), rest) for o in outs)


@rule(torch.narrow, "narrow", aten=("narrow.default",))
def narrow(cx: RuleContext):
    """narrow(dim, start, length): the piece [start, start + length); both are rewritten."""
    x = cx.tensor(cx.arg(0))
    d = x.dim(cx.concrete(cx.arg(1, "dim")))
    start, length = cx.concrete(cx.arg(2, "start")), cx.concrete(cx.arg(3, "length"))
    start %= max(x.shape[d], 1)
    before, piece = window(cx, x.layouts[d], start, start + length, "narrow")
    if cx.spaces.roots(x.layouts[d]):
        cx.sizes_handled(cx.value(cx.arg(2, "start")), cx.value(cx.arg(3, "length")))

        def new_args(size, args, kwargs, before=before, piece=piece):
            return (args[0], args[1], size(before), size(piece), *args[4:]), kwargs
        cx.rewrite_args(new_args, before, piece)
    lay = list(x.layouts)
    lay[d] = piece
    return cx.out(lay)


# -- indexing and sizes ----------------------------------------------------------------------
@rule(operator.getitem)
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
    concrete = [slice(cx.concrete(it.start), cx.concrete(it.stop), cx.concrete(it.step))
                if isinstance(it, slice) else cx.concrete(it) for it in items]
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
                cx.block(piece, "every position selected by an integer index (an unbind "
                                "written out: the axis is not a channel space)", "structure")
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
            if step > 1 and n % step == 0 and start < step and c.stop is None and \
                    cx.spaces.roots(lay):
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
            idx = tuple(new_items) if isinstance(raw, tuple) or len(new_items) != 1 \
                else new_items[0]
            return (args[0], idx), kwargs
        cx.rewrite_args(new_args, *[lay for r in rewrites.values() for lay in r[1:]])
    return cx.out(out)


@rule("size", traits=("size_read",))
def size(cx: RuleContext):
    """x.size() / x.size(d): sizes read at run time, tracked by the axes they come from."""
    x = cx.tensor(cx.arg(0))
    d = cx.concrete(cx.arg(1, "dim", None))
    if d is None:
        return SizeInfo(x.layouts, per_axis=True)
    return SizeInfo((x.layouts[x.dim(d)],))


@rule("dim", traits=("size_read",))
@rule("dim", "ndimension", "numel", "nelement", "is_contiguous", "element_size",
      "is_floating_point", "get_device")
def metadata(cx: RuleContext):
    """Facts about a tensor that do not depend on channel widths (rank, dtype ...); numel
    does, so it is tracked like a size."""
    x = cx.tensor(cx.arg(0))
    if cx.node.target in ("numel", "nelement"):
        return SizeInfo(x.layouts)
    return cx.example()


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
        if name in ("dtype", "device", "ndim", "is_cuda", "requires_grad", "layout",
                    "is_sparse", "is_quantized", "is_meta"):
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
    if isinstance(cond, torch.fx.Node) and cond.op == "call_function" and \
            cond.target is operator.eq and len(cond.args) == 2:
        a, b = cx.value(cond.args[0]), cx.value(cond.args[1])
        if isinstance(a, SizeInfo) and isinstance(b, SizeInfo) and \
                len(a.layouts) == len(b.layouts) == 1 and not a.per_axis and not b.per_axis:
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


# -- channel-moving CNN ops --------------------------------------------------------------------
@rule(nn.PixelShuffle, F.pixel_shuffle, torch.pixel_shuffle, aten=("pixel_shuffle.default",))
def pixel_shuffle(cx: RuleContext):
    """pixel_shuffle(r): [C r^2] -> C with the r^2 factor moved to space; channels must come
    in whole blocks of r^2 (the factor is fixed)."""
    x = cx.tensor(cx.arg(0))
    r = cx.module.upscale_factor if cx.module is not None else cx.concrete(cx.arg(1))
    c, inner = cx.spaces.split(x.layouts[-3], r * r, cx.blocker("pixel_shuffle"))
    cx.block(inner, "moved into the spatial axes by pixel_shuffle")
    shape = cx.out_shape()
    return cx.out(x.layouts[:-3] + (c, cx.fixed(shape[-2], "spatial axis"),
                                    cx.fixed(shape[-1], "spatial axis")))


@rule(nn.PixelUnshuffle, F.pixel_unshuffle, torch.pixel_unshuffle,
      aten=("pixel_unshuffle.default",))
def pixel_unshuffle(cx: RuleContext):
    """pixel_unshuffle(r): C -> [C r^2], each channel followed by its r^2 spatial offsets."""
    x = cx.tensor(cx.arg(0))
    r = cx.module.downscale_factor if cx.module is not None else cx.concrete(cx.arg(1))
    c = cx.spaces.merge(x.layouts[-3], cx.fixed(r * r, "spatial offsets of pixel_unshuffle"))
    shape = cx.out_shape()
    return cx.out(x.layouts[:-3] + (c, cx.fixed(shape[-2], "spatial axis"),
                                    cx.fixed(shape[-1], "spatial axis")))


@rule(nn.ChannelShuffle, F.channel_shuffle, torch.channel_shuffle, F.native_channel_shuffle)
def channel_shuffle(cx: RuleContext):
    """channel_shuffle(G): [G, C/G] transposed to [C/G, G].  One space: the G groups share
    its map (a product).  Several spaces (e.g. two branches concatenated, as in ShuffleNet):
    the G rows keep their own maps and interleave (a Zip); they must grow alike."""
    x = cx.tensor(cx.arg(0))
    G = cx.module.groups if cx.module is not None else cx.concrete(cx.arg(1, "groups"))
    c = x.layouts[1]
    n = x.shape[1]
    if _several_spaces(cx, c):  # the rows keep their own maps
        rows = cx.spaces.stack(c, G, cx.blocker("channel_shuffle"))
        merged = cx.spaces.merge(rows, cx.fixed(G, "channel_shuffle groups"))
        return cx.out((x.layouts[0], merged, *x.layouts[2:]))
    g, per = cx.spaces.split(c, n // G, cx.blocker("channel_shuffle"))
    cx.block(g, "number of channel_shuffle groups is fixed")
    return cx.out((x.layouts[0], cx.spaces.merge(per, g), *x.layouts[2:]))
