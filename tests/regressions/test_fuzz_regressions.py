"""Shrunk failures found by the fuzzer (tools/fuzz.py), kept as regression tests.

Each test is the program hypothesis shrank the failure to (``tests/fuzz/archs.py`` builds it)
plus, where it helps, a hand-written minimal model.  ``check_program`` runs every property of
the fuzzer on it: exact students or refusals naming a node, per-group widening, deepening
and the symmetry probe."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from fuzz.archs import Program, Step
from fuzz.check import check_program
from fuzz.profiles import one_thread  # noqa: F401
from helpers import TiedLM

import fxgrow


def assert_clean(program: Program) -> None:
    report = check_program(program)
    assert not report.failures, "\n".join(str(f) for f in report.failures)


# -- 1. a functional conv / linear with one output channel ------------------------------------
# fx reads the weight of F.conv2d / F.linear through get_attr; an axis of size 1 of such a
# tensor is fixed (it could broadcast), but the rule still recorded the weight's rows (and the
# bias) as producers of a fresh channel space, so fxgrow listed "weight" and "bias" as
# widenable groups of their own and widened them: the student's output grew from 1 to 2
# channels (or its bias no longer matched its weight).
class FunctionalOne(nn.Module):
    def __init__(self, linear: bool) -> None:
        super().__init__()
        self.linear = linear
        self.weight = nn.Parameter(torch.randn(1, 3) if linear else torch.randn(1, 3, 1, 1))
        self.bias = nn.Parameter(torch.randn(1))

    def forward(self, x):
        if self.linear:
            return F.linear(x, self.weight, self.bias)
        return F.conv2d(x, self.weight, self.bias)


@pytest.mark.parametrize("linear", [False, True])
def test_functional_layer_with_one_output_is_not_a_group(linear):
    m = FunctionalOne(linear).double().eval()
    x = torch.randn((2, 3) if linear else (2, 3, 4, 4), dtype=torch.float64)
    assert not fxgrow.analyze(m, x).widenable
    s = fxgrow.widen(m, x, factor=2)  # nothing to widen: the student is the teacher
    assert fxgrow.compare(m, s, x).max_rel == 0


def test_fuzz_functional_conv_one_output_channel():
    assert_clean(
        Program(
            input=("map", 2, 6, 6),
            steps=[
                Step(op="cat", inputs=(0, 0, 0), params={"fn": "cat"}),
                Step(op="fconv", inputs=(1,), params={"out": 1, "k": 3, "bias": True}),
            ],
            outputs=((2, "raw"), (1, "raw")),
            dtype="float64",
            seed=105,
        )
    )


# -- 2. a one-channel feature map merged with another axis ---------------------------------------
# A conv with one output channel, then flatten (channel x space) or repeat on the channel axis,
# into a Linear: the Linear's input space had to be factored as (positions x 1 channel) and
# the layout table asserted that both factors were wider than one, so the analysis crashed
# with a bare AssertionError.
class OneChannelMerged(nn.Module):
    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.fc = nn.Linear(2 if form == "repeat" else 16, 3)

    def forward(self, x):
        y = self.conv(x)
        if self.form == "repeat":
            return self.fc(y.repeat(1, 2, 1, 1).mean((2, 3)))
        return self.fc(y.flatten(1))


@pytest.mark.parametrize("form", ["repeat", "flatten"])
def test_one_channel_map_merged_into_a_linear(form):
    m = OneChannelMerged(form).double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    s = fxgrow.widen(m, x, widths={"conv": 3})
    assert s.conv.out_channels == 3
    assert s.fc.in_features == (6 if form == "repeat" else 48)
    assert fxgrow.compare(m, s, x).max_rel <= 1e-12


def test_fuzz_one_channel_repeat_into_head():
    assert_clean(
        Program(
            input=("map", 1, 6, 6),
            steps=[
                Step(op="to_seq", inputs=(0,), params={"form": "flatten_transpose"}),
                Step(op="act", inputs=(1,), params={"fn": "relu"}),
                Step(op="act", inputs=(2,), params={"fn": "relu_f"}),
                Step(
                    op="conv",
                    inputs=(0,),
                    params={"out": 1, "k": 3, "stride": 1, "groups": 1, "bias": False},
                ),
                Step(op="act", inputs=(4,), params={"fn": "leaky"}),
                Step(op="shuffle", inputs=(5,), params={"fn": "repeat"}),
            ],
            outputs=((3, "linear"), (6, "linear")),
            dtype="float64",
            seed=1,
        )
    )


# -- 3. a functional conv / linear reading one channel --------------------------------------------
# The mirror image of 1: the weight's input axis has size 1 (fixed through get_attr), but the
# rule recorded it as a consumer of a fresh space; once groups read only by a consumer were
# listed, that phantom space became a widenable group "[in]" and widening it gave the weight
# two input columns for a one-channel input.
class FunctionalOneIn(nn.Module):
    def __init__(self, linear: bool) -> None:
        super().__init__()
        self.linear = linear
        self.stem = nn.Linear(3, 1) if linear else nn.Conv2d(3, 1, 1)
        self.weight = nn.Parameter(torch.randn(4, 1) if linear else torch.randn(4, 1, 1, 1))

    def forward(self, x):
        y = self.stem(x)
        return F.linear(y, self.weight) if self.linear else F.conv2d(y, self.weight)


@pytest.mark.parametrize("linear", [False, True])
def test_functional_layer_with_one_input_is_not_a_group(linear):
    m = FunctionalOneIn(linear).double().eval()
    x = torch.randn((2, 3) if linear else (2, 3, 4, 4), dtype=torch.float64)
    assert not fxgrow.analyze(m, x).widenable
    s = fxgrow.widen(m, x, factor=2)
    assert fxgrow.compare(m, s, x).max_rel == 0


def test_fuzz_functional_conv_reading_one_channel():
    assert_clean(
        Program(
            input=("map", 2, 5, 5),
            steps=[
                Step(
                    op="conv",
                    inputs=(0,),
                    params={"out": 1, "k": 3, "stride": 1, "groups": 1, "bias": True},
                ),
                Step(op="norm", inputs=(1,), params={"kind": "ln_chw"}),
                Step(op="norm", inputs=(2,), params={"kind": "ln_f"}),
                Step(op="fconv", inputs=(3,), params={"out": 5, "k": 1, "bias": False}),
                Step(op="act", inputs=(3,), params={"fn": "hardswish"}),
                Step(op="binary", inputs=(5, 3), params={"fn": "maximum"}),
            ],
            outputs=((4, "raw"), (6, "raw")),
            dtype="float64",
            seed=773,
        )
    )


# -- 4. chunk(k) of a width k does not divide -------------------------------------------------------
# torch.chunk cuts at multiples of ceil(n / k): chunk(3) of 4 channels gives two pieces of 2.
# The rule only refused when the last piece was short, so it tied the two pieces to one map
# and kept the chunk count; after widening to 2 x 5 = 10, chunk(3) cut 4 + 4 + 2 and the
# student crashed.  Unless k divides the width, the chunked group is now blocked.
class ChunkUneven(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(2, 2)

    def forward(self, x):
        return self.b(self.a(x).chunk(3, -1)[1])


def test_chunk_count_not_dividing_the_width_blocks():
    m, x = ChunkUneven().double().eval(), torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(fxgrow.BlockedGroupError, match=r"chunk\(3\) of 4 is not 3 equal pieces"):
        fxgrow.widen(m, x, widths={"a": 8})


def test_fuzz_chunk_three_of_four_into_se_gate():
    assert_clean(
        Program(
            input=("map", 4, 3, 3),
            steps=[
                Step(
                    op="conv",
                    inputs=(0,),
                    params={"out": 8, "k": 3, "stride": 2, "groups": 1, "bias": False},
                ),
                Step(op="fconv", inputs=(1,), params={"out": 4, "k": 3, "bias": False}),
                Step(op="gate", inputs=(2,), params={"form": "se_conv", "hidden": 3}),
                Step(op="split", inputs=(3,), params={"mode": "chunk", "chunks": 3}),
                Step(op="gate", inputs=(5,), params={"form": "se_reshape_size", "hidden": 1}),
                Step(op="to_seq", inputs=(6,), params={"form": "permute_reshape"}),
            ],
            outputs=((4, "linear"), (7, "linear")),
            dtype="float64",
            seed=844,
        )
    )


# -- 5. widening a student with tied weights again ---------------------------------------------------
# Tied weights stay tied: the contraction that would divide them scales its activation by a
# buffer ``fxgrow_tie_scale{k}`` instead.  Widening that student again registered the new
# scale under the same name, overwriting the first one (which both multiplications then read),
# so the twice-widened student was wrong.  New scales now take a free name.
def test_widen_a_tied_student_again():
    torch.manual_seed(0)
    m, ids = TiedLM().double().eval(), torch.randint(0, 10, (2, 5))
    s1 = fxgrow.widen(m, ids, factor=1.5)
    s2 = fxgrow.widen(s1, ids, factor=1.5)
    assert s2.out.weight is s2.emb.weight and s2.emb.weight.shape == (10, 14)
    assert fxgrow.compare(m, s2, ids).max_rel <= 1e-12


def test_fuzz_tied_linear_widened_twice():
    assert_clean(
        Program(
            input=("seq", 2, 5),
            steps=[
                Step(op="linear", inputs=(0,), params={"out": 8, "bias": False}),
                Step(op="tied", inputs=(1,), params={"step": 0, "in": 5}),
                Step(op="norm", inputs=(2,), params={"kind": "ln"}),
                Step(op="linear", inputs=(3,), params={"out": 3, "bias": True}),
                Step(op="norm", inputs=(4,), params={"kind": "ln_f"}),
            ],
            outputs=((5, "linear"),),
            dtype="float64",
            seed=1,
        )
    )


# -- 6. the probe itself: the same merged segment twice in one cat ----------------------------------
# Not an fxgrow bug: the symmetry probe paired positions across two copies of one merged
# (tokens x channels) segment in a cat, which hold different values.  Kept so the probe stays
# free of false alarms.
def test_fuzz_probe_repeated_merged_segments():
    assert_clean(
        Program(
            input=("ids", 4, 3),
            steps=[
                Step(op="embed", inputs=(0,), params={"out": 2, "form": "module"}),
                Step(op="act", inputs=(1,), params={"fn": "leaky"}),
                Step(op="token_mix", inputs=(1,), params={"n": 4}),
                Step(op="to_vec", inputs=(3,), params={"form": "flatten_tokens", "n": 8}),
                Step(op="to_vec", inputs=(3,), params={"form": "flatten_tokens", "n": 8}),
                Step(op="reduce", inputs=(1,), params={"fn": "mean_c"}),
                Step(op="cat", inputs=(6, 1, 1), params={"fn": "cat"}),
                Step(op="binary", inputs=(4, 5), params={"fn": "mul"}),
                Step(op="cat", inputs=(8, 8, 5), params={"fn": "concat"}),
                Step(op="tied", inputs=(2,), params={"step": 0, "in": 3, "embedding": True}),
                Step(op="gate", inputs=(3,), params={"form": "seq", "hidden": 3}),
            ],
            outputs=((9, "linear"), (10, "raw"), (11, "linear")),
            dtype="float64",
            seed=600,
        )
    )


# -- fixed: a size-1 axis read directly, grown through a module ------------------------------------
# ``a`` (Linear 3 -> 1) is a widenable group of one unit (its output feeds ``head``), and the
# same weight is also read directly, transposed, by F.linear.  dependency._get_attr lays out a
# size-1 axis of a tensor read directly as a fresh fixed segment, unconnected to the tensor's
# own axis that the module grows, so widening ``a`` gives F.linear a [3, 2] weight for a
# one-channel input.  Fix: dependency._get_attr lays the axis out as the parameter's own axis
# and blocks it ("size-1 axis of a tensor read directly (it may broadcast)").
class SizeOneReadDirectly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 1)
        self.head = nn.Linear(1, 2)
        self.c = nn.Linear(3, 1)

    def forward(self, x):
        tied = F.linear(self.c(x), self.a.weight.t())
        return self.head(self.a(x)), tied


def test_size_one_axis_read_directly_and_grown_by_its_module():
    m, x = SizeOneReadDirectly().double().eval(), torch.randn(2, 3, dtype=torch.float64)
    try:
        s = fxgrow.widen(m, x, factor=2, verify=False)
    except fxgrow.FxgrowError:
        return  # a refusal is fine
    assert fxgrow.compare(m, s, x).max_rel <= 1e-12


# -- 7. nn.MultiheadAttention over a token axis that is a channel space -----------------------------
# A Linear across tokens (MLP-Mixer style) produces the token axis, so it is a channel space
# that can grow; nn.MultiheadAttention's rule did not block its key positions (the SDPA rule
# did), so the keys were replicated and each replica weighed in the softmax: a wrong student
# (found with outputs="grow", where nothing else blocks the token axis; the same with fixed
# outputs when a second token Linear reads it).  The key/value positions are now blocked.
class TokenMixAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Linear(3, 3)
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True)
        self.mix2 = nn.Linear(3, 3)

    def forward(self, x):
        g = self.mix(x.transpose(1, 2)).transpose(1, 2)
        a = self.mha(g, g, g, need_weights=False)[0]
        return self.mix2(a.transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize("outputs", ["fixed", "grow"])
def test_multihead_attention_keys_do_not_grow(outputs):
    torch.manual_seed(0)
    m, x = TokenMixAttention().double().eval(), torch.randn(2, 3, 4, dtype=torch.float64)
    s = fxgrow.widen(m, x, factor=2, outputs=outputs, verify=False)
    assert fxgrow.compare(m, s, x).max_rel <= 1e-12
    assert "softmax over key positions" in " ".join(
        str(b) for g in fxgrow.analyze(m, x).all_groups for b in g.blockers
    )


def test_fuzz_token_mix_into_multihead_attention():
    # as hypothesis shrank it (tools/fuzz.py, nightly profile)
    assert_clean(
        Program(
            input=("ids", 2, 2),
            steps=[
                Step(op="embed", inputs=(0,), params={"out": 2, "form": "module"}),
                Step(op="act", inputs=(1,), params={"fn": "relu"}),
                Step(op="token_mix", inputs=(2,), params={"n": 2}),
                Step(
                    op="attn", inputs=(3,), params={"form": "mha", "heads": 1, "dim": 2, "out": 2}
                ),
                Step(op="token_mix", inputs=(4,), params={"n": 2}),
            ],
            outputs=((5, "linear"),),
            dtype="float64",
            seed=0,
        )
    )


# -- 8. a group normalised together with channels that cannot grow ----------------------------------
# LayerNorm over cat([model input, conv(x)]): no replication of conv's channels keeps the
# statistics (the input's channels cannot be replicated with them), yet conv was listed as
# widenable and factor=2 refused the whole model with a WidthError from the check of the plan.
# factor= now leaves such groups as they are and widens the rest; naming the group says why.
class NormWithFixedChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.other = nn.Conv2d(3, 5, 1)
        self.ln = nn.LayerNorm(7)
        self.head = nn.Conv2d(7, 2, 1)
        self.head2 = nn.Conv2d(5, 2, 1)

    def forward(self, x):
        y = torch.cat([x, self.conv(x)], 1)
        y = self.ln(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(y) + self.head2(torch.relu(self.other(x)))


def test_factor_skips_a_group_normalised_with_fixed_channels():
    m, x = NormWithFixedChannels().double().eval(), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    s = fxgrow.widen(m, x, factor=2)
    assert s.conv.out_channels == 4 and s.other.out_channels == 10
    assert fxgrow.compare(m, s, x).max_rel <= 1e-12
    with pytest.raises(
        fxgrow.WidthError, match="ln normalises it together with channels that cannot grow"
    ):
        fxgrow.widen(m, x, widths={"conv": 8})


# -- 9. the probe itself: a group in several factors of one merged axis -----------------------------
# Not an fxgrow bug: after the channel shuffle written by hand the conv's 8 channels are laid
# out as a product in which one group appears in more than one factor; the probe copied unit
# i to unit j one factor at a time and compared half-copied positions.  It now maps every
# factor at once (position (j, j) copies (i, i)).
def test_fuzz_probe_group_in_several_factors():
    assert_clean(
        Program(
            input=("map", 2, 4, 4),
            steps=[
                Step(
                    op="conv",
                    inputs=(0,),
                    params={"out": 8, "k": 3, "stride": 1, "groups": 1, "bias": False},
                ),
                Step(
                    op="conv",
                    inputs=(1,),
                    params={"out": 16, "k": 3, "stride": 1, "groups": 8, "bias": False},
                ),
                Step(op="upsample", inputs=(0,), params={"fn": "convT", "out": 4}),
                Step(op="shuffle", inputs=(3,), params={"fn": "repeat"}),
                Step(op="to_seq", inputs=(4,), params={"form": "flatten_transpose"}),
                Step(op="fconv", inputs=(1,), params={"out": 5, "k": 1, "bias": True}),
                Step(op="upsample", inputs=(6,), params={"fn": "interpolate"}),
                Step(
                    op="upsample",
                    inputs=(1,),
                    params={"fn": "manual_shuffle", "groups": 2, "c": 8, "sizes": False},
                ),
                Step(
                    op="upsample",
                    inputs=(4,),
                    params={"fn": "manual_shuffle", "groups": 4, "c": 8, "sizes": False},
                ),
                Step(
                    op="reuse",
                    inputs=(8,),
                    params={"step": 5, "op": "fconv", "params": {"out": 5, "k": 1, "bias": True}},
                ),
                Step(op="binary", inputs=(5, 5), params={"fn": "sub"}),
            ],
            outputs=((9, "linear"), (10, "linear"), (11, "linear")),
            dtype="float32",
            seed=159,
        )
    )


# -- the symmetry probe on interleaved layouts ---------------------------------------------------
# A channel shuffle of cat([x, x]) (or of two branches) lays the axis out as a Zip; the probe's
# position labels did not know Zip and crashed (AttributeError), in the probe, not in fxgrow.
def test_fuzz_probe_on_channel_shuffle_of_a_repeated_tensor():
    assert_clean(
        Program(
            input=("map", 2, 2, 2),
            steps=[
                Step(
                    op="conv",
                    inputs=(0,),
                    params={"out": 1, "k": 1, "stride": 1, "groups": 1, "bias": False},
                ),
                Step(op="fconv", inputs=(1,), params={"out": 8, "k": 1, "bias": False}),
                Step(op="cat", inputs=(2, 2), params={"fn": "cat"}),
                Step(op="shuffle", inputs=(3,), params={"fn": "channel_shuffle"}),
            ],
            outputs=((4, "linear"),),
            dtype="float64",
            seed=0,
        )
    )


def test_fuzz_symmetry_probe_through_a_shuffle_reshape():
    """The oracle's labels know a Stack (the rows a channel shuffle's first reshape lays end
    to end): its symmetry probe crashed on this program (seed 2026, example ~1030)."""
    assert_clean(
        Program(
            input=("map", 3, 6, 6),
            steps=[
                Step("conv", (0,), {"out": 5, "k": 3, "stride": 1, "groups": 1, "bias": True}),
                Step("cat", (1, 0), {"fn": "concat"}),
                Step(
                    "upsample", (2,), {"fn": "manual_shuffle", "groups": 4, "c": 8, "sizes": False}
                ),
                Step("act", (3,), {"fn": "relu6"}),
                Step("fconv", (4,), {"out": 4, "k": 1, "bias": True}),
                Step(
                    "upsample", (5,), {"fn": "manual_shuffle", "groups": 2, "c": 4, "sizes": False}
                ),
                Step("reduce", (6,), {"fn": "amax_c"}),
                Step("linear", (7,), {"out": 1, "bias": False, "form": "transpose"}),
                Step("linear", (8,), {"out": 6, "bias": True, "form": "permute"}),
                Step("fconv", (9,), {"out": 8, "k": 1, "bias": False}),
                Step("gate", (5,), {"form": "mask", "hidden": 1}),
                Step("gate", (2,), {"form": "se_conv", "hidden": 3}),
            ],
            outputs=((10, "linear"), (11, "linear"), (12, "linear")),
            dtype="float64",
            seed=807,
        )
    )
