"""ATen-only operators, as they appear in graphs from ``torch.export``
(``ExportedProgram.module()``).

Overloads with the maths and the argument order of a ``torch`` function are registered with
that function's rule (``@rule(..., aten=(...))`` in the module of their maths).  Here are the
ones with their own signature (slice, select, embedding), the no-ops export inserts (metadata
assertions) and the creation ops (fixed results)."""

from __future__ import annotations

from ..arguments import with_argument
from ..context import RuleContext
from ..values import SizeInfo
from . import join, linear, shape
from .registry import rule


@rule(aten=("slice.Tensor",))
def aten_slice(cx: RuleContext):
    """aten.slice(x, dim, start, end, step): the window [start, end) (offsets rewritten); a
    step on a channel axis blocks."""
    x = cx.tensor(cx.arg(0))
    d = x.dim(cx.concrete(cx.arg(1, "dim", 0)))
    n = x.shape[d]
    start, end, step = (
        cx.concrete(cx.arg(i, nm, dflt))
        for i, nm, dflt in ((2, "start", None), (3, "end", None), (4, "step", 1))
    )
    start, end, step = slice(start, end, step).indices(n)
    lay = list(x.layouts)
    if step != 1:
        cx.block(x.layouts[d], "strided slice on this axis")
        lay[d] = cx.fixed(len(range(start, end, step)), "strided slice")
        return cx.out(lay)
    before, piece = join.window(cx, x.layouts[d], start, max(end, start), "slice")
    lay[d] = piece
    if cx.spaces.roots(x.layouts[d]):
        for i, nm in ((2, "start"), (3, "end")):
            cx.sizes_handled(cx.value(cx.arg(i, nm, None)))

        def new_args(size, args, kwargs):
            s0 = size(before)
            args, kwargs = with_argument(args, kwargs, 2, "start", s0)
            return with_argument(args, kwargs, 3, "end", s0 + size(piece))

        cx.rewrite_args(new_args, before, piece)
    return cx.out(lay)


@rule(aten=("select.int",))
def aten_select(cx: RuleContext):
    """aten.select(x, dim, index): one position; the selected unit is fixed, its offset
    rewritten."""
    x = cx.tensor(cx.arg(0))
    d = x.dim(cx.concrete(cx.arg(1, "dim")))
    i = cx.concrete(cx.arg(2, "index")) % x.shape[d]
    before, piece = join.window(cx, x.layouts[d], i, i + 1, "select")
    cx.block(piece, "selected by an integer index")
    if cx.spaces.roots(x.layouts[d]):
        cx.sizes_handled(cx.value(cx.arg(2, "index")))
        cx.rewrite_args(lambda size, args, kwargs: ((args[0], args[1], size(before)), {}), before)
    return cx.out(x.layouts[:d] + x.layouts[d + 1 :])


@rule(aten=("embedding.default",), traits=("table_lookup",))
def aten_embedding(cx: RuleContext):
    """aten.embedding(weight, ids): W's columns produce the output space."""
    wref = cx.arg(0)
    w = cx.tensor(wref)
    ids = cx.tensor(cx.arg(1))
    cx.block(w.layouts[0], "vocabulary axis, indexed by ids", "structure")
    linear._produce(cx, wref, 1)
    return cx.out(ids.layouts + (w.layouts[1],))


@rule(aten=("zeros.default", "ones.default"))
def constant_creation(cx: RuleContext):
    """A tensor of one value from literal sizes (T5's all-zero cross-attention position
    bias, ``[1, heads, q, k]``): a replica of a constant is that constant, so every axis is
    a space of its own that may join a channel space and grow with it (its size entry is
    rewritten).  Sizes read from tensors: every axis fixed, as ``creation``."""
    size = cx.arg(0, "size", None)
    if not isinstance(size, (list, tuple)) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in size
    ):
        return creation(cx)
    layouts = tuple(cx.spaces.new(n) for n in cx.out_shape())
    shape._rewrite_sizes(cx, layouts, 0, "size")
    return cx.out(layouts)


@rule(
    aten=(
        "arange.default",
        "arange.start",
        "arange.start_step",
        "full.default",
        "empty.memory_format",
        "scalar_tensor.default",
        "new_ones.default",
        "new_zeros.default",
        "new_full.default",
        "new_empty.default",
        "rand.default",
        "randn.default",
        "empty_strided.default",
        "randperm.default",
    )
)
def creation(cx: RuleContext):
    """A new tensor from sizes only: every axis fixed (sizes read from channel axes block)."""
    return cx.info_for(cx.example(), "created tensor")


@rule(
    aten=(
        "_assert_tensor_metadata.default",
        "_assert_async.msg",
        "_assert_scalar.default",
        "sym_constrain_range_for_size.default",
    )
)
@rule(aten=("_assert_tensor_metadata.default",), traits=("metadata_check",))
def assertion(cx: RuleContext):
    """Run-time metadata checks export inserts: they compute nothing."""
    return None


@rule(aten=("sym_size.int",), traits=("size_read",))
def sym_size(cx: RuleContext):
    """aten.sym_size(x, d): a size read at run time."""
    x = cx.tensor(cx.arg(0))
    return SizeInfo((x.layouts[x.dim(cx.concrete(cx.arg(1)))],))


@rule(aten=("sym_numel.default",))
def sym_numel(cx: RuleContext):
    """aten.sym_numel(x): the product of every axis's size, tracked like a size."""
    return SizeInfo(cx.tensor(cx.arg(0)).layouts)


@rule(aten=("_local_scalar_dense.default",))
def local_scalar(cx: RuleContext):
    """aten._local_scalar_dense(x) (``x.item()``): the value of a one-element tensor; its axes
    all have size 1, so no channel space is read."""
    cx.tensor(cx.arg(0))
    return cx.example()
