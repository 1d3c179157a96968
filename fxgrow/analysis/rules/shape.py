"""Ops that merge and split axes: view / reshape / flatten / unflatten.

Axes are matched by products of sizes; merged axes get a row-major product layout (channel x
spatial: c -> [c S, (c+1) S); channels-last: s C + c), a split axis is factored (heads:
c = h D + d).  Size constants that lie on channel axes are rewritten to the new sizes (``-1``
stays ``-1``).  The other shape ops: ``axes`` (permute, transpose, squeeze, expand, repeat),
``join`` (cat, stack, split, chunk, unbind, narrow), ``indexing`` (getitem, size reads) and
``shuffle`` (pixel and channel shuffles).
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn

from ..arguments import argument, with_argument
from ..context import RuleContext, RuleError
from ..layout import Layout, Zip
from ..values import SizeInfo, TensorInfo
from .handwritten import run_time_entries
from .join import _tensor_list, grow_alike, window  # noqa: F401  (their old home)
from .registry import node_has_trait, rule


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
        for lay in x.layouts[i + 1 : i1]:
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
        raise RuleError(
            "the target shape is one run-time value; fxgrow cannot rewrite its channel entries"
        )
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
        return (*args[:first], tuple(replace(args[first], size)), *args[first + 1 :]), kwargs

    cx.rewrite_args(new_args, *layouts)


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
    if (
        d is None
        or shape[:d] != ins[:d]
        or shape[d + 2 :] != ins[d + 1 :]
        or shape[d] * shape[d + 1] != ins[d]
        or shape[d] < 2
    ):
        return None
    t = _only_user(cx.node)
    if t is None or not node_has_trait(t, "swap_axes"):
        return None
    dims = cx.concrete([argument(t, i, k, None) for i, k in ((1, "dim0"), (2, "dim1"))])
    if sorted(k % len(shape) for k in dims if isinstance(k, int)) != [d, d + 1]:
        return None
    m = _only_user(t)
    if m is not None and node_has_trait(m, "alias"):  # .contiguous()
        m = _only_user(m)
    if m is None or not node_has_trait(m, "reshape"):
        return None
    out = cx.example(m)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(ins):
        return None
    return d


def _several_spaces(cx: RuleContext, layout: Layout) -> bool:
    """A layout of several segments, or an interleave: a shuffle keeps its rows apart."""
    segs = cx.spaces.resolve(layout)
    return len(segs) > 1 or isinstance(segs[0], Zip)


@rule(
    "view",
    "reshape",
    torch.reshape,
    aten=("view.default", "reshape.default", "_unsafe_view.default"),
    traits=("keeps_zero", "reshape"),
)
@rule(
    "view",
    "reshape",
    torch.reshape,
    aten=("view.default", "reshape.default", "_unsafe_view.default"),
)
def reshape(cx: RuleContext):
    """view/reshape: see the module docstring.  The first reshape of a channel shuffle keeps
    its rows apart (see ``_shuffle_axis``)."""
    x = cx.tensor(cx.arg(0))
    shape = cx.out_shape()
    if len(cx.node.args) == 2 and isinstance(cx.concrete(cx.node.args[1]), torch.dtype):
        raise RuleError("view as another dtype")  # x.view(torch.float16)
    d = _shuffle_axis(cx, x, shape)
    if d is not None and _several_spaces(cx, x.layouts[d]):
        g = shape[d]
        rows = cx.spaces.stack(x.layouts[d], g, cx.blocker("channel shuffle"))
        layouts = (*x.layouts[:d], cx.fixed(g, "channel shuffle groups"), rows, *x.layouts[d + 1 :])
    else:
        layouts = reshape_layouts(cx, x, shape)
    _rewrite_sizes(cx, layouts, 1, "minus-one")
    return cx.out(layouts)


@rule("view_as", "reshape_as", aten=("view_as.default", "reshape_as.default"))
def reshape_as(cx: RuleContext):
    """view_as/reshape_as(other): a reshape to ``other``'s shape, whose axes it shares."""
    x, other = cx.tensor(cx.arg(0)), cx.tensor(cx.arg(1))
    layouts = reshape_layouts(cx, x, cx.out_shape())
    for a, b in zip(layouts, other.layouts):
        cx.unify(a, b, "view_as/reshape_as target")
    return cx.out(layouts)


def _flatten(cx: RuleContext, x: TensorInfo, start: int, end: int):
    if x.ndim == 0:
        return cx.out((cx.fixed(1, "flatten of a scalar"),))
    start, end = x.dim(start), x.dim(end)
    merged = x.layouts[start]
    for lay in x.layouts[start + 1 : end + 1]:
        merged = cx.spaces.merge(merged, lay)
    return cx.out(x.layouts[:start] + (merged,) + x.layouts[end + 1 :])


@rule(torch.flatten, "flatten", aten=("flatten.using_ints",), traits=("keeps_zero", "reshape"))
def flatten(cx: RuleContext):
    """flatten(start_dim, end_dim): the axes merge row-major (channel x spatial: c S + s)."""
    x = cx.tensor(cx.arg(0))
    return _flatten(
        cx, x, cx.concrete(cx.arg(1, "start_dim", 0)), cx.concrete(cx.arg(2, "end_dim", -1))
    )


@rule(nn.Flatten, traits=("moves_positions",))
def flatten_module(cx: RuleContext):
    """nn.Flatten: as torch.flatten with the module's start_dim/end_dim."""
    m = cx.module_as(nn.Flatten)
    return _flatten(cx, cx.tensor(cx.arg(0)), m.start_dim, m.end_dim)


@rule(torch.unflatten, "unflatten", aten=("unflatten.int",))
@rule(nn.Unflatten, traits=("moves_positions",))
@rule(torch.unflatten, "unflatten", aten=("unflatten.int",), traits=("reshape",))
def unflatten(cx: RuleContext):
    """unflatten(dim, sizes): one axis factored into several (row-major)."""
    x = cx.tensor(cx.arg(0))
    shape = cx.out_shape()
    layouts = reshape_layouts(cx, x, shape)
    if cx.module is not None:
        m = cx.module_as(nn.Unflatten)
        d = x.dim(m.dim)
        k = len(m.unflattened_size)
        new = layouts[d : d + k]
        if any(cx.spaces.roots(lay) for lay in new):
            old = tuple(m.unflattened_size)
            cx.set_attr(
                "unflattened_size",
                lambda size: tuple(-1 if o == -1 else size(lay) for o, lay in zip(old, new)),
                *new,
            )
        return cx.out(layouts)
    d = x.dim(cx.concrete(cx.arg(1, "dim")))
    sizes = cx.arg(2, "sizes")
    k = len(sizes)
    new = layouts[d : d + k]
    if any(cx.spaces.roots(lay) for lay in new):
        for s in sizes:
            cx.sizes_handled(cx.value(s))

        def new_args(size, args, kwargs):
            vals = tuple(-1 if s == -1 else size(lay) for s, lay in zip(sizes, new))
            return with_argument(args, kwargs, 2, "sizes", vals)

        cx.rewrite_args(new_args, *new)
    return cx.out(layouts)
