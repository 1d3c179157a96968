"""Module forms of rules that read their module's attributes (``RuleContext.module_as``): each
grows exactly, or keeps its width for the reason the module gives."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import widen_exact

import fxgrow
from fxgrow.analysis.context import AnalysisState, RuleContext, RuleError

TOL = 1e-12  # float64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class ConvAround(nn.Module):
    """conv (3 -> c) -> relu -> mid -> conv (c_after -> 5)."""

    def __init__(self, mid: nn.Module, c: int, c_after: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, c, 1)
        self.mid = mid
        self.b = nn.Conv2d(c_after, 5, 1)

    def forward(self, x):
        return self.b(self.mid(torch.relu(self.a(x))))


class LinearAround(nn.Module):
    """linear (3 -> c) -> relu -> mid -> linear (c_after -> 5)."""

    def __init__(self, mid: nn.Module, c: int, c_after: int) -> None:
        super().__init__()
        self.a = nn.Linear(3, c)
        self.mid = mid
        self.b = nn.Linear(c_after, 5)

    def forward(self, x):
        return self.b(self.mid(torch.relu(self.a(x))))


class UnfoldLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.mid = nn.Unfold(kernel_size=2)
        self.b = nn.Linear(16, 5)

    def forward(self, x):
        return self.b(self.mid(torch.relu(self.a(x))).transpose(1, 2))


class FlattenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.mid = nn.Flatten(1)
        self.b = nn.Linear(4 * 16, 5)

    def forward(self, x):
        return self.b(self.mid(torch.relu(self.a(x))))


class LinearFold(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 16)
        self.mid = nn.Fold(output_size=(3, 3), kernel_size=2)
        self.b = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        return self.b(self.mid(torch.relu(self.a(x)).transpose(1, 2)))


class Recurrent(nn.Module):
    def __init__(self, cls: type[nn.RNNBase]) -> None:
        super().__init__()
        self.a = nn.Linear(3, 6)
        self.mid = cls(6, 7, num_layers=2, batch_first=True, bidirectional=True)
        self.b = nn.Linear(14, 5)

    def forward(self, x):
        return self.b(self.mid(torch.relu(self.a(x)))[0])


def image() -> torch.Tensor:
    return torch.randn(2, 3, 4, 4, dtype=torch.float64)


def tokens() -> torch.Tensor:
    return torch.randn(2, 4, 3, dtype=torch.float64)


# name -> (model, input, the layer whose output grows, its width in the student of factor=2)
GROWING = {
    "GLU": (lambda: ConvAround(nn.GLU(1), 8, 4), image, "a", 16),
    "ZeroPad2d": (lambda: ConvAround(nn.ZeroPad2d(1), 4, 4), image, "a", 8),
    "ReflectionPad2d": (lambda: ConvAround(nn.ReflectionPad2d(1), 4, 4), image, "a", 8),
    "Softmax": (lambda: ConvAround(nn.Softmax(dim=-1), 4, 4), image, "a", 8),
    "LogSoftmax": (lambda: ConvAround(nn.LogSoftmax(dim=2), 4, 4), image, "a", 8),
    "PReLU": (lambda: ConvAround(nn.PReLU(4), 4, 4), image, "a", 8),
    "PixelUnshuffle": (lambda: ConvAround(nn.PixelUnshuffle(2), 4, 16), image, "a", 8),
    "ChannelShuffle": (lambda: ConvAround(nn.ChannelShuffle(2), 4, 4), image, "a", 8),
    "Flatten": (FlattenLinear, image, "a", 8),
    "Unflatten": (
        lambda: LinearAround(nn.Unflatten(-1, (2, 4)), 8, 4),
        lambda: torch.randn(2, 3, dtype=torch.float64),
        "a",
        16,
    ),
    "Unfold": (UnfoldLinear, image, "a", 8),
    "Fold": (LinearFold, tokens, "a", 32),
    "LSTM": (lambda: Recurrent(nn.LSTM), tokens, "a", 12),
    "GRU": (lambda: Recurrent(nn.GRU), tokens, "a", 12),
}


@pytest.mark.parametrize("name", sorted(GROWING))
def test_module_rule_grows_exactly(name):
    build, inputs, layer, width = GROWING[name]
    m, x = build().double().eval(), inputs()
    s = widen_exact(m, x, tol=TOL, factor=2)
    grown = getattr(s, layer)
    assert (getattr(grown, "out_channels", None) or grown.out_features) == width


def test_recurrent_attributes_follow():
    m, x = Recurrent(nn.LSTM).double().eval(), tokens()
    s = widen_exact(m, x, tol=TOL, factor=2)
    assert (s.mid.input_size, s.mid.hidden_size) == (12, 14)
    assert s.mid.weight_ih_l1.shape == (4 * 14, 2 * 14)


@pytest.mark.parametrize(
    "mid, reason",
    [
        (nn.Softmax2d(), "Softmax2d along this axis mixes its positions"),
        (nn.LocalResponseNorm(2), "LocalResponseNorm along this axis mixes its positions"),
    ],
)
def test_module_rule_keeps_channels(mid, reason):
    m, x = ConvAround(mid, 4, 4).double().eval(), image()
    (g,) = [g for g in fxgrow.groups(m, x) if g.name == "a"]
    assert not g.widenable
    assert any(reason in b.reason for b in g.blockers), [b.reason for b in g.blockers]
    s = widen_exact(m, x, tol=TOL, factor=2)
    assert s.a.out_channels == 4


def test_embedding_max_norm_keeps_its_width():
    class Emb(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 6, max_norm=1.0)
            self.b = nn.Linear(6, 5)

        def forward(self, ids):
            return self.b(self.emb(ids))

    m, ids = Emb().double().eval(), torch.randint(0, 10, (2, 4))
    blocked = [g for g in fxgrow.groups(m, ids) if not g.widenable]
    assert any(
        "max_norm renormalises over the embedding dimension" in b.reason
        for g in blocked
        for b in g.blockers
    )


def test_module_as_and_required_parameters():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4, bias=False)

        def forward(self, x):
            return self.fc(x)

    gm = torch.fx.symbolic_trace(Net())
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    cx = RuleContext(AnalysisState(gm, {}), node)
    assert cx.module_as(nn.Linear) is gm.fc
    with pytest.raises(RuleError, match="expected a Conv2d module, got Linear"):
        cx.module_as(nn.Conv2d)
    assert cx.spaces.size(cx.module_param_required("weight", 1, None)) == 3
    assert cx.module_param("bias", 0, None) is None
    with pytest.raises(RuleError, match="module fc has no parameter 'bias'"):
        cx.module_param_required("bias", 0, None)
