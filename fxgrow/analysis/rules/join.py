"""Ops that join and cut axes.

cat: input k occupies [off_k, off_k + C_k) of the result (the same tensor twice gives two
segments with one map); split / narrow / slicing cut the layout at offsets, which are rewritten;
chunk and equal splits tie the pieces to one map; unbind fixes the selected units.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.fx

from ..arguments import with_argument
from ..context import RuleContext, RuleError
from ..layout import Layout, Zip
from ..values import TensorInfo
from .registry import rule


def _tensor_list(cx: RuleContext, a: Any) -> list[TensorInfo]:
    v = cx.value(a)
    if isinstance(v, TensorInfo):
        raise RuleError("expected a sequence of tensors")
    return [t for t in v]


@rule(
    torch.cat,
    torch.concat,
    torch.concatenate,
    aten=("cat.default", "concat.default"),
    traits=("moves_positions",),
)
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


@rule(
    torch.split,
    "split",
    torch.split_with_sizes,
    "split_with_sizes",
    aten=("split.Tensor", "split_with_sizes.default"),
    traits=("moves_positions",),
)
def split(cx: RuleContext):
    """split(sizes | size, dim): pieces [off_k, off_k + s_k).  Explicit sizes are rewritten;
    an equal split size ties the pieces to one map (they must stay equal)."""
    x = cx.tensor(cx.arg(0))
    sizes = cx.concrete(
        cx.arg(
            1,
            "split_size_or_sections",
            cx.node.kwargs.get("split_size", cx.node.kwargs.get("split_sizes")),
        )
    )
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
                return with_argument(
                    args, kwargs, 1, ("split_size_or_sections", "split_size"), size(first)
                )

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
            return with_argument(
                args,
                kwargs,
                1,
                ("split_size_or_sections", "split_sizes"),
                [size(p) for p in pieces],
            )

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


@rule(torch.tensor_split, "tensor_split", aten=("tensor_split.indices", "tensor_split.sections"))
def tensor_split(cx: RuleContext):
    """tensor_split(indices | sections, dim).  Indices cut at those offsets: pieces of a growing
    axis keep their own maps and the indices are rewritten to the new boundaries.  ``sections``
    = k cuts into k near-equal pieces: equal pieces (k divides the size) grow alike and k stays;
    unequal ones could not follow the width (blocked)."""
    x = cx.tensor(cx.arg(0))
    kw = cx.node.kwargs
    spec_ref = cx.arg(1, "indices_or_sections", kw.get("indices", kw.get("sections")))
    spec = cx.concrete(spec_ref)
    d = x.dim(cx.concrete(cx.arg(2, "dim", 0)))
    n = x.shape[d]
    blk = cx.blocker("tensor_split")
    if isinstance(spec, int):
        q, r = divmod(n, spec)
        pieces = cx.spaces.cut(x.layouts[d], [k * q + min(k, r) for k in range(1, spec)], blk)
        if r:
            if cx.spaces.roots(x.layouts[d]):
                cx.block(
                    x.layouts[d],
                    "tensor_split into unequal sections: the pieces could not follow the width",
                )
        else:
            grow_alike(cx, pieces, "tensor_split into equal sections: pieces must grow alike")
        return _pieces_value(cx, x, d, pieces)
    offsets = [i + n if i < 0 else i for i in spec]
    bounds = [0, *offsets, n]
    if not offsets or any(a >= b for a, b in itertools.pairwise(bounds)):
        raise RuleError(
            f"tensor_split indices {list(spec)} that are not increasing cuts inside an axis of {n}"
        )
    pieces = cx.spaces.cut(x.layouts[d], offsets, blk)
    if cx.spaces.roots(x.layouts[d]):
        cx.sizes_handled(cx.value(spec_ref))

        def new_args(size, args, kwargs):
            cuts, acc = [], 0
            for p in pieces[:-1]:
                acc += size(p)
                cuts.append(acc)
            return with_argument(args, kwargs, 1, ("indices_or_sections", "indices"), cuts)

        cx.rewrite_args(new_args, *pieces)
    return _pieces_value(cx, x, d, pieces)


@rule(torch.chunk, "chunk", aten=("chunk.default",), traits=("moves_positions",))
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
        cx.block(
            x.layouts[d],
            f"chunk({k}) of {n} is not {k} equal pieces: the pieces could not follow the width",
        )
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
    rest = x.layouts[:d] + x.layouts[d + 1 :]
    outs = cx.example()
    return tuple(TensorInfo(tuple(o.shape), rest) for o in outs)


@rule(torch.narrow, "narrow", aten=("narrow.default",), traits=("moves_positions",))
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
            args, kwargs = with_argument(args, kwargs, 2, "start", size(before))
            return with_argument(args, kwargs, 3, "length", size(piece))

        cx.rewrite_args(new_args, before, piece)
    lay = list(x.layouts)
    lay[d] = piece
    return cx.out(lay)
