"""ATen operators, as they appear in graphs from ``torch.export`` (``ExportedProgram.module()``).

Most are the same maths as their ``torch`` counterparts and share those rules (argument order
matches).  The few with their own signature (slice, select, embedding) are here, as are the
no-ops export inserts (metadata assertions) and the creation ops (fixed results)."""
from __future__ import annotations

import torch

from ..context import RuleContext, RuleError
from ..values import SizeInfo, TensorInfo
from . import attention, conv, elementwise, linear, norm, reduce, shape
from .registry import rule

aten = torch.ops.aten


def _ops(*names: str) -> list:
    """OpOverloads by "name.overload" (those this torch has)."""
    found = []
    for qualified in names:
        name, _, overload = qualified.partition(".")
        packet = getattr(aten, name, None)
        op = getattr(packet, overload or "default", None) if packet is not None else None
        if op is not None:
            found.append(op)
    return found


_SAME = {
    elementwise.unary: _ops(
        "relu.default", "gelu.default", "silu.default", "sigmoid.default", "tanh.default",
        "hardtanh.default", "hardswish.default", "hardsigmoid.default", "leaky_relu.default",
        "elu.default", "mish.default", "softplus.default", "exp.default", "log.default",
        "sqrt.default", "rsqrt.default", "abs.default", "neg.default", "cos.default",
        "sin.default", "erf.default", "reciprocal.default", "clamp.default", "clamp_min.default",
        "clamp_max.default", "dropout.default", "clone.default", "contiguous.default",
        "alias.default", "detach.default", "lift_fresh_copy.default", "to.dtype",
        "to.dtype_layout", "to.device", "to.other", "_to_copy.default", "type_as.default",
        "logical_not.default", "bitwise_not.default", "relu_.default", "silu_.default",
        "gelu_.default", "hardtanh_.default", "square.default", "sign.default", "floor.default",
        "round.default", "nan_to_num.default", "feature_dropout.default"),
    elementwise.constant_like: _ops("zeros_like.default", "ones_like.default",
                                    "full_like.default", "empty_like.default"),
    elementwise.binary: _ops(
        "add.Tensor", "add.Scalar", "add_.Tensor", "sub.Tensor", "sub.Scalar", "rsub.Scalar",
        "mul.Tensor", "mul.Scalar", "mul_.Tensor", "div.Tensor", "div.Scalar", "div.Tensor_mode",
        "pow.Tensor_Scalar", "pow.Tensor_Tensor", "maximum.default", "minimum.default",
        "eq.Tensor", "eq.Scalar", "ne.Tensor", "ne.Scalar", "lt.Tensor", "lt.Scalar",
        "le.Tensor", "le.Scalar", "gt.Tensor", "gt.Scalar", "ge.Tensor", "ge.Scalar",
        "__and__.Tensor", "__or__.Tensor", "logical_and.default", "logical_or.default",
        "bitwise_and.Tensor", "bitwise_or.Tensor", "where.self", "where.ScalarOther",
        "where.ScalarSelf", "masked_fill.Scalar",
        "masked_fill.Tensor", "floor_divide.default", "remainder.Tensor", "remainder.Scalar",
        "lerp.Scalar", "addcmul.default"),
    shape.reshape: _ops("view.default", "reshape.default", "_unsafe_view.default"),
    shape.permute: _ops("permute.default"),
    shape.transpose: _ops("transpose.int", "swapaxes.default"),
    shape.t: _ops("t.default"),
    shape.unsqueeze: _ops("unsqueeze.default"),
    shape.squeeze: _ops("squeeze.dim", "squeeze.dims", "squeeze.default"),
    shape.expand: _ops("expand.default"),
    shape.flatten: _ops("flatten.using_ints"),
    shape.cat: _ops("cat.default", "concat.default"),
    shape.stack: _ops("stack.default"),
    shape.split: _ops("split.Tensor", "split_with_sizes.default"),
    shape.chunk: _ops("chunk.default"),
    shape.unbind: _ops("unbind.int"),
    shape.narrow: _ops("narrow.default"),
    shape.repeat: _ops("repeat.default"),
    shape.movedim: _ops("movedim.int"),
    shape.pixel_shuffle: _ops("pixel_shuffle.default"),
    shape.pixel_unshuffle: _ops("pixel_unshuffle.default"),
    linear.linear_function: _ops("linear.default"),
    linear.addmm: _ops("addmm.default"),
    linear.matmul: _ops("matmul.default", "mm.default", "bmm.default"),
    linear.einsum: _ops("einsum.default"),
    conv.conv_function: _ops("conv1d.default", "conv2d.default", "conv3d.default"),
    norm.layernorm_function: _ops("layer_norm.default", "rms_norm.default"),
    norm.groupnorm_function: _ops("group_norm.default"),
    reduce.reduction: _ops("mean.dim", "mean.default", "sum.dim_IntList", "sum.default",
                           "amax.default", "amin.default", "var.correction", "std.correction",
                           "argmax.default", "argmin.default", "all.default", "any.default",
                           "any.dim"),
    reduce.along_axis: _ops("softmax.int", "_softmax.default", "log_softmax.int",
                            "_log_softmax.default", "cumsum.default", "cumprod.default"),
}
for fn, ops in _SAME.items():
    rule(*ops)(fn)


@rule(*_ops("slice.Tensor"))
def aten_slice(cx: RuleContext):
    """aten.slice(x, dim, start, end, step): the window [start, end) (offsets rewritten); a
    step on a channel axis blocks."""
    x = cx.tensor(cx.arg(0))
    d = x.dim(cx.concrete(cx.arg(1, "dim", 0)))
    n = x.shape[d]
    start, end, step = (cx.concrete(cx.arg(i, nm, dflt)) for i, nm, dflt in
                        ((2, "start", None), (3, "end", None), (4, "step", 1)))
    start, end, step = slice(start, end, step).indices(n)
    lay = list(x.layouts)
    if step != 1:
        cx.block(x.layouts[d], "strided slice on this axis")
        lay[d] = cx.fixed(len(range(start, end, step)), "strided slice")
        return cx.out(lay)
    before, piece = shape.window(cx, x.layouts[d], start, max(end, start), "slice")
    lay[d] = piece
    if cx.spaces.roots(x.layouts[d]):
        for i, nm in ((2, "start"), (3, "end")):
            cx.sizes_handled(cx.value(cx.arg(i, nm, None)))

        def new_args(size, args, kwargs):
            s0 = size(before)
            a = list(args) + [None] * (4 - len(args))
            a[1] = d
            a[2], a[3] = s0, s0 + size(piece)
            return tuple(a), {k: v for k, v in kwargs.items() if k not in ("start", "end", "dim")}
        cx.rewrite_args(new_args, before, piece)
    return cx.out(lay)


@rule(*_ops("select.int"))
def aten_select(cx: RuleContext):
    """aten.select(x, dim, index): one position; the selected unit is fixed, its offset
    rewritten."""
    x = cx.tensor(cx.arg(0))
    d = x.dim(cx.concrete(cx.arg(1, "dim")))
    i = cx.concrete(cx.arg(2, "index")) % x.shape[d]
    before, piece = shape.window(cx, x.layouts[d], i, i + 1, "select")
    cx.block(piece, "selected by an integer index")
    if cx.spaces.roots(x.layouts[d]):
        cx.sizes_handled(cx.value(cx.arg(2, "index")))
        cx.rewrite_args(lambda size, args, kwargs: ((args[0], args[1], size(before)), {}), before)
    return cx.out(x.layouts[:d] + x.layouts[d + 1:])


@rule(*_ops("embedding.default"))
def aten_embedding(cx: RuleContext):
    """aten.embedding(weight, ids): W's columns produce the output space."""
    wref = cx.arg(0)
    w = cx.tensor(wref)
    ids = cx.tensor(cx.arg(1))
    cx.block(w.layouts[0], "vocabulary axis, indexed by ids", "structure")
    linear._produce(cx, wref, 1)
    return cx.out(ids.layouts + (w.layouts[1],))


@rule(*_ops("zeros.default", "ones.default"))
def constant_creation(cx: RuleContext):
    """A tensor of one value from literal sizes (T5's all-zero cross-attention position
    bias, ``[1, heads, q, k]``): a replica of a constant is that constant, so every axis is
    a space of its own that may join a channel space and grow with it (its size entry is
    rewritten).  Sizes read from tensors: every axis fixed, as ``creation``."""
    size = cx.node.args[0] if cx.node.args else cx.node.kwargs.get("size")
    if not isinstance(size, (list, tuple)) or \
            not all(isinstance(n, int) and not isinstance(n, bool) for n in size):
        return creation(cx)
    layouts = tuple(cx.spaces.new(n) for n in cx.out_shape())
    shape._rewrite_sizes(cx, layouts, 0, "size")
    return cx.out(layouts)


@rule(*_ops("arange.default", "arange.start", "arange.start_step", "full.default",
            "empty.memory_format", "scalar_tensor.default",
            "new_ones.default", "new_zeros.default", "new_full.default", "new_empty.default",
            "rand.default", "randn.default"))
def creation(cx: RuleContext):
    """A new tensor from sizes only: every axis fixed (sizes read from channel axes block)."""
    return cx.info_for(cx.example(), "created tensor")


@rule(*_ops("_assert_tensor_metadata.default", "_assert_async.msg", "_assert_scalar.default",
            "sym_constrain_range_for_size.default"))
def assertion(cx: RuleContext):
    """Run-time metadata checks export inserts: they compute nothing."""
    return None


@rule(*_ops("sym_size.int"))
def sym_size(cx: RuleContext):
    """aten.sym_size(x, d): a size read at run time."""
    x = cx.tensor(cx.arg(0))
    return SizeInfo((x.layouts[x.dim(cx.concrete(cx.arg(1)))],))
