"""Elementwise arithmetic over broadcast operands (add, mul, div, pow, ...).

Operands of equal size on an axis share its channel space; a size-1 operand broadcasts.  On
plain ints (sizes read from tensors) the same ops are arithmetic on sizes.  Comparisons, logical
ops, ``where`` and ``masked_fill`` share this rule (``comparisons``).
"""

from __future__ import annotations

import operator

import torch

from ..context import RuleContext
from ..values import SizeInfo, TensorInfo
from .common import broadcast
from .registry import rule

_ARITHMETIC = (
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
    torch.atan2,
    torch.lerp,
    torch.addcmul,
    torch.addcdiv,
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.pow,
    operator.mod,
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
    "lerp",
    "lerp_",
    "addcmul",
    "addcmul_",
    "addcdiv",
    "addcdiv_",
    "remainder",
    "fmod",
    "floor_divide",
    "__radd__",
    "__rsub__",
    "__rmul__",
    "__rtruediv__",
)
_ARITHMETIC_ATEN = (
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
    "addcdiv.default",
    "copy_.default",
    "lerp.Tensor",
    "copy.default",
    "div.Scalar_mode",
)
"""The same ops as ATen overloads (``torch.export`` graphs)."""


@rule(*_ARITHMETIC, aten=_ARITHMETIC_ATEN, traits=("pointwise",))
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
@rule(
    operator.mul,
    operator.truediv,
    operator.add,
    operator.sub,
    torch.mul,
    torch.div,
    torch.add,
    torch.sub,
    "mul",
    "div",
    "add",
    "sub",
    "mul_",
    "div_",
    "add_",
    "sub_",
    aten=(
        "mul.Tensor",
        "mul.Scalar",
        "add.Tensor",
        "add.Scalar",
        "sub.Tensor",
        "sub.Scalar",
        "div.Tensor",
        "div.Scalar",
        "div.Tensor_mode",
        "div.Scalar_mode",
    ),
    traits=("keeps_positions",),
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
