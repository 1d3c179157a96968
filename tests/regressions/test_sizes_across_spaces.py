"""Sizes read from one channel space that size an axis of another (issue 11, item 1).

``b, c, h, w = x.shape`` then ``t.reshape(b, c, h, w)`` where ``t`` lives in another channel
space than ``x``: the reshape's constants follow ``t``'s widths, and the size ``c`` read at run
time follows ``x``'s.  fxgrow rewrote the reshape only when ``t``'s space grew, so a student
in which only ``x``'s space grew read the wider ``c`` at run time and did not run (pvt_v2,
beit, maxvit) or, with a ``-1`` taking up the difference, ran and was silently wrong.  The
rewrite now runs when either space grows (``context.ArgRule``)."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from helpers import widen_exact

import fxgrow


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class TokenMixer(nn.Module):
    """The token mixer of the issue; a softmax over ``lin_c``'s output keeps that space at its
    width while the conv's (where ``c`` is read) grows."""

    def __init__(self, minus_one: bool = False) -> None:
        super().__init__()
        self.minus_one = minus_one
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.lin_c = nn.Linear(8, 8)
        self.lin_hw = nn.Linear(16, 16)
        self.fc = nn.Linear(8 * 16, 5)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = self.lin_c(t).softmax(-1).transpose(1, 2)
        if self.minus_one:  # runs with a wider c, giving a wrong (transposed) order
            y = self.lin_hw(t).reshape(b, c, -1).transpose(1, 2)
        else:
            y = self.lin_hw(t).reshape(b, c, h, w)
        return self.fc(y.reshape(b, -1))


@pytest.mark.parametrize("minus_one", [False, True])
def test_token_mixer_reshape_with_size_of_another_space(minus_one):
    m = TokenMixer(minus_one).double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert "conv" in {g.name for g in fxgrow.analyze(m, x).widenable}
    s = widen_exact(m, x, tol=1e-12, widths={"conv": 16})
    assert s.conv.out_channels == s.lin_c.in_features == 16
    assert s.lin_c.out_features == 8
    reshape = next(n for n in s.graph.nodes if n.target == "reshape")
    assert reshape.args[2] == 8  # c is a constant now: the width of lin_c, not of conv


class HeadsMerge(nn.Module):
    """pvt_v2's and beit's attention: ``B, N, C = x.shape`` sizes the merge of the heads, whose
    space (one head, its head dim fixed by the scale) keeps its width."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 12)
        self.q, self.k, self.v = nn.Linear(12, 6), nn.Linear(12, 6), nn.Linear(12, 6)
        self.proj = nn.Linear(6, 12)
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        x = self.inp(x)
        B, N, C = x.shape
        q, k, v = (f(x).reshape(B, N, 1, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(x + self.proj(a.transpose(1, 2).reshape(B, N, C // 2)))


def test_heads_merge_sized_by_the_residual_stream():
    m = HeadsMerge().double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    s = widen_exact(m, x, tol=1e-12, widths={"inp": 20})
    assert s.inp.out_features == s.proj.out_features == 20 and s.v.out_features == 6


# -- the real models of the issue (small inputs) -------------------------------------------------
def _grow_exact(model: nn.Module, x: torch.Tensor, tol: float = 1e-5) -> fxgrow.Analysis:
    model = model.eval()
    a = fxgrow.analyze(model, x)
    assert a.widenable
    s = widen_exact(model, x, tol=tol, factor=1.5)
    grown = sum(p.numel() for p in s.parameters())
    assert grown > sum(p.numel() for p in model.parameters())
    return a


def test_pvt_v2_b0():
    _grow_exact(timm.create_model("pvt_v2_b0"), torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("name", ["beit_base_patch16_224", "beitv2_base_patch16_224"])
def test_beit(name):
    m = timm.create_model(name, img_size=32, depth=2)
    _grow_exact(m, torch.randn(1, 3, 32, 32))


def test_maxvit_small():
    """torchvision's MaxViT with two one-block stages at 56 px (window and grid of 7)."""
    from torchvision.models.maxvit import MaxVit

    m = MaxVit(
        input_size=(56, 56),
        stem_channels=16,
        partition_size=7,
        block_channels=[16, 32],
        block_layers=[1, 1],
        head_dim=8,
        stochastic_depth_prob=0.0,
        num_classes=10,
    )
    a = _grow_exact(m, torch.randn(1, 3, 56, 56))
    # its einsum attention and gathered relative-position bias block nothing as ops
    assert not [b for g in a.all_groups for b in g.blockers if b.kind == "op"]


@pytest.mark.slow
def test_maxvit_t():
    _grow_exact(torchvision.models.maxvit_t(), torch.randn(1, 3, 224, 224))


# -- sizes read from a channel tensor and used elsewhere (issue 11, item 6) ------------------------
class SizeArithmetic(nn.Module):
    """``low.shape[-2:]`` sizes an interpolation (LR-ASPP, DeepLabV3): only the spatial sizes
    are used, so ``low``'s channels may grow; ``c // 2`` sizes a view of a channel axis and is
    rewritten."""

    def __init__(self) -> None:
        super().__init__()
        self.low, self.high = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.out = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        low, high = self.low(x), self.high(x)
        y = low + nn.functional.interpolate(high, size=low.shape[-2:], mode="nearest")
        b, c, h, w = y.shape
        z = y.view(b, c // 2, 2 * h * w).softmax(-1)  # pairs of channels x positions
        return self.out(z.reshape(b, c, h, w))


def test_sizes_from_a_channel_tensor_in_arithmetic_and_slices():
    m = SizeArithmetic().double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    # the softmax fixes the pair factor 2 of the view; nothing blocks on a size
    assert {b.reason for g in a.all_groups for b in g.blockers if b.kind == "op"} == {
        "softmax along this axis mixes its positions"
    }
    assert [g.name for g in a.widenable] == ["low"]  # low and high: one group, by the add
    s = widen_exact(m, x, tol=1e-12, widths={"low": 10})
    assert s.low.out_channels == s.high.out_channels == s.out.in_channels == 10
    view = next(n for n in s.graph.nodes if n.target == "view")
    assert view.args[2] == 5  # c // 2 of the student, a constant


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_segmentation_heads_sized_from_channel_tensors(name):
    m = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None)
    x = torch.randn(1, 3, 64, 64)
    a = _grow_exact(m, x)
    assert not [b for g in a.all_groups for b in g.blockers if b.kind == "op"]


def test_inplace_update_kept_when_a_reshape_is_rewritten():
    """An in-place update whose result is discarded, in a model where a reshape constant is
    rewritten (so the rewrite runs dead-code elimination)."""
    from fuzz.archs import Program, Step
    from fuzz.check import check_program

    report = check_program(
        Program(
            ("seq", 4, 6),
            [
                Step("linear", (0,), {"out": 6, "bias": True}),
                Step("shape_mix", (1,), {"form": "issue", "block": True}),
                Step("inplace", (2,), {"forms": ["mul_discard", "relu_discard"]}),
            ],
            ((3, "linear"),),
        )
    )
    assert not report.failures, "\n".join(str(f) for f in report.failures)
