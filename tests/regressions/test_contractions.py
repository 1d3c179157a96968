"""Contractions between two activations, softmax/normalize over channels, weight
standardisation: the timm families they blocked (coat, efficientvim, lambda, swin_s3, nfnet,
resnest, skresnet, swinv2_cr) and minimal graphs.

* ``sum_i a_i b_i`` over a replicated axis grows exactly with the shares of the copies
  multiplied into ONE operand (a ``fxgrow_contract_scale*`` buffer in the student);
* batch statistics of ``F.batch_norm(training=True)`` (timm's weight standardisation over the
  fan-in) are a uniform constraint: whole multiples are exact, other widths are refused;
* softmax / normalize over an axis fixed as structure anyway (split attention's radix, a head
  dim) are no op blocker; over a growing channel they still block."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import widen_exact

import fxgrow
from fxgrow.errors import FxgrowError, UnsupportedModelError, WidthError


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _scales(student) -> int:
    return sum(name.startswith("fxgrow_contract_scale") for name, _ in student.named_buffers())


def _op_reasons(a: fxgrow.Analysis) -> set[str]:
    return {b.reason for g in a.groups for b in g.blockers if b.kind == "op"}


class Lambda(nn.Module):
    """A lambda layer's content path: keys softmaxed over the tokens, ``k^T v`` contracts the
    tokens, then ``q @ (k^T v)`` contracts the key dim K -- two activations."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(4, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        lam = F.softmax(self.k(x), dim=1).transpose(1, 2) @ self.v(x)  # B, K, V
        return self.out(self.q(x) @ lam)


class Gram(nn.Module):
    """``einsum('bnc,bmc->bnm')`` of two projections, and a bilinear form of one tensor with
    itself (the same node twice: no single operand to scale)."""

    def __init__(self, same: bool) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)
        self.out = nn.Linear(5, 2)
        self.same = same

    def forward(self, x):
        a = self.a(x)
        b = a if self.same else self.b(x)
        return self.out(torch.einsum("bnc,bmc->bnm", a, b))


@pytest.mark.parametrize("width", [7, 12])
@pytest.mark.parametrize("split", ["equal", "random"])
def test_lambda_key_dim_grows_exactly(width, split):
    m = Lambda().double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    assert a.group("q").widenable and a.group("q").width == 6
    assert not any("contraction" in r for r in _op_reasons(a))
    s = widen_exact(m, x, tol=1e-12, widths={"q": width}, split=split)
    assert s.q.out_features == s.k.out_features == width
    assert _scales(s) == 1
    fresh = widen_exact(m, x, tol=1e-12, widths={"q": width}, init="zero")
    assert _scales(fresh) == 1 and fresh.q.out_features == width


def test_gram_of_two_projections_grows_and_of_one_tensor_is_refused():
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    two = Gram(same=False).double().eval()
    s = widen_exact(two, x, tol=1e-12, widths={"a": 9})
    assert s.a.out_features == s.b.out_features == 9 and _scales(s) == 1
    one = Gram(same=True).double().eval()
    a = fxgrow.analyze(one, x)
    assert [str(b) for b in a.group("a").blockers] == [
        (
            "einsum: contraction between two activations over this axis is not preserved by "
            "replication"
        )
    ]
    with pytest.raises(FxgrowError, match="contraction between two activations"):
        fxgrow.widen(one, x, widths={"a": 9})


def test_widening_a_scaled_student_again_stays_exact():
    m = Lambda().double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    s1 = widen_exact(m, x, tol=1e-12, widths={"q": 7})
    s2 = fxgrow.widen(s1, x, widths={"q": 10}, verify=False)
    assert _scales(s2) == 2
    assert torch.allclose(s2(x), m(x), atol=1e-12, rtol=0)


def test_stream_refuses_a_scaled_contraction():
    from fxgrow.stream import make_stream_plan

    m = Lambda().double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    plan = fxgrow.plan(a, widths={"q": 7})
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match="contracts between two activations"):
        make_stream_plan(a, shapes, widen=plan)


class StdConvNet(nn.Module):
    """timm's weight standardisation written out: the conv's weight is a batch norm over its
    fan-in, then the conv contracts the input with that computed weight."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.w = nn.Parameter(torch.randn(5, 6, 3, 3))
        self.gain = nn.Parameter(torch.rand(5) + 0.5)
        self.out = nn.Conv2d(5, 2, 1)

    def forward(self, x):
        w = F.batch_norm(
            self.w.reshape(1, 5, -1),
            None,
            None,
            weight=self.gain * 0.2,
            training=True,
            momentum=0.0,
            eps=1e-6,
        ).reshape_as(self.w)
        return self.out(F.conv2d(torch.relu(self.c1(x)), w, padding=1))


def test_weight_standardisation_grows_by_whole_multiples_only():
    m = StdConvNet().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    s = widen_exact(m, x, tol=1e-12, widths={"c1": 12})
    assert s.c1.out_channels == 12 and tuple(s.w.shape) == (5, 12, 3, 3) and _scales(s) == 1
    with pytest.raises(WidthError, match="cannot be widened exactly to 7"):
        fxgrow.widen(m, x, widths={"c1": 7})


class Radix(nn.Module):
    """Split attention (ResNeSt): a grouped conv makes ``radix`` blocks; a softmax runs over
    the radix factor of the attention logits, elementwise over the channels."""

    def __init__(self, module: bool, radix: int = 2, c: int = 4) -> None:
        super().__init__()
        self.radix = radix
        self.softmax = nn.Softmax(dim=1) if module else None
        self.conv = nn.Conv2d(3, radix * c, 3, padding=1, groups=1)
        self.split = nn.Conv2d(radix * c, radix * c, 1, groups=radix)
        self.fc = nn.Conv2d(c, radix * c, 1)
        self.out = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        x = self.split(torch.relu(self.conv(x)))
        B, RC, H, W = x.shape
        x = x.reshape(B, self.radix, RC // self.radix, H, W)
        logits = self.fc(x.sum(1).mean((2, 3), keepdim=True))
        logits = logits.view(B, 1, self.radix, -1).transpose(1, 2)
        attn = self.softmax(logits) if self.softmax else F.softmax(logits, dim=1)
        attn = attn.reshape(B, self.radix, RC // self.radix, 1, 1)
        return self.out((x * attn).sum(1))


@pytest.mark.parametrize("module", [False, True])
def test_softmax_over_the_radix_is_no_op_blocker(module):
    m = Radix(module).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    a = fxgrow.analyze(m, x)
    assert not _op_reasons(a), _op_reasons(a)
    grown = [g.name for g in a.widenable]
    assert "split" in grown
    widen_exact(m, x, tol=1e-12, factor=2)


class CosineAttention(nn.Module):
    """Swin v2's cosine attention, with a window mask applied through views; and (``swift``)
    SwiftFormer's normalize over the growing embedding."""

    def __init__(self, swift: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(8, 3)
        self.swift = swift

    def forward(self, x, mask):
        B, N, C = x.shape
        if self.swift:
            return self.out(F.normalize(self.qkv(x)[..., :8], dim=-1))
        q, k, v = self.qkv(x).view(B, N, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn.view(B // 2, 2, 2, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, 2, N, N).softmax(dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(B, N, C))


def test_normalize_over_a_head_dim_is_structure_over_channels_blocks():
    x, mask = torch.randn(4, 5, 8, dtype=torch.float64), torch.zeros(2, 5, 5, dtype=torch.float64)
    cos = CosineAttention().double().eval()
    a = fxgrow.analyze(cos, (x, mask))
    assert not _op_reasons(a), _op_reasons(a)
    head_dims = [
        g
        for g in a.all_groups
        if any(b.reason.startswith("head dim contracted") for b in g.blockers)
    ]
    assert head_dims and all(b.kind == "structure" for g in head_dims for b in g.blockers)
    swift = CosineAttention(swift=True).double().eval()
    a = fxgrow.analyze(swift, (x, mask))
    assert _op_reasons(a) == {"normalize along this axis mixes its positions"}


class OneHead(nn.Module):
    """A single head whose head dim is the width, read from the input's shape:
    ``q = lin(x).reshape(B, N, 1, C)``, ``softmax(q @ k^T * C ** -0.5) @ v``."""

    def __init__(self, transpose: bool) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.out = nn.Linear(8, 5)
        self.transpose = transpose

    def forward(self, x):
        x = self.inp(x)
        B, N, C = x.shape
        q, k, v = (f(x).reshape(B, N, 1, C) for f in (self.q, self.k, self.v))
        if self.transpose:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        attn = (q @ k.transpose(-2, -1) * C**-0.5).softmax(dim=-1)
        y = attn @ v
        if self.transpose:
            y = y.transpose(1, 2)
        return self.out(y.reshape(B, N, C) + x)


@pytest.mark.parametrize("frontend", ["fx", "export"])
@pytest.mark.parametrize("transpose", [False, True])
def test_one_head_sized_by_the_input_refuses_or_grows_exactly(frontend, transpose):
    """Every group either names its blocker or widens into a student that runs and is exact
    (a scale ``C ** -0.5`` read from a growing size blocks that size's group)."""
    m = OneHead(transpose).double().eval()
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    a = fxgrow.analyze(m, x, frontend=frontend)
    for g in a.groups:
        if not g.widenable:
            assert all(str(b) for b in g.blockers)
            with pytest.raises(FxgrowError):
                fxgrow.widen(m, x, widths={g.name: g.width + g.multiplicity}, frontend=frontend)
            continue
        for w in (g.width + g.multiplicity, 2 * g.width):
            widen_exact(m, x, tol=1e-12, widths={g.name: w}, frontend=frontend)
    # attention is recognised in both graphs (ATen softmax/matmul/views under export): its
    # head dim is structure, never grown with a share scale
    assert not a.state.scales
    heads = [
        g
        for g in a.all_groups
        if any(b.reason.startswith("head dim contracted") for b in g.blockers)
    ]
    assert heads and all(not g.widenable for g in heads)
    if frontend == "fx":
        assert any("size read from a channel axis" in b.reason for b in a.group("inp").blockers)


# -- the timm families (64 px, random init) ---------------------------------------------------
def _timm(name: str, **kw) -> tuple[nn.Module, torch.Tensor]:
    return timm.create_model(name, pretrained=False, **kw).eval(), torch.randn(2, 3, 64, 64)


@pytest.mark.parametrize("name", ["coat_tiny", "efficientvim_m1"])
def test_timm_contractions_grow_with_scales(name):
    kw = {"img_size": 64} if name != "efficientvim_m1" else {}
    m, x = _timm(name, **kw)
    a = fxgrow.analyze(m, x)
    assert not any("contraction" in r for r in _op_reasons(a))
    roots = {r for rec in a.state.scales for r in a.state.spaces.roots(rec.layout)}
    scaled = [g for g in a.widenable if g.root in roots]
    assert scaled
    g = scaled[0]
    s = widen_exact(m, x, widths={g.name: g.width + g.multiplicity})
    assert _scales(s) >= 1


def test_swin_s3_masked_attention_is_attention():
    """Its shifted windows add the mask through views of the scores: still attention, so the
    head dim is structure (as in the unmasked blocks), not an op blocker."""
    m, x = _timm("swin_s3_tiny_224", img_size=64)
    a = fxgrow.analyze(m, x)
    assert not _op_reasons(a)
    assert not a.state.scales


def test_nf_regnet_weight_standardisation():
    m, x = _timm("nf_regnet_b0")
    a = fxgrow.analyze(m, x)
    assert not _op_reasons(a)
    s = widen_exact(m, x, widths={"stem.conv": 80})
    assert _scales(s) >= 1
    with pytest.raises(WidthError, match="stem.conv"):
        fxgrow.widen(m, x, widths={"stem.conv": 41})


@pytest.mark.parametrize("name", ["resnest14d", "skresnet18"])
def test_split_attention_softmax_is_no_op_blocker(name):
    m, x = _timm(name)
    a = fxgrow.analyze(m, x)
    assert not _op_reasons(a)
    widen_exact(m, x, factor=1.5)


def test_weight_standardisation_through_export_is_uniform_too():
    """aten.batch_norm with training=True (export's form of the standardisation) adds the
    same uniform constraint as F.batch_norm."""
    m = StdConvNet().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    s = widen_exact(m, x, tol=1e-12, widths={"c1": 12}, frontend="export")
    assert tuple(s.w.shape) == (5, 12, 3, 3)
    with pytest.raises(WidthError, match="cannot be widened exactly to 7"):
        fxgrow.widen(m, x, widths={"c1": 7}, frontend="export")
