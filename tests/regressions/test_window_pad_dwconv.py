"""Rules for ops that blocked timm families: ``Tensor.unfold`` / ``nn.Unfold`` (HaloNet, TNT),
padding modules and constant padding of a channel axis (NASNet, PNASNet), functional depthwise
convs (blur pools of ResNet-blur / DenseNet-blur / TResNet) and timm's activation modules inside
``BatchNormAct2d`` (EfficientFormerV2)."""

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


def op_reasons(a: fxgrow.Analysis) -> list[str]:
    return sorted({b.reason for g in a.all_groups for b in g.blockers if b.kind == "op"})


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


# -- Tensor.unfold and nn.Unfold ---------------------------------------------------------------
class Windows(nn.Module):
    """Overlapping spatial windows (HaloNet's kv.unfold(2, ..).unfold(3, ..))."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 5, 1)

    def forward(self, x):  # [B, 3, 6, 6]
        u = self.a(x).unfold(2, 3, 1).unfold(3, 3, 1)  # [B, 4, 4, 4, 3, 3]
        return self.b(u.amax(-1).sum(-1))


def test_tensor_unfold_keeps_channels():
    m, x = Windows().double().eval(), rand(2, 3, 6, 6)
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == []
    assert a.group("a").widenable and a.group("a").width == 4
    s = widen_exact(m, x, tol=1e-12, widths={"a": 7})
    assert s.a.out_channels == 7 and s.b.weight.shape == (5, 7, 1, 1)


class Im2col(nn.Module):
    """nn.Unfold rows c * K + k feeding a Linear (TNT's pixel embedding, then a projection)."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.functional = functional
        self.a = nn.Conv2d(3, 4, 1)
        self.unfold = nn.Unfold(kernel_size=2, stride=2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):  # [B, 3, 4, 4]
        h = torch.relu(self.a(x))
        cols = F.unfold(h, 2, stride=2) if self.functional else self.unfold(h)  # [B, 16, 4]
        return self.fc(cols.transpose(1, 2))


@pytest.mark.parametrize("functional", [False, True])
def test_unfold_im2col_rows_are_channel_times_kernel(functional):
    m, x = Im2col(functional).double().eval(), rand(2, 3, 4, 4)
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == []
    s = widen_exact(m, x, tol=1e-12, widths={"a": 6})
    assert s.a.out_channels == 6 and s.fc.weight.shape == (5, 24)  # 6 channels x 4 offsets


def test_unfold_over_channels_blocks_with_the_reason():
    class ChannelWindows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.a(x).unfold(1, 2, 1)

    a = fxgrow.analyze(ChannelWindows().eval(), torch.randn(1, 3, 4, 4))
    assert op_reasons(a) == ["axis cut into sliding windows: its size is fixed"]
    assert not a.group("a").widenable


# -- padding --------------------------------------------------------------------------------------
class Padded(nn.Module):
    """A spatial ZeroPad2d (NASNet's cells) and a constant pad of the channel axis."""

    def __init__(self, mode: str = "constant") -> None:
        super().__init__()
        self.mode = mode
        self.a = nn.Conv2d(3, 4, 1)
        self.pad = nn.ZeroPad2d((1, 0, 1, 0))
        self.b = nn.Conv2d(6, 5, 3)

    def forward(self, x):
        h = self.pad(torch.relu(self.a(x)))  # [B, 4, H + 1, W + 1]
        h = (
            F.pad(h, (0, 0, 0, 0, 1, 1), mode=self.mode, value=0.5)
            if self.mode == "constant"
            else F.pad(h.transpose(1, 3), (1, 1, 0, 0), mode=self.mode).transpose(1, 3)
        )
        return self.b(h)


def test_constant_pad_of_channels_is_a_cat_with_constants():
    m, x = Padded().double().eval(), rand(2, 3, 5, 5)
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == []
    s = widen_exact(m, x, tol=1e-12, widths={"a": 7})
    assert s.a.out_channels == 7 and s.b.in_channels == 9  # 1 + 7 + 1 padded


def test_reflect_pad_of_channels_blocks_with_the_reason():
    m, x = Padded("reflect").eval(), torch.randn(2, 3, 5, 5)
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == ["padded axis (cropped, or padded with copies of its end units)"]
    assert not a.group("a").widenable


@pytest.mark.parametrize("name", ["nasnetalarge"])
def test_nasnet_zero_pad_modules(name, one_thread):
    m = timm.create_model(
        name, pretrained=False, num_classes=10, stem_size=8, num_features=192
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    a = fxgrow.analyze(m, x)
    assert not [r for r in op_reasons(a) if "ZeroPad" in r or "padded" in r]
    g = a.group("conv0.conv")
    assert g.widenable
    widen_exact(m, x, widths={g.name: g.width + 4})


# -- functional depthwise conv (blur pool) --------------------------------------------------------
class Blur(nn.Module):
    """timm BlurPool2d's forward: a per-channel filter buffer [C, 1, k, k] with groups=C."""

    def __init__(self, keyword: bool) -> None:
        super().__init__()
        self.keyword = keyword
        self.a = nn.Conv2d(3, 4, 1)
        self.register_buffer("filt", torch.rand(4, 1, 3, 3, dtype=torch.float64))
        self.b = nn.Conv2d(4, 5, 1)

    def forward(self, x):
        h = F.pad(self.a(x), [1, 1, 1, 1], mode="reflect")
        h = (
            F.conv2d(h, self.filt, stride=2, groups=4)
            if self.keyword
            else F.conv2d(h, self.filt, None, 2, 0, 1, 4)
        )
        return self.b(h)


@pytest.mark.parametrize("keyword", [True, False])
def test_functional_depthwise_conv_grows_filter_and_groups(keyword):
    m, x = Blur(keyword).double().eval(), rand(2, 3, 6, 6)
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == []
    g = a.group("a")
    assert ("filt", 0, "scale") in {(mb.target, mb.axis, mb.role) for mb in g.members}
    s = widen_exact(m, x, tol=1e-12, widths={"a": 7})
    assert s.filt.shape == (7, 1, 3, 3) and s.b.in_channels == 7
    conv = next(n for n in s.graph.nodes if n.target in (F.conv2d, torch.conv2d))
    assert (conv.kwargs["groups"] if keyword else conv.args[6]) == 7


def test_resnetblur_blur_pool(one_thread):
    m = timm.create_model("resnetblur18", pretrained=False, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == []
    g = a.group("conv1")
    s = widen_exact(m, x, widths={g.name: 80})
    assert s.get_submodule("maxpool.1").filt.shape == (80, 1, 3, 3)


# -- timm activation modules inside BatchNormAct2d -------------------------------------------------
def test_batchnorm_act_with_timm_gelu():
    from timm.layers import BatchNormAct2d
    from timm.layers.activations import GELU

    class Stem(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3)
            self.bn = BatchNormAct2d(4, act_layer=GELU)
            self.b = nn.Conv2d(4, 5, 1)

        def forward(self, x):
            return self.b(self.bn(self.a(x)))

    m, x = Stem().double().eval(), rand(2, 3, 6, 6)
    assert isinstance(m.bn.act, GELU)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == []
    s = widen_exact(m, x, tol=1e-12, widths={"a": 6})
    assert s.bn.num_features == 6 and s.bn.running_var.shape == (6,)


# -- timm's relative-position logits, kept whole ----------------------------------------------------
class RelAttn(nn.Module):
    def __init__(self, halo: bool) -> None:
        super().__init__()
        from timm.layers.bottleneck_attn import BottleneckAttn
        from timm.layers.halo_attn import HaloAttn

        self.a = nn.Conv2d(3, 16, 1)
        self.attn = (
            HaloAttn(16, num_heads=2, block_size=4, halo_size=1)
            if halo
            else BottleneckAttn(16, feat_size=(4, 4), num_heads=2)
        )
        self.b = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        return self.b(self.attn(self.a(x)))


@pytest.mark.parametrize("halo", [False, True])
def test_relative_position_logits_kept_whole(halo):
    from timm.layers.bottleneck_attn import PosEmbedRel
    from timm.layers.halo_attn import PosEmbedRel as HaloPosEmbedRel

    m = RelAttn(halo).eval()
    x = torch.randn(1, 3, 8, 8) if halo else torch.randn(1, 3, 4, 4)
    gm = fxgrow.trace(m)
    assert [
        n.target
        for n in gm.graph.nodes
        if n.op == "call_module"
        and isinstance(gm.get_submodule(n.target), (PosEmbedRel, HaloPosEmbedRel))
    ] == ["attn.pos_embed"]
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == []
    g = a.group("a")
    assert g.widenable
    s = widen_exact(m, x, widths={"a": 24})
    assert s.b.in_channels == 16  # the attention's output projection is another group
    s = widen_exact(m, x, factor=2)  # every group: heads, head dims, the tables' columns
    pe = s.get_submodule("attn.pos_embed")
    assert (
        pe.width_rel.shape[1] == pe.dim_head
        and pe.height_rel.shape[0] == m.attn.pos_embed.height_rel.shape[0]
    )


def test_botnet(one_thread):
    m = timm.create_model("botnet26t_256", pretrained=False, img_size=64, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == []
    widen_exact(m, x, factor=1.5)
