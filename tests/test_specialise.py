"""Control flow on sizes inside timm's no-trace leaves, specialised to the example inputs
(``frontend/specialise.py``, guards in ``frontend/guards.py``), on minimal graphs; recurrent
layers, pad modules and weight standardisation (rules)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import widen_exact
from timm.layers import register_notrace_module

import fxgrow
from fxgrow.errors import FxgrowError
from fxgrow.frontend.guards import SpecialisedGraphError, traced_as


@pytest.fixture(autouse=True)
def _seed(one_thread):
    torch.manual_seed(0)


@register_notrace_module
class _Resize(nn.Module):
    """Branches on the spatial size and makes an int of it (what fx cannot trace)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 1)

    def forward(self, x):
        H, W = x.shape[-2:]
        if H % 4 != 0:
            x = F.interpolate(x, size=(8, 8), mode="bilinear")
        pad = int(math.ceil(W / 4) * 4 - W) + int(math.sqrt(W)) - int(W**0.5)
        if pad > 0:
            x = F.pad(x, (0, pad))
        return self.conv(x)


@register_notrace_module
class _ChannelGate(nn.Module):
    """Branches on the channel count: the branch must not be baked into a wider student."""

    def forward(self, x):
        if x.shape[1] == 4:
            return x * 2
        return x


@register_notrace_module
class _DataGate(nn.Module):
    """Branches on tensor data: never specialised."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


@register_notrace_module
class _DtypeGate(nn.Module):
    """Branches on the dtype: never specialised (the float64 reference takes another)."""

    def forward(self, x):
        if x.dtype == torch.float32:
            return x * 2
        return x


class _Net(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.inner = inner
        c = 6 if isinstance(inner, _Resize) else 4
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        return self.head(self.inner(self.stem(x)).relu())


def _guards(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is traced_as]


def test_spatial_control_flow_specialised_and_guarded():
    m = _Net(_Resize()).eval()
    # without example inputs fx cannot trace it: it stays one call
    assert any(n.op == "call_module" and n.target == "inner" for n in fxgrow.trace(m).graph.nodes)
    x = torch.randn(2, 3, 10, 10)
    a = fxgrow.analyze(m, x)
    assert not [b for g in a.all_groups for b in g.blockers if b.kind == "op"]
    assert {"stem", "inner.conv"} <= {g.name for g in a.widenable}
    s = widen_exact(m, x, factor=2)
    assert s.get_submodule("inner.conv").out_channels == 12
    assert len(_guards(s)) == 4  # H % 4 != 0 and three int()s (sqrt 10 is not whole)
    assert s(torch.randn(1, 3, 10, 10)).shape == (1, 2, 8, 10)  # same branches: runs
    with pytest.raises(SpecialisedGraphError, match="traced for inputs where"):
        s(torch.randn(1, 3, 8, 8))  # H % 4 == 0: the other branch


def test_control_flow_on_a_channel_size_blocks_that_group():
    m = _Net(_ChannelGate()).eval()
    x = torch.randn(2, 3, 8, 8)
    a = fxgrow.analyze(m, x)
    stem = a.group("stem")
    assert not stem.widenable
    assert any(
        "decides control flow" in b.reason and "x.shape[1] == 4" in b.reason for b in stem.blockers
    )
    with pytest.raises(fxgrow.BlockedGroupError):
        fxgrow.widen(m, x, widths={"stem": 8})


@pytest.mark.parametrize("gate", [_DataGate, _DtypeGate])
def test_control_flow_on_data_or_dtype_keeps_the_module_whole(gate):
    m = _Net(gate()).eval()
    x = torch.randn(2, 3, 8, 8)
    from fxgrow.api import capture

    gm = capture(m, (x,))
    assert any(n.op == "call_module" and n.target == "inner" for n in gm.graph.nodes)
    a = fxgrow.analyze(m, x)
    assert any("no rule for module" in b.reason for b in a.group("stem").blockers)


class _Recurrent(nn.Module):
    def __init__(self, kind: type, **kw) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.rnn = kind(8, 5, batch_first=True, **kw)
        self.b = nn.Linear(5 * (2 if self.rnn.bidirectional else 1), 3)

    def forward(self, x):
        y, _ = self.rnn(self.a(x).tanh())
        return self.b(y)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("kw", [{}, {"bidirectional": True, "num_layers": 2}])
def test_recurrent_layers_grow_exactly(kind, kw):
    m = _Recurrent(kind, **kw).double().eval()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    s = widen_exact(
        m, x, tol=1e-12, widths={"a": 11, "rnn": 9 * {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[kind]}
    )
    rnn = s.get_submodule("rnn")
    assert (rnn.input_size, rnn.hidden_size) == (11, 9)
    assert rnn.weight_hh_l0.shape[1] == 9


def test_lstm_with_projection_or_initial_state_is_refused():
    m = _Recurrent(nn.LSTM, proj_size=2)
    m.b = nn.Linear(2, 3)
    a = fxgrow.analyze(m, torch.randn(2, 7, 6))
    assert any("proj_size" in b.reason for b in a.group("a").blockers)


def test_pad_modules():
    m = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.ZeroPad2d((1, 2, 0, 1)), nn.ReflectionPad2d(1), nn.Conv2d(4, 2, 3)
    ).eval()
    x = torch.randn(1, 3, 6, 6)
    s = widen_exact(m, x, widths={"0": 7})
    assert s.get_submodule("0").out_channels == 7
    channel_pad = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.ConstantPad3d((0, 0, 0, 0, 1, 0), 0.5), nn.Conv2d(5, 2, 1)
    ).eval()
    # a constant pad of the channel axis is a cat with a constant unit: the channels still grow
    s = widen_exact(channel_pad, x, widths={"0": 8})
    assert s.get_submodule("2").in_channels == 9


def test_weight_standardisation_grows_out_channels():
    """A standardised conv's rows are standardised one by one: its outputs grow.  The space
    between two standardised convs (produced through one standardisation, read through the
    other's fan-in statistics) stays whole."""
    from timm.layers import StdConv2d

    m = nn.Sequential(
        StdConv2d(3, 4, 3), nn.ReLU(), StdConv2d(4, 5, 1), nn.ReLU(), nn.Conv2d(5, 2, 1)
    ).eval()
    x = torch.randn(1, 3, 8, 8)
    a = fxgrow.analyze(m, x)
    assert not next(g for g in a.all_groups if g.name == "0").widenable
    assert a.group("2").widenable  # read by a plain conv
    s = widen_exact(m, x, widths={"2": 8})
    assert s.get_submodule("2").weight.shape == (8, 4, 1, 1)
    with pytest.raises(FxgrowError):
        fxgrow.widen(m, x, widths={"0": 8})


def _op_blockers(a) -> list[str]:
    """The op blockers of channel groups."""
    return sorted({str(b) for g in a.groups for b in g.blockers if b.kind == "op"})


@pytest.mark.parametrize(
    "name, kw, left",
    [
        # GPSA fills a tensor of relative positions by item assignment; left: torch.zeros sized
        # by the token count has no rule (qk[0] / qk[1] together are an unbind: structure)
        (
            "convit_tiny",
            {"img_size": 32, "depth": 2, "embed_dim": 48, "num_heads": 4},
            {"no rule for function torch.zeros; fxgrow does not know how it treats channels"},
        ),
        ("mobilevit_xxs", {}, set()),  # MobileVitBlock resizes to whole patches
        ("vgg11", {"mlp_ratio": 0.125, "num_classes": 10}, set()),  # ConvMlp checks the input size
        ("test_vit", {"img_size": 48}, set()),  # resample_abs_pos_embed: sizes equal, no-op
    ],
)
def test_timm_leaves_traced_through(name, kw, left):
    m = timm.create_model(name, pretrained=False, **kw).eval()
    x = (
        torch.randn(1, 3, 32, 32)
        if "img_size" not in kw
        else torch.randn(1, 3, kw["img_size"], kw["img_size"])
    )
    gm = fxgrow.api.capture(m, (x,))
    assert _guards(gm)
    a = fxgrow.analyze(m, x)
    assert {b.split(": ", 1)[1] for b in _op_blockers(a)} == left
    widen_exact(m, x, factor=1.5)


def test_timm_sequencer_lstm_hidden_units_grow():
    m = timm.create_model(
        "sequencer2d_s",
        pretrained=False,
        layers=(1, 1),
        patch_sizes=(4, 2),
        embed_dims=(16, 24),
        hidden_sizes=(8, 12),
        mlp_ratios=(2.0, 2.0),
        num_classes=5,
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    a = fxgrow.analyze(m, x)
    assert not [b for b in _op_blockers(a) if "LSTM" in b]
    rnn = "stages.0.blocks.0.rnn_tokens.rnn_v"
    assert a.group(rnn).widenable
    s = widen_exact(m, x, widths={rnn: 4 * 12})
    assert s.get_submodule(rnn).hidden_size == 12
