"""Dropout: random in training, the identity in eval (verification turns it off).

Dropout scales each unit independently, so it passes every axis through like any pointwise
op (``elementwise.unary``).  ``as_module`` names the ``torch.nn`` class of each functional
form: ``frontend.modal`` makes captured dropout calls follow ``.train()``/``.eval()`` with it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import RuleContext
from ..values import TensorInfo
from .elementwise import unary
from .registry import rule

_DROPOUT_MODULES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_DROPOUT_FUNCTIONS = (
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
)
_DROPOUT_ATEN = (
    "dropout.default",
    "feature_dropout.default",
    "dropout_.default",
    "feature_dropout_.default",
    "alpha_dropout.default",
    "alpha_dropout_.default",
    "feature_alpha_dropout.default",
    "feature_alpha_dropout_.default",
)
"""The same ops as ATen overloads (``torch.export`` graphs)."""

rule(*_DROPOUT_MODULES, *_DROPOUT_FUNCTIONS, aten=_DROPOUT_ATEN, traits=("pointwise",))(unary)
rule(*_DROPOUT_MODULES, *_DROPOUT_FUNCTIONS, traits=("dropout",))(unary)
rule(
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    F.dropout,
    aten=("dropout.default",),
    traits=("keeps_zero",),
)(unary)
rule(nn.Dropout, nn.Dropout2d, traits=("same_shape",))(unary)
rule(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, traits=("commutes_with_scale",))(unary)
rule(nn.Dropout, F.dropout, aten=("dropout.default",), traits=("keeps_positions",))(unary)

# torch.dropout and the ATen overloads take (input, p, train); the functions (input, p,
# training, inplace): each is computed by its module class built with p
for _module, _functions, _overloads in (
    (nn.Dropout, (F.dropout,), ("dropout.default",)),
    (nn.Dropout1d, (F.dropout1d,), ()),
    (nn.Dropout2d, (F.dropout2d,), ("feature_dropout.default",)),
    (nn.Dropout3d, (F.dropout3d,), ()),
    (nn.AlphaDropout, (F.alpha_dropout,), ("alpha_dropout.default",)),
    (nn.FeatureAlphaDropout, (F.feature_alpha_dropout,), ()),
):
    rule(*_functions, aten=_overloads, traits=("dropout",), as_module=_module)(unary)


rule(torch.dropout, traits=("pointwise", "dropout"), as_module=nn.Dropout)(unary)


@rule(aten=("native_dropout.default",), traits=("keeps_positions",))
def native_dropout(cx: RuleContext):
    """aten.native_dropout(x, p, train) -> (out, mask): both pointwise in x, like dropout."""
    x = cx.tensor(cx.arg(0))
    return (TensorInfo(x.shape, x.layouts), TensorInfo(x.shape, x.layouts))
