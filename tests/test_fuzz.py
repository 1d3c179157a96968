"""Property-based fuzzing over random architectures (the fast CI profile; tools/fuzz.py runs the
nightly one).  See tests/fuzz/ and docs/robustness.md.

* ``test_random_architectures``: hypothesis draws programs; every fxgrow call on the model must
  give an exact student or a FxgrowError naming a node (``fuzz.check``).
* ``test_vocabulary``: one fixed program per op form, so every op of the generator is checked
  on every run whatever hypothesis draws.
* ``test_probe_*``: the symmetry probe is an oracle independent of fxgrow's rewrite; these
  break a rule on purpose and check that the probe (and per-group widening) catch it.
"""

from __future__ import annotations

import operator
import random

import pytest
import torch
import torch.nn as nn
from fuzz.archs import Program, Step, build, programs
from fuzz.check import check_program, symmetry_probe
from fuzz.profiles import CI, CI_STEPS, DTYPES, one_thread  # noqa: F401
from hypothesis import given

import fxgrow
from fxgrow.analysis.rules import registry


@CI
@given(programs(max_steps=CI_STEPS, dtypes=DTYPES))
def test_random_architectures(program):
    report = check_program(program)
    assert not report.failures, (
        "\n".join(str(f) for f in report.failures)
        + "\n"
        + program.describe()
        + "\n"
        + repr(program)
    )


def _conv(out, k=3, stride=1, groups=1, bias=True):
    return {"out": out, "k": k, "stride": stride, "groups": groups, "bias": bias}


MAP = ("map", 4, 4, 4)
SEQ = ("seq", 4, 6)
VOCABULARY = {
    "residual_bn_relu": (
        MAP,
        [
            Step("conv", (0,), _conv(6)),
            Step("norm", (1,), {"kind": "bn"}),
            Step("act", (2,), {"fn": "relu"}),
            Step("conv", (3,), _conv(6, k=1)),
            Step("binary", (4, 1), {"fn": "add"}),
            Step("act", (5,), {"fn": "relu_inplace"}),
        ],
    ),
    "grouped_depthwise_groupnorm": (
        MAP,
        [
            Step("conv", (0,), _conv(8, groups=2)),
            Step("norm", (1,), {"kind": "gn", "groups": 4}),
            Step("conv", (2,), _conv(16, groups=8)),
            Step("act", (3,), {"fn": "hardswish"}),
            Step("conv", (4,), _conv(6, k=1)),
        ],
    ),
    "se_and_mask": (
        MAP,
        [
            Step("conv", (0,), _conv(6)),
            Step("gate", (1,), {"form": "se_view", "hidden": 2}),
            Step("gate", (2,), {"form": "se_conv", "hidden": 3}),
            Step("gate", (3,), {"form": "mask", "hidden": 1}),
            Step("gate", (4,), {"form": "se_reshape_size", "hidden": 2}),
        ],
    ),
    "split_swap_repeat_cat": (
        MAP,
        [
            Step("conv", (0,), _conv(6)),
            Step("split", (1,), {"mode": "sizes", "sizes": [2, 4], "order": [1, 0, 1]}),
            Step("split", (1,), {"mode": "chunk", "chunks": 3, "order": [2, 0]}),
            Step("split", (1,), {"mode": "narrow", "start": 1, "stop": 4}),
            Step("cat", (4, 7, 4), {"fn": "concat"}),
            Step("conv", (10,), _conv(5, k=1)),
        ],
    ),
    "flatten_view_heads": (
        MAP,
        [
            Step("conv", (0,), _conv(5, stride=2)),
            Step("act", (1,), {"fn": "gelu"}),
            Step("to_vec", (2,), {"form": "view", "n": 20}),
            Step("to_vec", (2,), {"form": "reshape_const", "n": 20}),
            Step("binary", (3, 4), {"fn": "mul"}),
            Step("linear", (5,), {"out": 7, "bias": True}),
            Step("norm", (6,), {"kind": "ln"}),
        ],
    ),
    "channels_last_linear_and_ln": (
        MAP,
        [
            Step("conv", (0,), _conv(6)),
            Step("linear", (1,), {"out": 6, "bias": True, "form": "permute"}),
            Step("norm", (2,), {"kind": "ln_cl"}),
            Step("linear", (3,), {"out": 4, "bias": False, "form": "movedim"}),
            Step("norm", (4,), {"kind": "ln_f"}),
        ],
    ),
    "pool_shuffle_upsample": (
        MAP,
        [
            Step("conv", (0,), _conv(8)),
            Step("pool", (1,), {"fn": "max"}),
            Step("shuffle", (2,), {"fn": "channel_shuffle"}),
            Step("upsample", (3,), {"fn": "manual_shuffle", "groups": 4, "c": 8}),
            Step("upsample", (4,), {"fn": "pixel_shuffle"}),
            Step("upsample", (5,), {"fn": "convT", "out": 3}),
            Step("shuffle", (6,), {"fn": "repeat_interleave"}),
        ],
    ),
    "tokens_attention": (
        MAP,
        [
            Step("conv", (0,), _conv(6)),
            Step("to_seq", (1,), {"form": "flatten_transpose"}),
            Step(
                "attn",
                (2,),
                {
                    "form": "manual",
                    "heads": 2,
                    "dim": 3,
                    "out": 6,
                    "fused": True,
                    "split": "reshape",
                    "merge": "reshape",
                },
            ),
            Step("binary", (3, 2), {"fn": "add"}),
            Step("norm", (4,), {"kind": "ln"}),
            Step(
                "attn",
                (5,),
                {
                    "form": "sdpa",
                    "heads": 3,
                    "dim": 2,
                    "out": 6,
                    "fused": False,
                    "split": "view_size",
                    "merge": "flatten",
                },
            ),
            Step("to_map", (6,), {"form": "transpose", "hw": (4, 4)}),
        ],
    ),
    "attention_forms": (
        SEQ,
        [
            Step("linear", (0,), {"out": 6, "bias": True}),
            Step("attn", (1,), {"form": "mha", "heads": 2, "dim": 3, "out": 6}),
            Step(
                "attn",
                (2,),
                {
                    "form": "einsum",
                    "heads": 2,
                    "dim": 2,
                    "out": 6,
                    "fused": True,
                    "split": "unflatten",
                    "merge": "view_minus_one",
                },
            ),
            Step("gate", (3,), {"form": "seq", "hidden": 2}),
            Step("to_vec", (4,), {"form": "token_mean", "n": 24}),
        ],
    ),
    "shared_and_tied": (
        SEQ,
        [
            Step("linear", (0,), {"out": 5, "bias": True}),
            Step("act", (1,), {"fn": "relu"}),
            Step("linear", (2,), {"out": 5, "bias": False}),
            Step("reuse", (3,), {"step": 2, "op": "linear", "params": {"out": 5, "bias": False}}),
            Step("tied", (4,), {"step": 2, "in": 5}),
            Step("binary", (5, 2), {"fn": "method_add"}),
        ],
    ),
    "blocks_and_conditioning": (
        MAP,
        [
            Step("conv", (0,), _conv(6)),
            Step("blocks", (1,), {"kind": "basic", "n": 2, "hidden": 4}),
            Step("to_vec", (2,), {"form": "gap", "n": 96}),
            Step("linear", (3,), {"out": 6, "bias": True}),
            Step("condition", (2, 4), {"fn": "film"}),
            Step("upsample", (5,), {"fn": "manual_shuffle", "groups": 3, "c": 6, "sizes": True}),
            Step("to_vec", (6,), {"form": "flatten_cl", "n": 96}),
        ],
    ),
    "token_blocks": (
        SEQ,
        [
            Step("linear", (0,), {"out": 6, "bias": True}),
            Step("blocks", (1,), {"kind": "prenorm", "n": 2, "hidden": 5}),
            Step("blocks", (2,), {"kind": "postnorm", "n": 1, "hidden": 3}),
            Step("linear", (3,), {"out": 4, "bias": False, "form": "conv1d"}),
            Step("norm", (4,), {"kind": "bn_seq"}),
            Step("norm", (5,), {"kind": "ln_ld"}),
            Step("token_mix", (6,), {"n": 4}),
        ],
    ),
    "embeddings_and_functional_linears": (
        ("ids", 5, 9),
        [
            Step("embed", (0,), {"out": 6, "form": "module"}),
            Step("flinear", (1,), {"out": 5, "form": "einsum_seq", "bias": False}),
            Step("flinear", (2,), {"out": 6, "form": "matmul", "bias": True}),
            Step("tied", (3,), {"step": 0, "in": 9, "embedding": True}),
            Step("embed", (0,), {"out": 4, "form": "functional"}),
            Step("to_vec", (5,), {"form": "token_mean", "n": 20}),
            Step("flinear", (6,), {"out": 3, "form": "einsum_vec", "bias": True}),
        ],
    ),
    "token_mixers_sized_by_shape": (
        MAP,
        [
            Step("conv", (0,), _conv(6)),
            Step("shape_mix", (1,), {"form": "issue", "block": True}),
            Step("shape_mix", (2,), {"form": "arith", "block": False, "g": 3}),
            Step("shape_mix", (3,), {"form": "minus_one", "block": True}),
            Step("shape_mix", (4,), {"form": "view_shape", "block": False}),
            Step("binary", (5, 1), {"fn": "add"}),
        ],
    ),
    "seq_mixers_inplace_gathers": (
        SEQ,
        [
            Step("linear", (0,), {"out": 6, "bias": True}),
            Step("shape_mix", (1,), {"form": "issue", "block": True}),
            Step("inplace", (2,), {"forms": ["mul_", "add_", "iadd", "relu_", "masked_fill_"]}),
            Step("gather", (3,), {"form": "table", "index": [0, 2, 2, 4], "entries": 5}),
            Step("gather", (4,), {"form": "getitem", "index": [3, 0, 0, 1], "entries": 5}),
            Step("gather", (5,), {"form": "index_select", "index": [1, 1, 2, 3], "entries": 5}),
            Step("rel_attn", (6,), {"heads": 2, "scale_first": False}),
            Step("rel_attn", (7,), {"heads": 3, "scale_first": True}),
        ],
    ),
    "unclaimed_reductions": (
        MAP,
        [
            Step("conv", (0,), _conv(6)),
            Step("reduce", (1,), {"fn": "sum_c"}),
            Step("conv", (0,), _conv(5)),
            Step("reduce", (3,), {"fn": "softmax_c"}),
            Step("conv", (0,), _conv(4)),
            Step("reduce", (5,), {"fn": "opaque"}),
            Step("conv", (0,), _conv(3)),
            Step("reduce", (7,), {"fn": "mean_c"}),
            Step("reduce", (8,), {"fn": "amax_c"}),
            Step("fconv", (9,), {"out": 4, "k": 3, "bias": True}),
        ],
    ),
}


@pytest.mark.parametrize("name", list(VOCABULARY))
def test_vocabulary(name):
    spec, steps = VOCABULARY[name]
    pool = len(Program(spec, steps, ()).metas())
    used = {i for s in steps for i in s.inputs}
    outputs = tuple((i, "linear") for i in range(pool) if i not in used)
    for dtype in ("float64", "float32"):
        program = Program(spec, steps, outputs, dtype=dtype, seed=3)
        report = check_program(program)
        assert not report.failures, "\n".join(str(f) for f in report.failures)
        assert report.exact >= 3


def test_unclaimed_ops_are_refused():
    """Sums, softmax and opaque functions over channels must block the groups they read."""
    spec, steps = VOCABULARY["unclaimed_reductions"]
    m, x = build(Program(spec, steps, ((10, "linear"),)))
    gs = {g.name: g for g in fxgrow.groups(m, x)}
    for conv, why in (
        ("steps.0.conv", "sum"),
        ("steps.2.conv", "softmax"),
        ("steps.4.conv", "fuzz_opaque"),
    ):
        assert not gs[conv].widenable and why in " ".join(str(b) for b in gs[conv].blockers)
    assert gs["steps.6.conv"].widenable  # mean and amax over channels are claimed


# -- the probe has teeth ------------------------------------------------------------------------
class TwoBranches(nn.Module):
    def __init__(self, join: str) -> None:
        super().__init__()
        self.join = join
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8 if join == "cat" else 4, 2, 1)

    def forward(self, x):
        a, b = torch.relu(self.conv_a(x)), torch.tanh(self.conv_b(x))
        return self.head(torch.cat([a, b], 1) if self.join == "cat" else a + b)


def _break_rule(monkeypatch, target, fn):
    monkeypatch.setitem(registry.FUNCTIONS, target, registry.RuleEntry(fn, "function", target))


def test_probe_catches_a_missing_coupling(monkeypatch):
    """A broken add rule that does not unite its operands: conv_a and conv_b become separate
    widenable groups.  The probe sees the add's replicas differ; widening one group alone
    breaks the student."""
    from fxgrow.analysis.rules.common import same_layouts

    m = TwoBranches("add").double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert not symmetry_probe(fxgrow.analyze(m, x), random.Random(0))
    _break_rule(monkeypatch, operator.add, lambda cx: same_layouts(cx))
    analysis = fxgrow.analyze(m, x)
    assert {"conv_a", "conv_b"} <= {g.name for g in analysis.widenable}
    problems = symmetry_probe(analysis, random.Random(0))
    assert any("node 'add'" in p for p in problems), problems


def test_probe_catches_a_misplaced_segment(monkeypatch):
    """A broken cat rule that lays its inputs out in reverse order: the shapes still agree,
    so only the values show that the labels point at the wrong channels."""
    import fxgrow.analysis.rules.join as shape_rules

    def reversed_cat(cx):
        infos = shape_rules._tensor_list(cx, cx.arg(0, "tensors"))
        lay = list(infos[0].layouts)
        lay[1] = tuple(seg for t in reversed(infos) for seg in t.layouts[1])
        return cx.out(lay)

    m = TwoBranches("cat").double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert not symmetry_probe(fxgrow.analyze(m, x), random.Random(0))
    _break_rule(monkeypatch, torch.cat, reversed_cat)
    problems = symmetry_probe(fxgrow.analyze(m, x), random.Random(0))
    assert any("node 'cat'" in p for p in problems), problems
    s = fxgrow.widen(m, x, widths={"conv_a": 6}, verify=False)  # and the student is wrong
    assert fxgrow.compare(m, s, x).max_rel > 1e-3
