"""Traits of registry entries: the registry is the one op table, and what other passes ask
(is it an activation? dropout? a residual add?) is answered from it."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from fxgrow.analysis.rules.registry import (
    TRAITS,
    RegistrationError,
    has_trait,
    node_has_trait,
    rule,
    with_trait,
)
from fxgrow.analysis.shapes import propagate
from fxgrow.verify.compare import outputs


def test_every_trait_is_documented_and_used():
    assert all(with_trait(t) for t in TRAITS), [t for t in TRAITS if not with_trait(t)]


def test_unknown_trait_is_refused():
    with pytest.raises(RegistrationError, match="unknown traits"):
        rule(nn.ReLU, traits=("elementwsie",))
    with pytest.raises(KeyError, match="unknown trait"):
        has_trait(nn.ReLU, "elementwsie")


def test_modules_inherit_traits_like_isinstance_unless_exact():
    class MyDropout(nn.Dropout):
        def forward(self, x):
            return super().forward(x)

    assert has_trait(MyDropout(), "dropout")  # verification must still turn it off
    assert not has_trait(MyDropout, "same_shape", exact=True)
    assert has_trait(nn.Dropout, "same_shape", exact=True)


@pytest.mark.parametrize(
    "target,trait,expected",
    [
        (nn.ReLU, "activation", True),
        (nn.PReLU, "activation", True),
        ("relu", "activation", True),
        (torch.sigmoid, "activation", True),
        (nn.Identity, "activation", False),
        (torch.ops.aten.relu.default, "activation", False),
        (nn.AlphaDropout, "dropout", True),
        (nn.AlphaDropout, "keeps_zero", False),
        (nn.Dropout2d, "keeps_zero", True),
        (nn.Identity, "keeps_zero", True),
        (operator.add, "add", True),
        ("add_", "add", True),
        (torch.ops.aten.add.Tensor, "add", True),
        (operator.sub, "add", False),
        (torch.mul, "same_shape_operands", True),
        (torch.eq, "same_shape_operands", False),
        (torch.exp, "same_shape", False),
        (F.softmax, "pointwise", False),
        ("softmax", "pointwise", False),
        ("softmax_", "pointwise", False),
        (torch.tanh, "pointwise", True),
        (torch.ops.aten._unsafe_view.default, "reshape", True),
        ("unflatten", "reshape", True),
        ("unflatten", "keeps_zero", False),
        (torch.transpose, "keeps_zero", True),
        (torch.swapaxes, "keeps_zero", False),
        ("size", "size_read", True),
        (torch.ops.aten.sym_size.int, "size_read", True),
        ("mul_", "mul", True),
        (torch.ops.aten.amax.default, "extremum", True),
        ("mean", "extremum", False),
        (torch.t, "matrix_transpose", True),
        ("permute", "permute_axes", True),
        (torch.ops.aten.clone.default, "alias", True),
        ("float", "alias", False),
    ],
)
def test_trait_of_op(target, trait, expected):
    assert has_trait(target, trait) is expected


def test_softmax_method_in_place_has_no_rule():
    """softmax mixes the positions along its dim: not pointwise (torch has no softmax_)."""
    from fxgrow.analysis.rules.registry import METHODS

    assert "softmax_" not in METHODS and "softmax" in METHODS


def test_node_traits_and_fast_shapes_match_the_ops():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.drop = nn.BatchNorm2d(3), nn.Dropout(0.5)

        def forward(self, x):
            y = self.drop(torch.relu(self.bn(x)))
            return (y + x) * x, torch.exp(y.int())

    m = M().eval()
    gm = torch.fx.symbolic_trace(m)
    nodes = {n.name: n for n in gm.graph.nodes}
    assert node_has_trait(nodes["drop"], "dropout", gm)
    assert node_has_trait(nodes["add"], "add") and not node_has_trait(nodes["mul"], "add")
    x = torch.randn(2, 3, 4, 4)
    vals = propagate(gm, (x,))
    ref = outputs(m, (x,))
    for name in ("bn", "relu", "drop", "add", "mul", "exp"):
        got = vals[nodes[name]]
        assert got.shape == (2, 3, 4, 4), name
    assert vals[nodes["exp"]].dtype == ref[1].dtype == torch.float32


def test_torch_clone_and_detach_are_aliases_with_a_rule():
    """torch.clone / torch.detach (the functions, not only the methods) pass channels through."""
    import fxgrow
    from fxgrow.analysis.rules import registry

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.b(torch.relu(torch.clone(torch.detach(self.a(x)))))

    m, x = M().double(), torch.randn(2, 4, dtype=torch.float64)
    s = fxgrow.widen(m, x, factor=2)
    assert s.a.out_features == 12
    assert fxgrow.compare(m, s, x).max_rel <= 1e-12
    assert {"alias", "keeps_zero", "pointwise"} <= registry.FUNCTIONS[torch.clone].traits
