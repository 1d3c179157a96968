"""fxgrow.register_rule: a user's own module gets a rule and models grow through it exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import widen_exact

import fxgrow
from fxgrow.analysis.rules.registry import RegistrationError


class NumpySoftsign(nn.Module):
    """Softsign computed in numpy: neither fx nor torch.export can capture it."""

    def forward(self, x):
        a = x.detach().numpy()
        return torch.from_numpy(a / (1 + np.abs(a)))


class ChannelScale(nn.Module):
    """A per-channel scale whose parameter the rule must tie to the channel axis."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        return torch.stack([r * self.scale[:, None, None] for r in x.unbind(0)])


def _net(mid: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), mid, nn.Conv2d(4, 5, 3)).double().eval()


def test_untraceable_module_without_rule_fails_clearly():
    class Unregistered(NumpySoftsign):
        def forward(self, x):  # its own forward: the rule of its base does not apply
            return super().forward(x)

    with pytest.raises(fxgrow.FxgrowError):
        fxgrow.widen(
            _net(Unregistered()), torch.randn(2, 3, 8, 8, dtype=torch.float64), widths={"0": 6}
        )


def test_builtin_rule_for_user_module_grows_exactly():
    fxgrow.register_rule(NumpySoftsign, "pointwise")
    torch.manual_seed(0)
    m = _net(NumpySoftsign())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    student = widen_exact(m, x, tol=1e-12, widths={"0": 7})
    assert student.get_submodule("0").weight.shape == (7, 3, 3, 3)
    assert student.get_submodule("2").weight.shape == (5, 7, 3, 3)
    assert student(x).shape == (2, 5, 4, 4)
    assert [n.target for n in student.graph.nodes if n.op == "call_module"] == ["0", "1", "2"]


def test_own_rule_ties_a_parameter_to_the_channel_axis():
    def channel_scale(cx):
        """x * scale[c]: the scale is a per-channel parameter of axis 1."""
        x = cx.tensor(cx.arg(0))
        cx.unify(x.layouts[1], cx.module_param("scale", 0, "scale"))
        return cx.out(x.layouts)

    assert fxgrow.register_rule(ChannelScale, channel_scale) is channel_scale
    torch.manual_seed(0)
    m = _net(ChannelScale(4))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    student = widen_exact(m, x, tol=1e-12, widths={"0": 6})
    assert student.get_submodule("1").scale.shape == (6,)
    assert torch.equal(student.get_submodule("1").scale[:4], m[1].scale)


def test_registering_over_a_rule_or_nonsense_is_refused():
    with pytest.raises(RegistrationError, match="already has the rule"):
        fxgrow.register_rule(nn.ReLU, lambda cx: None)
    with pytest.raises(RegistrationError, match="no built-in rule 'pointwize'"):
        fxgrow.register_rule(NumpySoftsign, "pointwize")
    with pytest.raises(RegistrationError, match="cannot register a rule for 3"):
        fxgrow.register_rule(3, "pointwise")
    with pytest.raises(RegistrationError, match="unknown traits"):
        fxgrow.register_rule(ChannelScale, "pointwise", traits=("fast",))
