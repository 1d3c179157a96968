"""The export front end as complete as fx: one op table, Core ATen coverage, and the same groups
through torch.export as through fx (minimal graphs, torchvision, Hugging Face)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxgrow
from fxgrow.analysis.rules import registry
from fxgrow.analysis.rules.registry import RegistrationError, aten_op, rule
from fxgrow.frontend.compare import compare_frontends

ROOT = Path(__file__).resolve().parent.parent
aten = torch.ops.aten


# -- one op table --------------------------------------------------------------------------------
@pytest.fixture
def empty_tables(monkeypatch):
    for name in ("MODULES", "FUNCTIONS", "METHODS"):
        monkeypatch.setattr(registry, name, {})


def test_aten_keyword_registers_the_overloads_with_the_torch_targets(empty_tables):
    @rule(torch.relu, "relu", aten=("relu.default", "relu_.default"))
    def fn(cx):
        return None

    assert registry.FUNCTIONS[torch.relu].fn is fn
    assert registry.METHODS["relu"].fn is fn
    assert registry.FUNCTIONS[aten.relu.default].fn is fn
    assert registry.FUNCTIONS[aten.relu_.default].fn is fn
    assert len(registry.FUNCTIONS) == 3


def test_a_second_rule_for_one_target_raises(empty_tables):
    @rule(torch.relu, aten=("relu.default",))
    def first(cx):
        return None

    def second(cx):
        return None

    with pytest.raises(RegistrationError, match=r"aten\.relu\.default already has the rule"):
        rule(aten=("relu.default",))(second)
    with pytest.raises(RegistrationError, match="already has the rule"):
        rule(torch.relu)(second)
    assert registry.FUNCTIONS[aten.relu.default].fn is first


def test_an_overload_this_torch_lacks_raises():
    with pytest.raises(RegistrationError, match=r"aten\.relu\.Tensor does not exist"):
        rule(aten=("relu.Tensor",))
    with pytest.raises(RegistrationError, match="does not exist"):
        rule(aten=("no_such_op.default",))
    with pytest.raises(RegistrationError, match="'name.overload'"):
        rule(aten=("relu",))
    assert aten_op("add.Tensor") is aten.add.Tensor


def test_the_registry_has_one_rule_per_target_and_real_overloads():
    """Importing every rule module in a fresh interpreter registers each target once (a second
    registration raises); every ATen target is the overload its name says."""
    code = (
        "import collections, torch\n"
        "from fxgrow.analysis.rules import registry\n"
        "from fxgrow.analysis.rules.registry import all_rules, aten_op\n"
        "entries = all_rules()\n"
        "seen = collections.Counter((e.kind, e.target) for e in entries)\n"
        "assert max(seen.values()) == 1, [t for t, n in seen.items() if n > 1]\n"
        "ops = [e.target for e in entries if isinstance(e.target, torch._ops.OpOverload)]\n"
        "for op in ops:\n"
        "    assert aten_op(f'{op._opname}.{op._overloadname}') is op, op\n"
        "print(len(entries), len(ops))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    n_entries, n_ops = map(int, out.stdout.split())
    assert n_ops > 300 and n_entries > n_ops


def test_the_aten_module_has_no_second_table():
    source = (ROOT / "fxgrow" / "analysis" / "rules" / "aten.py").read_text()
    assert "_SAME" not in source and "_ops(" not in source


# -- Core ATen -----------------------------------------------------------------------------------
def _core_ops() -> list:
    sys.path.insert(0, str(ROOT / "tools"))
    from gen_rules_doc import core_aten_ops

    return core_aten_ops()


def test_every_core_aten_op_has_a_rule_or_a_deliberate_blocker():
    registry.load_deferred(everything=True)
    core = _core_ops()
    assert len(core) > 150
    missing = [str(op) for op in core if op not in registry.FUNCTIONS]
    assert not missing
    blockers = {op for op in core if getattr(registry.FUNCTIONS[op].fn, "blocks", None)}
    assert aten.sort.default not in blockers and aten.convolution.default not in blockers
    assert aten.scatter.src in blockers and aten.nonzero.default in blockers


def test_a_deliberate_blocker_names_its_reason():
    class Scatter(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            h = self.a(x)
            idx = torch.zeros_like(h, dtype=torch.long)
            return self.b(h.scatter(1, idx, 1.0))

    groups = fxgrow.analyze(Scatter(), torch.randn(2, 8), frontend="export").groups
    hidden = next(g for g in groups if g.name == "a")
    assert not hidden.widenable
    assert any("writes at positions given by an index" in b.reason for b in hidden.blockers)


# -- minimal graphs: export groups == fx groups, exact students ---------------------------------
class DepthwiseFunctional(nn.Module):
    """Functional depthwise conv, its weight a parameter: groups must follow the width."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.dw = nn.Parameter(torch.randn(c, 1, 3, 3))
        self.norm = nn.InstanceNorm2d(c, affine=True)
        self.gn = nn.GroupNorm(c, c)
        self.head = nn.Linear(c * 2, 5)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        h = F.conv2d(F.pad(h, (1, 1, 1, 1)), self.dw, groups=h.shape[1])
        h = F.max_pool2d(self.norm(h), 2)
        h = self.gn(F.hardtanh(h))
        h = F.adaptive_avg_pool2d(h, (1, 2)).flatten(1)
        return self.head(h)


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_functional_depthwise_conv_grows_with_its_groups(frontend):
    torch.manual_seed(0)
    model, x = DepthwiseFunctional().eval(), torch.randn(2, 3, 12, 12)
    analysis = fxgrow.analyze(model, x, frontend=frontend)
    conv = next(g for g in analysis.groups if g.name == "conv")
    assert conv.widenable, conv.blockers
    student = fxgrow.widen(model, x, widths={"conv": 12}, frontend=frontend)
    assert student.dw.shape == (12, 1, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(student(x), model(x), rtol=1e-4, atol=1e-5)
    if frontend == "export":
        convs = [n for n in student.graph.nodes if n.target is aten.conv2d.default]
        assert [n.args[6] for n in convs if len(n.args) > 6] == [12]


def test_minimal_graph_export_groups_equal_fx_groups():
    diff = compare_frontends(DepthwiseFunctional().eval(), torch.randn(2, 3, 12, 12))
    assert diff.equal, diff.describe()
    assert diff.fx_widenable == diff.export_widenable == 1


def test_core_aten_graph_grows_exactly():
    """A model decomposed to the Core ATen opset (convolution, native batch norm, addmm over a
    permuted weight, max_pool2d_with_indices) grows as exactly as its source."""
    import torchvision

    torch.manual_seed(0)
    model, x = (
        torchvision.models.resnet18(weights=None, num_classes=10).eval(),
        torch.randn(1, 3, 32, 32),
    )
    gm = torch.export.export(model, (x,)).run_decompositions().module()
    targets = {n.target for n in gm.graph.nodes}
    assert aten.convolution.default in targets and aten.addmm.default in targets
    core = fxgrow.analyze(gm, x, frontend="export").groups
    source = fxgrow.analyze(model, x, frontend="fx").groups
    assert sum(g.widenable for g in core) == sum(g.widenable for g in source) == 12
    student = fxgrow.widen(gm, x, factor=1.5, frontend="export")
    assert fxgrow.growth_record(student).error.max_rel < 1e-4


# -- torchvision and Hugging Face through export -------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, widenable",
    [
        ("resnet18", 12),
        ("mobilenet_v3_small", 27),
        ("efficientnet_b0", 40),
        ("shufflenet_v2_x0_5", 46),
        ("regnet_x_400mf", 49),
    ],
)
def test_torchvision_export_groups_equal_fx_groups(name, widenable, one_thread):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    diff = compare_frontends(model, x)
    assert diff.equal, diff.describe()
    assert diff.export_widenable == widenable
    student = fxgrow.widen(model, x, factor=1.5, frontend="export", as_graph=True)
    assert fxgrow.growth_record(student).error.max_rel < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, widenable",
    [("ResNetForImageClassification", 12), ("ConvNextV2ForImageClassification", 8)],
)
def test_hugging_face_convnets_grow_exactly_through_export(name, widenable, one_thread):
    transformers = pytest.importorskip("transformers")
    conv = {"num_labels": 10, "hidden_sizes": [16, 24, 32, 48], "depths": [1, 1, 1, 1]}
    if name == "ResNetForImageClassification":
        model = transformers.ResNetForImageClassification(
            transformers.ResNetConfig(embedding_size=16, **conv)
        )
    else:
        model = transformers.ConvNextV2ForImageClassification(transformers.ConvNextV2Config(**conv))
    torch.manual_seed(0)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    groups = fxgrow.analyze(model, x, frontend="export").groups
    assert sum(g.widenable for g in groups) == widenable
    assert not [b for g in groups for b in g.blockers if "no rule" in b.reason]
    student = fxgrow.widen(model, x, factor=1.5, frontend="export", as_graph=True)
    assert fxgrow.growth_record(student).error.max_rel < 1e-4
    grown = dict(student.named_parameters())
    assert any(p.shape != grown[n].shape for n, p in model.named_parameters() if n in grown)
    with torch.no_grad():
        torch.testing.assert_close(
            student(x).logits if hasattr(student(x), "logits") else student(x)[0],
            model(x).logits,
            rtol=1e-4,
            atol=1e-5,
        )


class Sorted(nn.Module):
    """sort/topk along a spatial axis (channels pass through) or along the channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.a, self.b = nn.Conv1d(3, 6, 1), nn.Conv1d(6, 2, 1)

    def forward(self, x):
        h = torch.sort(self.a(x), dim=self.dim).values
        return self.b(torch.topk(h, 4, dim=-1).values)


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_sort_keeps_channels_along_other_axes_and_blocks_its_own(frontend):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7)
    model = Sorted(dim=-1).eval()
    hidden = next(g for g in fxgrow.analyze(model, x, frontend=frontend).groups if g.name == "a")
    assert hidden.widenable, hidden.blockers
    student = fxgrow.widen(model, x, widths={"a": 9}, frontend=frontend)
    with torch.no_grad():
        torch.testing.assert_close(student(x), model(x), rtol=1e-4, atol=1e-5)
    across = Sorted(dim=1).eval()
    hidden = next(g for g in fxgrow.analyze(across, x, frontend=frontend).groups if g.name == "a")
    assert [b.reason for b in hidden.blockers if b.kind == "op"] == ["positions reordered by sort"]
