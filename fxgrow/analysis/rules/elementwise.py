"""Pointwise ops.

A pointwise function f applied to a replicated activation gives the replicated result:
f(x)[j] = f(x[g(j)]).  So unary pointwise ops pass every axis's space through, and n-ary ones
unite the spaces of their operands (see ``common.broadcast``).  Ops whose result is random per
element (bernoulli, RReLU in training) do not give equal replicas: they block.
"""

from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import RuleContext
from ..values import SizeInfo, TensorInfo
from .common import broadcast, same_layouts
from .registry import rule

_ACTIVATION_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Hardshrink,
    nn.LogSigmoid,
    nn.Threshold,
    nn.Identity,
)
_DROPOUT_MODULES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_UNARY_FUNCTIONS = (
    torch.relu,
    torch.relu_,
    F.relu,
    F.relu_,
    F.relu6,
    F.leaky_relu,
    F.leaky_relu_,
    F.elu,
    F.elu_,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.hardtanh_,
    torch.sigmoid,
    F.sigmoid,
    torch.tanh,
    F.tanh,
    F.softplus,
    F.softsign,
    F.logsigmoid,
    F.tanhshrink,
    F.softshrink,
    F.hardshrink,
    F.threshold,
    torch.exp,
    torch.log,
    torch.log1p,
    torch.expm1,
    torch.sqrt,
    torch.rsqrt,
    torch.abs,
    torch.neg,
    operator.neg,
    operator.pos,
    torch.clamp,
    torch.clip,
    torch.clamp_min,
    torch.clamp_max,
    torch.square,
    torch.sin,
    torch.cos,
    torch.erf,
    torch.reciprocal,
    torch.sign,
    torch.floor,
    torch.ceil,
    torch.round,
    torch.nan_to_num,
    torch.sigmoid_,
    torch.exp_,
    torch.clone,
    torch.detach,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
)
_UNARY_METHODS = (
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "exp",
    "exp_",
    "log",
    "log1p",
    "sqrt",
    "rsqrt",
    "abs",
    "neg",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_max",
    "clip",
    "square",
    "sin",
    "cos",
    "erf",
    "reciprocal",
    "sign",
    "floor",
    "ceil",
    "round",
    "nan_to_num",
    "contiguous",
    "clone",
    "detach",
    "float",
    "double",
    "half",
    "bfloat16",
    "to",
    "type",
    "cpu",
    "cuda",
    "requires_grad_",
    "type_as",
    "zero_",
    "fill_",
    "hardswish",
)


_UNARY_ATEN = (
    "relu.default",
    "gelu.default",
    "silu.default",
    "sigmoid.default",
    "tanh.default",
    "hardtanh.default",
    "hardswish.default",
    "hardsigmoid.default",
    "leaky_relu.default",
    "elu.default",
    "mish.default",
    "softplus.default",
    "exp.default",
    "log.default",
    "sqrt.default",
    "rsqrt.default",
    "abs.default",
    "neg.default",
    "cos.default",
    "sin.default",
    "erf.default",
    "reciprocal.default",
    "clamp.default",
    "clamp_min.default",
    "clamp_max.default",
    "dropout.default",
    "clone.default",
    "contiguous.default",
    "alias.default",
    "detach.default",
    "lift_fresh_copy.default",
    "to.dtype",
    "to.dtype_layout",
    "to.device",
    "to.other",
    "_to_copy.default",
    "type_as.default",
    "logical_not.default",
    "bitwise_not.default",
    "relu_.default",
    "silu_.default",
    "gelu_.default",
    "hardtanh_.default",
    "square.default",
    "sign.default",
    "floor.default",
    "round.default",
    "nan_to_num.default",
    "feature_dropout.default",
    "hardswish_.default",
    "hardsigmoid_.default",
    "dropout_.default",
    "sigmoid_.default",
    "tanh_.default",
    "leaky_relu_.default",
    "elu_.default",
    "mish_.default",
    "feature_dropout_.default",
    "alpha_dropout.default",
    "alpha_dropout_.default",
    "feature_alpha_dropout.default",
    "feature_alpha_dropout_.default",
    "relu6.default",
    "relu6_.default",
    "selu.default",
    "celu.default",
    "log1p.default",
    "expm1.default",
    "ceil.default",
    "trunc.default",
    "clip.default",
    "exp_.default",
    "clamp_.default",
    "clamp_min_.default",
    "threshold.default",
    "threshold_.default",
    "softshrink.default",
    "hardshrink.default",
    "logit.default",
    "sgn.default",
    "isnan.default",
    "isinf.default",
    "fill_.Scalar",
    "zero_.default",
    "erfinv.default",
    "tan.default",
    "acos.default",
    "asin.default",
    "atan.default",
    "sinh.default",
    "cosh.default",
    "asinh.default",
    "acosh.default",
    "atanh.default",
    "log2.default",
    "log10.default",
    "exp2.default",
    "fill.Scalar",
)
"""The same ops as ATen overloads (``torch.export`` graphs)."""


@rule(
    *_ACTIVATION_MODULES,
    *_DROPOUT_MODULES,
    *_UNARY_FUNCTIONS,
    *_UNARY_METHODS,
    aten=_UNARY_ATEN,
    traits=("pointwise",),
)
@rule(
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Threshold,
    nn.LogSigmoid,
    nn.Tanhshrink,
    F.relu,
    torch.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    torch.sigmoid,
    F.sigmoid,
    torch.tanh,
    F.tanh,
    F.softplus,
    F.softsign,
    "relu",
    "sigmoid",
    "tanh",
    traits=("activation",),
)
@rule(
    "to",
    "contiguous",
    "clone",
    "detach",
    "type_as",
    torch.clone,
    torch.detach,
    aten=(
        "to.dtype",
        "to.dtype_layout",
        "to.device",
        "to.other",
        "_to_copy.default",
        "alias.default",
        "contiguous.default",
        "clone.default",
        "detach.default",
        "type_as.default",
    ),
    traits=("alias",),
)
@rule(
    "contiguous",
    "clone",
    "to",
    "float",
    "half",
    "bfloat16",
    "type",
    "type_as",
    F.dropout,
    torch.clone,
    torch.detach,
    aten=(
        "_to_copy.default",
        "alias.default",
        "clone.default",
        "contiguous.default",
        "to.dtype",
        "to.dtype_layout",
        "to.device",
        "to.other",
        "type_as.default",
        "dropout.default",
    ),
    traits=("keeps_zero",),
)
@rule(
    *_DROPOUT_MODULES,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
    traits=("dropout",),
)
@rule(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity, traits=("keeps_zero",))
@rule(
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    torch.relu,
    F.relu,
    torch.sigmoid,
    F.silu,
    F.gelu,
    traits=("same_shape",),
)
def unary(cx: RuleContext):
    """Pointwise (activation, math, dropout, dtype/device moves): every axis passes through."""
    return same_layouts(cx)


@rule(aten=("native_dropout.default",))
def native_dropout(cx: RuleContext):
    """aten.native_dropout(x, p, train) -> (out, mask): both pointwise in x, like dropout."""
    x = cx.tensor(cx.arg(0))
    return (TensorInfo(x.shape, x.layouts), TensorInfo(x.shape, x.layouts))


@rule(
    torch.zeros_like,
    torch.ones_like,
    torch.full_like,
    torch.empty_like,
    aten=("zeros_like.default", "ones_like.default", "full_like.default", "empty_like.default"),
)
def constant_like(cx: RuleContext):
    """A constant of the same shape: its replicas are equal, so it passes layouts through."""
    return same_layouts(cx)


@rule(
    "bernoulli_",
    "bernoulli",
    torch.bernoulli,
    torch.rand_like,
    torch.randn_like,
    "uniform_",
    "normal_",
    nn.RReLU,
    F.rrelu,
)
def random_pointwise(cx: RuleContext):
    """Random per element: replicas would differ, so channel spaces here are blocked."""
    info = cx.tensor(cx.arg(0))
    for lay in info.layouts:
        cx.block(lay, "random per element: replicated units would diverge")
    return cx.out(info.layouts)


_BINARY = (
    torch.add,
    torch.sub,
    torch.subtract,
    torch.mul,
    torch.multiply,
    torch.div,
    torch.divide,
    torch.true_divide,
    torch.floor_divide,
    torch.remainder,
    torch.fmod,
    torch.pow,
    torch.maximum,
    torch.minimum,
    torch.eq,
    torch.ne,
    torch.lt,
    torch.le,
    torch.gt,
    torch.ge,
    torch.logical_and,
    torch.logical_or,
    torch.logical_xor,
    torch.atan2,
    torch.lerp,
    torch.where,
    torch.masked_fill,
    torch.addcmul,
    torch.addcdiv,
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.pow,
    operator.mod,
    operator.eq,
    operator.ne,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
    operator.and_,
    operator.or_,
    operator.xor,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    "add",
    "add_",
    "sub",
    "sub_",
    "mul",
    "mul_",
    "div",
    "div_",
    "true_divide",
    "pow",
    "pow_",
    "maximum",
    "minimum",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "masked_fill",
    "masked_fill_",
    "where",
    "lerp",
    "lerp_",
    "addcmul",
    "addcmul_",
    "addcdiv",
    "addcdiv_",
    "logical_and",
    "logical_or",
    "remainder",
    "fmod",
    "floor_divide",
    "__and__",
    "__or__",
    "__radd__",
    "__rsub__",
    "__rmul__",
    "__rtruediv__",
)


_BINARY_ATEN = (
    "add.Tensor",
    "add.Scalar",
    "add_.Tensor",
    "sub.Tensor",
    "sub.Scalar",
    "rsub.Scalar",
    "mul.Tensor",
    "mul.Scalar",
    "mul_.Tensor",
    "div.Tensor",
    "div.Scalar",
    "div.Tensor_mode",
    "pow.Tensor_Scalar",
    "pow.Tensor_Tensor",
    "maximum.default",
    "minimum.default",
    "eq.Tensor",
    "eq.Scalar",
    "ne.Tensor",
    "ne.Scalar",
    "lt.Tensor",
    "lt.Scalar",
    "le.Tensor",
    "le.Scalar",
    "gt.Tensor",
    "gt.Scalar",
    "ge.Tensor",
    "ge.Scalar",
    "__and__.Tensor",
    "__or__.Tensor",
    "logical_and.default",
    "logical_or.default",
    "bitwise_and.Tensor",
    "bitwise_or.Tensor",
    "where.self",
    "masked_fill.Scalar",
    "masked_fill.Tensor",
    "floor_divide.default",
    "remainder.Tensor",
    "remainder.Scalar",
    "lerp.Scalar",
    "addcmul.default",
    "clamp.Tensor",
    "sub_.Tensor",
    "div_.Tensor",
    "mul_.Scalar",
    "add_.Scalar",
    "pow.Scalar",
    "atan2.default",
    "fmod.Tensor",
    "fmod.Scalar",
    "bitwise_xor.Tensor",
    "logical_xor.default",
    "where.ScalarOther",
    "where.ScalarSelf",
    "where.Scalar",
    "addcdiv.default",
    "bitwise_and.Scalar",
    "bitwise_or.Scalar",
    "copy_.default",
    "lerp.Tensor",
    "copy.default",
    "bitwise_xor.Scalar",
    "div.Scalar_mode",
)
"""The same ops as ATen overloads (``torch.export`` graphs)."""


@rule(*_BINARY, aten=_BINARY_ATEN, traits=("pointwise",))
@rule(operator.add, operator.iadd, torch.add, "add", "add_", aten=("add.Tensor",), traits=("add",))
@rule(
    operator.mul,
    torch.mul,
    "mul",
    "mul_",
    aten=("mul.Tensor", "mul.Scalar", "mul_.Tensor", "mul_.Scalar"),
    traits=("mul",),
)
@rule(
    operator.add, operator.iadd, torch.add, operator.mul, torch.mul, traits=("same_shape_operands",)
)
def binary(cx: RuleContext):
    """Elementwise with broadcasting (add, mul, where, masked_fill, ...): operands of equal
    size on an axis share its space; size-1 operands broadcast and stay size 1.  On plain
    ints (sizes) it is arithmetic: the result carries the sizes it was derived from."""
    operands = [*cx.node.args, *cx.node.kwargs.values()]
    values = [cx.value(a) for a in operands]
    if not any(isinstance(v, TensorInfo) for v in values):
        return _int_arithmetic(cx, values)
    return broadcast(cx, operands)


def _int_arithmetic(cx: RuleContext, values):
    sizes = [v for v in values if isinstance(v, SizeInfo)]
    if not sizes:
        return cx.example()
    if (
        cx.node.target is operator.add
        and isinstance(cx.example(), tuple)
        and all(
            isinstance(v, (tuple, list)) or (isinstance(v, SizeInfo) and v.per_axis) for v in values
        )
    ):
        return _joined_shape(cx, values)
    cx.sizes_handled(*sizes)
    return SizeInfo(tuple(lay for s in sizes for lay in s.layouts))


def _joined_shape(cx: RuleContext, values) -> tuple:
    """``x.shape[:-1] + (-1,)``: tuple concatenation, not arithmetic.  The result is a tuple
    whose entries are one size per axis read (each tracking that axis only) and the literal
    entries, so a view/reshape given it can check each entry against the axis it sizes."""
    out: list = []
    for v in values:
        if isinstance(v, SizeInfo):
            cx.sizes_handled(v)  # each entry below tracks its own axis
            out.extend(SizeInfo((lay,)) for lay in v.layouts)
        else:
            out.extend(v)
    return tuple(out)


@rule(nn.PReLU, F.prelu, torch.prelu)
@rule(nn.PReLU, traits=("activation",))
def prelu(cx: RuleContext):
    """PReLU: with one slope per channel (axis 1) the slopes are per-channel parameters."""
    x = cx.tensor(cx.arg(0))
    if cx.module is not None:
        if cx.module_as(nn.PReLU).num_parameters > 1:
            cx.unify(x.layouts[1], cx.module_param_required("weight", 0, "scale"))
            cx.size_attr("num_parameters", x.layouts[1])
        return cx.out(x.layouts)
    w = cx.value(cx.arg(1, "weight"))
    if isinstance(w, TensorInfo) and w.shape[0] > 1:
        cx.unify(x.layouts[1], w.layouts[0])
    return cx.out(x.layouts)


@rule(nn.GLU, F.glu)
def glu(cx: RuleContext):
    """GLU: a * sigmoid(b) for the two halves along ``dim``; the halves are multiplied unit by
    unit, so they share one map (the split point moves with the width)."""
    x = cx.tensor(cx.arg(0))
    d = cx.module_as(nn.GLU).dim if cx.module is not None else cx.concrete(cx.arg(1, "dim", -1))
    d = x.dim(d)
    a, b = cx.spaces.cut(x.layouts[d], [x.shape[d] // 2], cx.blocker("GLU halves"))
    cx.unify(a, b, "GLU halves must grow together")
    return cx.out(x.layouts[:d] + (a,) + x.layouts[d + 1 :])
