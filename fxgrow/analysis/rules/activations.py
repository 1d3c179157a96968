"""Activations: pointwise nonlinearities (``elementwise.unary``), PReLU and GLU.

An activation applied to a replicated input gives the replicated output, so it passes every
axis through.  The trait "activation" marks the ones Net2DeeperNet may repeat (when they are
idempotent, ``rewrite.activation``); ``as_module`` names the ``torch.nn`` class a functional
call becomes when it is inserted as a layer of its own.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import RuleContext
from ..values import TensorInfo
from .elementwise import unary
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
_ACTIVATION_FUNCTIONS = (
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
    torch.sigmoid_,
)
_ACTIVATION_METHODS = ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardswish")
_ACTIVATION_ATEN = (
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
    "relu_.default",
    "silu_.default",
    "gelu_.default",
    "hardtanh_.default",
    "hardswish_.default",
    "hardsigmoid_.default",
    "sigmoid_.default",
    "tanh_.default",
    "leaky_relu_.default",
    "elu_.default",
    "mish_.default",
    "relu6.default",
    "relu6_.default",
    "selu.default",
    "celu.default",
    "threshold.default",
    "threshold_.default",
    "softshrink.default",
    "hardshrink.default",
)
"""The same ops as ATen overloads (``torch.export`` graphs)."""

rule(
    *_ACTIVATION_MODULES,
    *_ACTIVATION_FUNCTIONS,
    *_ACTIVATION_METHODS,
    aten=_ACTIVATION_ATEN,
    traits=("pointwise",),
)(unary)
rule(
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
)(unary)
rule(nn.Identity, traits=("keeps_zero", "keeps_positions", "moves_positions"))(unary)
rule(
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
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
)(unary)

# the module each function computes: called with the function's keyword arguments (less
# ``inplace``), it is the same activation as a layer of its own
for _module, _functions in (
    (nn.ReLU, (F.relu, torch.relu, "relu")),
    (nn.GELU, (F.gelu,)),
    (nn.SiLU, (F.silu,)),
    (nn.ReLU6, (F.relu6,)),
    (nn.Sigmoid, (torch.sigmoid, F.sigmoid, "sigmoid")),
    (nn.Tanh, (torch.tanh, F.tanh, "tanh")),
    (nn.Hardswish, (F.hardswish,)),
    (nn.Hardsigmoid, (F.hardsigmoid,)),
    (nn.Mish, (F.mish,)),
):
    rule(*_functions, as_module=_module)(unary)


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
