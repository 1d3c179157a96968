"""Pointwise ops.

A pointwise function f applied to a replicated activation gives the replicated result:
f(x)[j] = f(x[g(j)]).  So unary pointwise ops pass every axis's space through, and n-ary ones
unite the spaces of their operands (see ``common.broadcast`` and ``binary``).  Ops whose result
is random per element (bernoulli, RReLU in training) do not give equal replicas: they block.

This module has the unary rule and the math functions and casts it covers; activations
(``activations``), dropout (``dropout``) and the broadcasting ops (``binary``,
``comparisons``) register their targets for the same rules in their own modules.
"""

from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import RuleContext
from .common import same_layouts
from .registry import rule

_MATH_FUNCTIONS = (
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
    torch.exp_,
)
_MATH_METHODS = (
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
    "zero_",
    "fill_",
)
_MATH_ATEN = (
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
    "logical_not.default",
    "bitwise_not.default",
    "square.default",
    "sign.default",
    "floor.default",
    "round.default",
    "nan_to_num.default",
    "log1p.default",
    "expm1.default",
    "ceil.default",
    "trunc.default",
    "clip.default",
    "exp_.default",
    "clamp_.default",
    "clamp_min_.default",
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

_CAST_FUNCTIONS = (torch.clone, torch.detach)
_CAST_METHODS = (
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
)
_CAST_ATEN = (
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
)


@rule(*_MATH_FUNCTIONS, *_MATH_METHODS, aten=_MATH_ATEN, traits=("pointwise",))
@rule("contiguous", traits=("moves_positions",))
@rule(*_CAST_FUNCTIONS, *_CAST_METHODS, aten=_CAST_ATEN, traits=("pointwise",))
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
    ),
    traits=("keeps_zero",),
)
@rule(
    "float",
    "to",
    "type_as",
    "half",
    "bfloat16",
    "contiguous",
    aten=(
        "to.dtype",
        "to.dtype_layout",
        "to.device",
        "to.other",
        "_to_copy.default",
        "clone.default",
        "contiguous.default",
        "type_as.default",
        "alias.default",
    ),
    traits=("keeps_positions",),
)
def unary(cx: RuleContext):
    """Pointwise (activation, math, dropout, dtype/device moves): every axis passes through."""
    return same_layouts(cx)


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
