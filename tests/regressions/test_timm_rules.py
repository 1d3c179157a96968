"""Rules that blocked real timm / torchvision models (issue 11, item 6), on those models.

* hand-written attention (``fused_attn=False``) grows its heads as SDPA does;
* relative-position bias tables gathered by an index tensor keep their heads a channel space;
* timm's no-trace modules and functions without a rule are traced through (Swin's
  ``window_reverse``, NFNet's ``NormFreeBlock``), and ``Conv2dSame`` / ``MaxPool2dSame`` /
  ``AvgPool2dSame`` have rules."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
from helpers import widen_exact

import fxgrow


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def op_blockers(a: fxgrow.Analysis) -> list[str]:
    return sorted({str(b) for g in a.all_groups for b in g.blockers if b.kind == "op"})


def op_reasons(a: fxgrow.Analysis) -> list[str]:
    return sorted({b.reason for g in a.all_groups for b in g.blockers if b.kind == "op"})


def _unfuse(m: nn.Module) -> nn.Module:
    for mod in m.modules():
        if hasattr(mod, "fused_attn"):
            mod.fused_attn = False
    return m


def test_vit_hand_written_attention_same_groups_as_fused():
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    fused = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2).double().eval()
    hand = _unfuse(timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2))
    hand = hand.double().eval()
    hand.load_state_dict(fused.state_dict())
    ga, gb = fxgrow.analyze(fused, x), fxgrow.analyze(hand, x)
    # (the one op blocker of both is x[:, 0] picking the class token of the token axis)
    assert op_reasons(gb) == op_reasons(ga) == ["selected by an integer index"]
    assert [(g.name, g.width, g.widenable) for g in ga.groups] == [
        (g.name, g.width, g.widenable) for g in gb.groups
    ]
    assert "blocks.0.attn.qkv" in {g.name for g in gb.widenable}
    s = widen_exact(hand, x, tol=1e-12, widths={"blocks.0.attn.qkv": 576 * 2})
    assert s.get_submodule("blocks.0.attn.qkv").out_features == 1152  # 3 x 6 heads x 64


def test_swin_window_reverse_traced_through_and_bias_table_heads_grow():
    m = timm.create_model(
        "swin_tiny_patch4_window7_224",
        img_size=32,
        window_size=4,
        embed_dim=24,
        depths=(1, 1),
        num_heads=(2, 4),
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    gm = fxgrow.trace(m)
    assert not any(
        n.op == "call_function" and n.target.__name__ == "window_reverse" for n in gm.graph.nodes
    )
    a = fxgrow.analyze(m, x)
    assert op_blockers(a) == []
    heads = a.group("layers.0.blocks.0.attn.qkv")
    assert heads.widenable
    assert ("layers.0.blocks.0.attn.relative_position_bias_table", 1) in {
        (mb.target, mb.axis) for mb in heads.members if mb.kind == "parameter"
    }
    s = widen_exact(m, x, factor=2)
    table = s.get_submodule("layers.0.blocks.0.attn").relative_position_bias_table
    assert table.shape == (49, 4)  # (2 * 4 - 1) ** 2 entries (fixed) x 2 -> 4 heads


def test_beit_relative_position_bias():
    m = timm.create_model(
        "beit_base_patch16_224", img_size=32, depth=2, embed_dim=48, num_heads=2
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    a = fxgrow.analyze(m, x)
    assert op_reasons(a) == []  # (mean pooling: no class token picked)
    assert a.group("blocks.0.attn.qkv").widenable
    s = widen_exact(m, x, factor=2)
    assert s.get_submodule("blocks.0.attn").relative_position_bias_table.shape[1] == 4


class SameConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from timm.layers.conv2d_same import Conv2dSame
        from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

        self.c1 = Conv2dSame(3, 6, 3, stride=2)
        self.pool = MaxPool2dSame(3, 2)
        self.c2 = Conv2dSame(6, 6, 3, groups=6)
        self.avg = AvgPool2dSame(2, 2)
        self.c3 = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.c3(self.avg(self.c2(self.pool(self.c1(x)))))


def test_conv2d_same_and_pool2d_same():
    m = SameConv().double().eval()
    x = torch.randn(2, 3, 11, 11, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    assert op_blockers(a) == [] and [g.name for g in a.widenable] == ["c1"]
    s = widen_exact(m, x, tol=1e-12, widths={"c1": 10})
    assert s.c1.out_channels == s.c2.in_channels == s.c2.groups == s.c3.in_channels == 10


def test_tf_efficientnet_conv2d_same():
    m = timm.create_model("tf_efficientnet_b0").eval()
    x = torch.randn(1, 3, 64, 64)
    a = fxgrow.analyze(m, x)
    assert op_blockers(a) == []
    widen_exact(m, x, factor=1.5)


def test_nfnet_norm_free_block_traced_through():
    m = timm.create_model("nf_resnet26").eval()
    x = torch.randn(1, 3, 32, 32)
    gm = fxgrow.trace(m)
    from timm.models.nfnet import NormFreeBlock

    assert not any(
        n.op == "call_module" and isinstance(gm.get_submodule(n.target), NormFreeBlock)
        for n in gm.graph.nodes
    )
    a = fxgrow.analyze(m, x)
    assert not [b for b in op_blockers(a) if "NormFreeBlock" in b]
    # what blocks now is the maths of its ScaledStdConv2d, not an opaque call: weight
    # standardisation over the input channels undoes the consumer's division
    assert "size-1 axis removed by a reshape" in op_reasons(a)


def test_gcvit_asserted_sequence_lengths():
    """GCViT asserts that two sequence lengths are equal (torch._assert): they are linked
    instead of blocked as an op without a rule."""
    m = timm.create_model("gcvit_xxtiny", img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    a = fxgrow.analyze(m, x)
    assert op_blockers(a) == []
    widen_exact(m, x, factor=1.5)


def test_nest_deblockify_rule():
    """NesT's deblockify stays a no-trace function (``int(math.sqrt(T))``); its rule passes
    the channels through."""
    m = timm.create_model("nest_tiny", img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    gm = fxgrow.trace(m)
    assert any(
        n.op == "call_function" and n.target.__name__ == "deblockify" for n in gm.graph.nodes
    )
    a = fxgrow.analyze(m, x)
    assert op_blockers(a) == []
    widen_exact(m, x, factor=1.5)
