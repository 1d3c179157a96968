"""Views and sizes written out by hand that blocked timm families: ``qkv[0], qkv[1], qkv[2]``
(CaiT), RoPE's ``x[..., ::2]`` / ``x[..., 1::2]`` (EVA-02), ``pos.repeat(B, 1, 1, 1)``
(XCiT), ``reshape(x.shape[:-1] + (-1,))`` (MaxViT), a parameter read for its ``.device``
(EdgeNeXt) and ``F.fold`` (VOLO); FocalNet's one-unit gates stay an honest refusal."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import widen_exact

import fxgrow


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def blockers(a: fxgrow.Analysis, kind: str) -> list[str]:
    return sorted({b.reason for g in a.all_groups for b in g.blockers if b.kind == kind})


def exact(m: nn.Module, x, **kw) -> torch.fx.GraphModule:
    return widen_exact(m, x, tol=1e-12, **kw)


# -- integer indexes taking every position: unbind written out -----------------------------------
class FusedThree(nn.Module):
    def __init__(self, every: bool) -> None:
        super().__init__()
        self.every = every
        self.qkv = nn.Linear(4, 3 * 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):  # [B, N, 4]
        B, N, _ = x.shape
        t = self.qkv(x).reshape(B, N, 3, 6).permute(2, 0, 1, 3)
        if self.every:
            q, k, v = t[0], t[1], t[2]
            return self.out(q * k + v)
        return self.out(t[0] * t[1])


def test_every_position_indexed_is_structure():
    m, x = FusedThree(True).double().eval(), rand(2, 5, 4)
    a = fxgrow.analyze(m, x)
    assert blockers(a, "op") == []
    assert any("an unbind written out" in r for r in blockers(a, "structure"))
    s = exact(m, x, widths={"qkv": 27})
    assert s.qkv.out_features == 27 and s.out.in_features == 9


def test_one_position_indexed_still_blocks():
    a = fxgrow.analyze(FusedThree(False).eval(), torch.randn(2, 5, 4))
    assert blockers(a, "op") == ["selected by an integer index"]


# -- strided slices: RoPE pairs -----------------------------------------------------------------
class Rope(nn.Module):
    """timm's ``rot``: (x0, x1) -> (-x1, x0) per pair, mixed with per-position sin / cos."""

    def __init__(self, both: bool = True) -> None:
        super().__init__()
        self.both = both
        self.a = nn.Linear(4, 6)
        self.register_buffer("sin", torch.rand(5, 6, dtype=torch.float64))
        self.register_buffer("cos", torch.rand(5, 6, dtype=torch.float64))
        self.b = nn.Linear(6, 3)

    def forward(self, x):  # [B, 5, 4]
        y = self.a(x)
        if not self.both:
            return self.b(torch.cat([y[..., ::2], y[..., ::2]], -1))
        rot = torch.stack([-y[..., 1::2], y[..., ::2]], -1).reshape(y.shape)
        return self.b(y * self.cos + rot * self.sin)


def test_rope_strided_slices_grow_by_pairs():
    m, x = Rope().double().eval(), rand(2, 5, 4)
    a = fxgrow.analyze(m, x)
    assert blockers(a, "op") == []
    g = a.group("a")
    assert g.widenable and g.width == 6
    s = exact(m, x, widths={"a": 10})
    # the 3 pairs grow to 5: each buffer row keeps its (sin, cos) pairs together
    assert s.a.out_features == 10 and s.sin.shape == (5, 10) and s.b.in_features == 10
    with pytest.raises(fxgrow.WidthError):
        fxgrow.widen(m, x, widths={"a": 7})  # half a pair


def test_one_strided_slice_fixes_the_step():
    a = fxgrow.analyze(Rope(both=False).eval(), torch.randn(2, 5, 4))
    assert blockers(a, "op") == ["strided slice: the step must stay"]


def test_eva02_rope():
    m = timm.create_model("eva02_tiny_patch14_224", img_size=28, depth=2).eval()
    x = torch.randn(1, 3, 28, 28)
    a = fxgrow.analyze(m, x)
    assert "strided slice on this axis" not in blockers(a, "op")
    g = a.group("blocks.0.attn.qkv")
    assert g.widenable
    widen_exact(m, x, widths={g.name: g.width + 3 * 64})  # one more head of 64


# -- repeat counts and shapes read at run time --------------------------------------------------
class PosRepeat(nn.Module):
    def __init__(self, from_channels: bool = False) -> None:
        super().__init__()
        self.from_channels = from_channels
        self.a = nn.Conv2d(3, 4, 1)
        self.pos = nn.Parameter(torch.randn(1, 4, 3, 3, dtype=torch.float64))
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        h = self.a(x)
        if self.from_channels:
            return self.b(h + self.pos.repeat(1, 1, 1, h.shape[1] // 4))[..., :3]
        return self.b(h + self.pos.repeat(x.shape[0], 1, 1, 1))


def test_repeat_count_read_from_the_batch_axis():
    m, x = PosRepeat().double().eval(), rand(2, 3, 3, 3)
    a = fxgrow.analyze(m, x)
    assert blockers(a, "op") == []
    s = exact(m, x, widths={"a": 6})
    assert s.pos.shape == (1, 6, 3, 3)


def test_repeat_count_read_from_a_channel_axis_blocks():
    a = fxgrow.analyze(PosRepeat(True).eval(), torch.randn(2, 3, 3, 3))
    g = next(g for g in a.all_groups if g.name == "a")
    assert not g.widenable
    assert any("repeat counts are read from the size of this axis" in b.reason for b in g.blockers)


class RestoreShape(nn.Module):
    """MaxViT's ``x.reshape(restore_shape + (-1,))`` with ``restore_shape = x.shape[:-1]``."""

    def __init__(self, constant: bool = False) -> None:
        super().__init__()
        self.constant = constant
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 2)

    def forward(self, x):  # [B, N, 4]
        restore = x.shape[:-1]
        h = self.a(x).reshape(x.shape[0], x.shape[1], 2, 3).transpose(2, 3)
        return self.b(h.reshape(restore + ((6,) if self.constant else (-1,))))


def test_reshape_to_a_shape_joined_at_run_time():
    m, x = RestoreShape().double().eval(), rand(2, 5, 4)
    a = fxgrow.analyze(m, x)
    assert blockers(a, "op") == []
    s = exact(m, x, widths={"a": 12})  # (2, 3) -> (2, 6), transposed, back to 12 channels
    assert s.a.out_features == 12 and s.b.in_features == 12


def test_reshape_to_a_joined_shape_with_a_constant_channel_blocks():
    a = fxgrow.analyze(RestoreShape(constant=True).eval(), torch.randn(2, 5, 4))
    assert any("a channel entry computed or written as a constant" in r for r in blockers(a, "op"))


def test_maxvit_restore_shape():
    m = timm.create_model("maxvit_pico_rw_256", img_size=64, depths=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 3, 64, 64)
    a = fxgrow.analyze(m, x)
    assert blockers(a, "op") == []
    g = a.group("stem.conv1")
    widen_exact(m, x, widths={g.name: g.width + 8})


# -- a parameter read for its device / dtype -----------------------------------------------------
class DeviceRead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        w = self.b.weight
        bias = torch.ones(1, device=w.device, dtype=w.dtype)
        return self.b(self.a(x)) + bias


def test_parameter_read_for_its_metadata_is_not_copied():
    m, x = DeviceRead().double().eval(), rand(2, 3, 3, 3)
    a = fxgrow.analyze(m, x)
    assert blockers(a, "op") == []
    s = exact(m, x, widths={"a": 7})
    assert s.b.weight.shape == (2, 7, 1, 1)


# -- F.fold, and a one-unit gate ------------------------------------------------------------------
class FoldBack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.fold = nn.Fold((4, 4), 2, stride=2)
        self.b = nn.Conv2d(4, 2, 1)

    def forward(self, x):  # [B, 3, 4, 4]
        cols = F.unfold(self.a(x), 2, stride=1, padding=0)  # [B, 16, 9]
        cols = torch.sigmoid(cols)
        y = F.fold(cols, (4, 4), 2, stride=1) + self.fold(cols[..., :4])
        return self.b(y)


def test_fold_sums_rows_back_into_channels():
    m, x = FoldBack().double().eval(), rand(2, 3, 4, 4)
    a = fxgrow.analyze(m, x)
    assert blockers(a, "op") == []
    s = exact(m, x, widths={"a": 6})
    assert s.b.in_channels == 6


class Gate(nn.Module):
    """FocalNet's ``ctx * gates[:, l:l + 1]``: one gate unit scales every channel."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Conv2d(3, 4 + 2, 1)
        self.h = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        ctx, gates = torch.split(self.f(x), (4, 2), 1)
        return self.h(ctx * gates[:, 0:1] + ctx * gates[:, 1:])


def test_one_unit_gate_stays_one_unit_and_the_rest_grows():
    # (as a [B, 1, H, W] mask: a unit broadcast over many must stay one unit, and says so)
    m, x = Gate().double().eval(), rand(2, 3, 3, 3)
    a = fxgrow.analyze(m, x)
    assert blockers(a, "op") == ["broadcast against a wider axis: must stay of size 1"]
    s = exact(m, x, widths={"f[0:4]": 6})
    assert s.f.out_channels == 8 and s.h.in_channels == 6


def test_xcit_positional_encoding_repeat():
    m = timm.create_model("xcit_nano_12_p8_224", img_size=32, depth=2).eval()
    x = torch.randn(1, 3, 32, 32)
    a = fxgrow.analyze(m, x)
    # (x[:, 0] picks the class token from the token axis: not a channel group)
    assert not [b for g in a.groups for b in g.blockers if b.kind == "op"]
    assert "repeat" not in " ".join(blockers(a, "op"))
    g = a.group("pos_embed.token_projection")
    widen_exact(m, x, widths={g.name: g.width * 2})


def test_focalnet_gates():
    from timm.models.focalnet import FocalNet

    m = FocalNet(depths=(1, 1), embed_dim=32, focal_levels=(3, 3), num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    a = fxgrow.analyze(m, x)
    # q and ctx grow; the 4 gates (3 focal levels + the global one) stay one unit each
    assert blockers(a, "op") == ["broadcast against a wider axis: must stay of size 1"]
    assert a.group("layers.0.blocks.0.modulation.f[0:32]").widenable
    assert a.group("layers.0.blocks.0.modulation.f[32:64]").widenable
    widen_exact(m, x, factor=2)
