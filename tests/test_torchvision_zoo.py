"""Acceptance tests of the foundation on real torchvision classifiers (random init).

Every model is widened x1.5 on every widenable channel group and checked for: exact
preservation (float32 and float64), the teacher left untouched, every group either widened or
fixed, the student's tensor shapes and module attributes, a training step, and determinism in
the seed.  A few resnet50 tests cover explicit widths and the errors users see."""

from __future__ import annotations

import copy
from functools import cached_property

import pytest
import torch
import torchvision
from helpers import train_step, widen_exact

import fxgrow

pytestmark = pytest.mark.slow

FACTOR = 1.5

# name -> (constructor keyword arguments, input side).  64x64 is enough for every model but
# inception_v3, whose stem needs 75x75.
NO_AUX = dict(aux_logits=False, init_weights=False)
MODELS = {
    "resnet18": ({}, 64),
    "resnet50": ({}, 64),
    "resnext50_32x4d": ({}, 64),
    "wide_resnet50_2": ({}, 64),
    "vgg11_bn": ({}, 64),
    "alexnet": ({}, 64),
    "densenet121": ({}, 64),
    "googlenet": (NO_AUX, 64),
    "inception_v3": (NO_AUX, 75),
    "mobilenet_v2": ({}, 64),
    "mobilenet_v3_small": ({}, 64),
    "efficientnet_b0": ({}, 64),
    "regnet_y_400mf": ({}, 64),
    "mnasnet0_5": ({}, 64),
    "squeezenet1_0": ({}, 64),
    "shufflenet_v2_x0_5": ({}, 64),
}


def build(name: str, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, torch.Tensor]:
    """A seeded, randomly initialised model in eval mode and a batch-2 input for it."""
    kwargs, side = MODELS[name]
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(**kwargs).eval().to(dtype)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return model, x


class Case:
    """One zoo model with its analysis, plan and float32 student, computed once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.teacher, self.x = build(name)

    @cached_property
    def analysis(self) -> fxgrow.Analysis:
        return fxgrow.analyze(self.teacher, self.x)

    @cached_property
    def plan(self) -> fxgrow.WidenPlan:
        return fxgrow.plan(self.analysis, factor=FACTOR)

    @cached_property
    def student(self) -> torch.fx.GraphModule:
        return widen_exact(self.teacher, self.x, factor=FACTOR)


@pytest.fixture(scope="module", params=list(MODELS))
def case(request) -> Case:
    # Module-scoped and parametrized: pytest runs every test of one model before building the
    # next, so only one model (and its student) is alive at a time.
    return Case(request.param)


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.state_dict())


def expected_shapes(case: Case) -> dict[str, tuple[int, ...]]:
    """Every teacher tensor's shape after the plan: on each axis, every member of a changed
    group scales its positions by new_width / width."""
    shapes = {k: list(v.shape) for k, v in _tensors(case.teacher).items()}
    by_name = {g.name: g for g in case.analysis.groups}
    for c in case.plan.changes:
        g = by_name[c.group]
        for m in g.members:
            if m.kind not in ("parameter", "buffer"):
                continue
            grown = m.positions * c.new_width
            assert grown % g.width == 0, (c.group, m)
            shapes[m.target][m.axis] += grown // g.width - m.positions
    return {k: tuple(v) for k, v in shapes.items()}


def check_module_attributes(student: torch.nn.Module) -> int:
    """Module attributes (out_channels, num_features, in_features, ...) agree with the tensors
    the student holds.  Returns how many modules were checked."""
    checked = 0
    for name, mod in student.named_modules():
        where = f"{name} ({type(mod).__name__})"
        if isinstance(mod, torch.nn.modules.conv._ConvNd):
            w = mod.weight
            if mod.transposed:
                assert w.shape[0] == mod.in_channels, where
                assert w.shape[1] * mod.groups == mod.out_channels, where
            else:
                assert w.shape[0] == mod.out_channels, where
                assert w.shape[1] * mod.groups == mod.in_channels, where
            assert mod.in_channels % mod.groups == 0 and mod.out_channels % mod.groups == 0, where
            if mod.bias is not None:
                assert mod.bias.shape == (mod.out_channels,), where
        elif isinstance(mod, torch.nn.Linear):
            assert mod.weight.shape == (mod.out_features, mod.in_features), where
            if mod.bias is not None:
                assert mod.bias.shape == (mod.out_features,), where
        elif isinstance(mod, torch.nn.modules.batchnorm._NormBase):
            for t in (mod.weight, mod.bias, mod.running_mean, mod.running_var):
                if t is not None:
                    assert t.shape == (mod.num_features,), where
        elif isinstance(mod, torch.nn.GroupNorm):
            assert mod.num_channels % mod.num_groups == 0, where
            for t in (mod.weight, mod.bias):
                if t is not None:
                    assert t.shape == (mod.num_channels,), where
        elif isinstance(mod, torch.nn.LayerNorm):
            for t in (mod.weight, mod.bias):
                if t is not None:
                    assert tuple(t.shape) == tuple(mod.normalized_shape), where
        else:
            continue
        checked += 1
    return checked


# --- every model ----------------------------------------------------------------------------


def test_float64_is_exact(case: Case):
    """A float64 copy widened: max rel err <= 1e-10.  (First of each model's tests, so that
    the float32 student does not exist yet: vgg11_bn's float64 student alone is ~2.4 GB.)"""
    teacher, x = build(case.name, torch.float64)
    student = widen_exact(teacher, x, tol=1e-10, factor=FACTOR)
    assert all(p.dtype == torch.float64 for p in student.parameters())
    with torch.no_grad():
        assert student(x).shape == teacher(x).shape


def test_widen_is_exact(case: Case):
    """widen(factor=1.5) leaves the teacher bit-identical and computes the same function
    (max rel err <= 1e-5 in float32) with the same output shape."""
    student = case.student
    n_t = sum(p.numel() for p in case.teacher.parameters())
    n_s = sum(p.numel() for p in student.parameters())
    assert n_s > n_t
    with torch.no_grad():
        assert student(case.x).shape == case.teacher(case.x).shape


def test_unwidened_groups_are_fixed(case: Case):
    """Every widenable group is in the plan; every other group is fixed (blocked only by the
    model's inputs/outputs or by non-channel structure)."""
    planned = {c.group: c for c in case.plan.changes}
    assert planned, "the plan widens nothing"
    for c in planned.values():
        assert c.new_width > c.old_width, c
    widenable = {g.name for g in case.analysis.widenable}
    assert widenable - planned.keys() == set()
    not_fixed = {
        g.name: [str(b) for b in g.blockers]
        for g in case.analysis.groups
        if g.name not in planned and not g.fixed
    }
    if case.name == "shufflenet_v2_x0_5":
        # No Net2Net widening of stage3's trunk exists (docs/zoo.md; tests/test_rules.py
        # checks the same pattern by exhaustive search): its 7 chunks of channel-shuffled
        # halves cut 48 = 3 x 16 channels down to single units that a chunk must keep on one
        # side.  Only stage3's trunk is refused, each part for that reason; stage2 and stage4,
        # with 3 chunks each, widen.
        assert not_fixed, "stage3's trunk cannot grow; fxgrow must say so"
        for name, reasons in not_fixed.items():
            assert name.startswith("stage3."), (name, reasons)
            assert reasons and all(
                r.split(":")[0].startswith(("chunk", "view")) and "interleave" in r for r in reasons
            ), (name, reasons)
        assert any(g.startswith("stage2.") for g in planned)
        assert any(g.startswith("stage4.") for g in planned)
        return
    assert not not_fixed, f"{len(not_fixed)} groups neither widened nor fixed: {not_fixed}"


def test_student_shapes(case: Case):
    """The student's tensors have the planned widths and its modules' attributes agree."""
    student = case.student
    s_tensors = _tensors(student)
    t_tensors = _tensors(case.teacher)
    assert s_tensors.keys() == t_tensors.keys()
    by_name = {g.name: g for g in case.analysis.groups}
    for c in case.plan.changes:
        g = by_name[c.group]
        producers = [m for m in g.members if m.role == "produce"]
        assert producers, f"group {g.name} has no producing member"
        for m in producers:
            if m.kind not in ("parameter", "buffer"):
                continue
            assert student.get_submodule(m.module) is not None
            full = t_tensors[m.target].shape[m.axis]
            if m.positions == full:
                assert s_tensors[m.target].shape[m.axis] == c.new_width * m.positions // g.width, (
                    c,
                    m,
                )
    expected = expected_shapes(case)
    wrong = {
        k: (tuple(v.shape), expected[k])
        for k, v in s_tensors.items()
        if tuple(v.shape) != expected[k]
    }
    assert not wrong, f"student tensors with unexpected shapes (got, expected): {wrong}"
    assert check_module_attributes(student) > 0
    with torch.no_grad():
        assert student(case.x).shape == case.teacher(case.x).shape


def test_student_trains(case: Case):
    train_step(copy.deepcopy(case.student), case.x)


def test_seed_determinism(case: Case):
    """Same seed: a bit-identical student; another seed: a different one."""
    first = _tensors(case.student)
    again = _tensors(fxgrow.widen(case.teacher, case.x, factor=FACTOR, seed=0, verify=False))
    assert again.keys() == first.keys()
    for k, v in first.items():
        assert torch.equal(v, again[k]), f"{k} differs between two widenings with seed 0"
    del again
    maps = lambda seed: [
        c.map.source for c in fxgrow.plan(case.analysis, factor=FACTOR, seed=seed).changes
    ]
    assert maps(0) == maps(0)
    assert maps(1) != maps(0), "seeds 0 and 1 gave the same replication maps"


# --- resnet50: explicit widths and errors ---------------------------------------------------


@pytest.fixture(scope="module")
def resnet50():
    return build("resnet50")


STAGE1_OUT = ["layer1.0.conv3", "layer1.0.downsample.0", "layer1.1.conv3", "layer1.2.conv3"]
STAGE1_BN = ["layer1.0.bn3", "layer1.0.downsample.1", "layer1.1.bn3", "layer1.2.bn3"]


def test_resnet50_residual_stage_width(resnet50):
    model, x = resnet50
    analysis = fxgrow.analyze(model, x)
    group = analysis.group("layer1.0.conv3")
    assert group.widenable and group.width == 256
    produced = {m.module for m in group.members if m.role == "produce"}
    assert set(STAGE1_OUT) <= produced
    for bn in STAGE1_BN:
        for t in ("weight", "bias", "running_mean", "running_var"):
            assert any(m.target == f"{bn}.{t}" and m.axis == 0 for m in group.members), (bn, t)
    for name in STAGE1_OUT + STAGE1_BN:
        assert analysis.group(name).name == group.name, name

    plan = fxgrow.plan(analysis, widths={"layer1.0.conv3": 384})
    assert [(c.group, c.old_width, c.new_width) for c in plan.changes] == [(group.name, 256, 384)]

    student = widen_exact(model, x, widths={"layer1.0.conv3": 384})
    for name in STAGE1_OUT:
        conv = student.get_submodule(name)
        assert conv.out_channels == 384 and conv.weight.shape[0] == 384, name
    for name in STAGE1_BN:
        bn = student.get_submodule(name)
        assert bn.num_features == 384 and bn.weight.shape == (384,), name
        assert bn.running_mean.shape == (384,) and bn.running_var.shape == (384,), name
    for name in ("layer2.0.conv1", "layer2.0.downsample.0", "layer1.1.conv1", "layer1.2.conv1"):
        conv = student.get_submodule(name)
        assert conv.in_channels == 384 and conv.weight.shape[1] == 384, name
    # nothing else grew
    assert student.get_submodule("layer1.0.conv1").out_channels == 64
    assert student.get_submodule("layer1.0.conv2").out_channels == 64
    assert student.get_submodule("layer2.0.conv3").out_channels == 512
    assert student.get_submodule("fc").in_features == 2048
    changed = {k for k, v in _tensors(student).items() if v.shape != model.state_dict()[k].shape}
    assert changed == {
        k
        for k in model.state_dict()
        if any(k.startswith(p + ".") for p in STAGE1_OUT + STAGE1_BN)
        and not k.endswith("num_batches_tracked")
    } | {
        f"{n}.weight"
        for n in ("layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1", "layer2.0.downsample.0")
    }
    check_module_attributes(student)


def test_width_smaller_than_current(resnet50):
    model, x = resnet50
    with pytest.raises(fxgrow.WidthError, match="64"):
        fxgrow.widen(model, x, widths={"layer1.0.conv1": 32})


@pytest.mark.parametrize("width", [96.5, 96.0, "96"])
def test_width_not_an_integer(resnet50, width):
    model, x = resnet50
    with pytest.raises(fxgrow.WidthError, match="integer"):
        fxgrow.widen(model, x, widths={"layer1.0.conv1": width})


def test_unknown_name_suggests_closest(resnet50):
    model, x = resnet50
    with pytest.raises(fxgrow.UnknownGroupError) as info:
        fxgrow.widen(model, x, widths={"layer1.0.conv": 96})
    message = str(info.value)
    assert "'layer1.0.conv'" in message
    assert "did you mean" in message and "'layer1.0.conv1'" in message, message


def test_output_group_is_blocked(resnet50):
    model, x = resnet50
    with pytest.raises(fxgrow.BlockedGroupError, match="model output") as info:
        fxgrow.widen(model, x, widths={"fc": 1500})
    assert "'fc'" in str(info.value)
