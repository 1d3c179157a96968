"""Comparisons, logical and bitwise ops, ``where`` and ``masked_fill``: elementwise over
broadcast operands, so they share the rule of the arithmetic ops (``binary.binary``)."""

from __future__ import annotations

import operator

import torch

from .binary import binary
from .registry import rule

_COMPARISONS = (
    torch.eq,
    torch.ne,
    torch.lt,
    torch.le,
    torch.gt,
    torch.ge,
    torch.logical_and,
    torch.logical_or,
    torch.logical_xor,
    torch.where,
    torch.masked_fill,
    operator.eq,
    operator.ne,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
    operator.and_,
    operator.or_,
    operator.xor,
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "masked_fill",
    "masked_fill_",
    "where",
    "logical_and",
    "logical_or",
    "__and__",
    "__or__",
)
_COMPARISONS_ATEN = (
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
    "bitwise_xor.Tensor",
    "logical_xor.default",
    "where.ScalarOther",
    "where.ScalarSelf",
    "where.Scalar",
    "bitwise_and.Scalar",
    "bitwise_or.Scalar",
    "bitwise_xor.Scalar",
)
"""The same ops as ATen overloads (``torch.export`` graphs)."""

rule(*_COMPARISONS, aten=_COMPARISONS_ATEN, traits=("pointwise",))(binary)
rule(
    torch.masked_fill,
    "masked_fill",
    "masked_fill_",
    aten=("masked_fill.Scalar", "masked_fill.Tensor"),
    traits=("keeps_positions",),
)(binary)
