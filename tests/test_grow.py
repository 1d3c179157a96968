"""Growth on torchvision models (random init): ``fxgrow.stages`` and ``fxgrow.grow``.

The students are checked exact against their teachers and, where torchvision has the bigger
architecture (resnet18 -> resnet34, resnet50 -> resnet101, resnet50 -> wide_resnet50_2), loaded
into it with ``strict=True`` and checked exact again."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torchvision
from helpers import teacher_unchanged, train_step

import fxgrow

pytestmark = pytest.mark.slow

TOL = 1e-5  # float32


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)().eval()


X = randn(1, 3, 64, 64)


def grow_exact(model: nn.Module, x=X, **kwargs) -> torch.fx.GraphModule:
    """grow(...) with the teacher checked bit-identical and the student checked exact."""
    with teacher_unchanged(model):
        student = fxgrow.grow(model, x, verify=False, **kwargs)
        err = fxgrow.compare(model, student, x)
    assert err.max_rel <= TOL, err
    return student


def load_into(student: nn.Module, name: str) -> nn.Module:
    """The student's state_dict in a fresh torchvision ``name`` (strict), in eval mode."""
    target = getattr(torchvision.models, name)().eval()
    target.load_state_dict(student.state_dict(), strict=True)
    return target


def children(model: nn.Module, path: str) -> list[str]:
    return [n for n, _ in model.get_submodule(path).named_children()]


def called_modules(gm: torch.fx.GraphModule) -> list[str]:
    return [n.target for n in gm.graph.nodes if n.op == "call_module"]


def block_order(gm: torch.fx.GraphModule, parent: str) -> list[str]:
    """Children of ``parent`` in the order the graph runs them."""
    out = []
    for t in called_modules(gm):
        if t.startswith(parent + "."):
            child = t[len(parent) + 1 :].split(".")[0]
            if child not in out:
                out.append(child)
    return out


# -- resnet18 -> resnet34, resnet50 -> resnet101 -------------------------------------------------
RESNET34 = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return build("resnet18")


def test_stages_resnet18(resnet18):
    stages = fxgrow.stages(resnet18, X)
    assert [(s.name, s.parent, s.count) for s in stages] == [
        (f"layer{k}", f"layer{k}", 2) for k in (1, 2, 3, 4)
    ]
    for s in stages:
        assert [b.path for b in s.blocks] == [f"{s.name}.0", f"{s.name}.1"]
        assert s.template.path == f"{s.name}.1"
        # layer1.0 is identity-shaped; layer2-4 lead with a downsampling block
        assert [b.residual for b in s.blocks] == [s.name == "layer1", True]


def test_resnet18_to_resnet34(resnet18):
    student = grow_exact(resnet18, blocks=RESNET34)
    for stage, count in RESNET34.items():
        assert children(student, stage) == [str(k) for k in range(count)]
        assert block_order(student, stage) == [str(k) for k in range(count)]
    assert [s.count for s in fxgrow.stages(student, X)] == list(RESNET34.values())
    # new blocks: copies of the stage's last block with its last BatchNorm zeroed
    for path in ("layer1.2", "layer3.5", "layer4.2"):
        block = student.get_submodule(path)
        assert not block.bn2.weight.any() and not block.bn2.bias.any()
        template = student.get_submodule(path.rpartition(".")[0] + ".1")
        assert torch.equal(block.conv1.weight, template.conv1.weight)
    resnet34 = load_into(student, "resnet34")
    assert fxgrow.compare(resnet18, resnet34, X).max_rel <= TOL
    # another input (batch 2, another size): still the teacher's function
    x2 = randn(2, 3, 96, 96, seed=2)
    assert fxgrow.compare(resnet18, resnet34, x2).max_rel <= TOL
    # the zeroed BatchNorm learns: the new block is not dead
    train_step(student, X)
    assert student.get_submodule("layer1.2").bn2.bias.any()


def test_resnet50_to_resnet101():
    resnet50 = build("resnet50")
    student = grow_exact(resnet50, blocks={"layer3": 23})
    assert children(student, "layer3") == [str(k) for k in range(23)]
    resnet101 = load_into(student, "resnet101")
    assert fxgrow.compare(resnet50, resnet101, X).max_rel <= TOL


def test_resnet50_to_wide_resnet50_2():
    resnet50 = build("resnet50")
    inner = re.compile(r"layer\d\.\d+\.conv[12]")
    widths = {g.name: 2 * g.width for g in fxgrow.groups(resnet50, X) if inner.fullmatch(g.name)}
    assert len(widths) == 2 * (3 + 4 + 6 + 3)
    student = grow_exact(resnet50, width=widths)
    assert student.get_submodule("layer1.0.conv1").out_channels == 128
    assert student.get_submodule("layer4.2.conv2").out_channels == 1024
    wide = load_into(student, "wide_resnet50_2")
    assert fxgrow.compare(resnet50, wide, X).max_rel <= TOL


# -- stage growth on other families -----------------------------------------------------------
# model -> (first stage, last stage, the new children of the first, of the last).  New modules
# continue the numbering of their siblings (regnet: block2-0..2 -> block2-3).
STAGES = {
    "mobilenet_v2": (
        "features.2-3",
        "features.14-16",
        ["features.19"],
        ["features.20", "features.21"],
    ),
    "regnet_y_400mf": (
        "trunk_output.block2",
        "trunk_output.block4",
        ["trunk_output.block2.block2-3"],
        ["trunk_output.block4.block4-6", "trunk_output.block4.block4-7"],
    ),
    "efficientnet_b0": (
        "features.2",
        "features.6",
        ["features.2.2"],
        ["features.6.4", "features.6.5"],
    ),
}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_growth(name):
    model = build(name)
    first, last, new_first, new_last = STAGES[name]
    stages = fxgrow.stages(model, X)
    assert stages[0].name == first and stages[-1].name == last
    counts = [s.count for s in stages]
    student = grow_exact(model, blocks={first: counts[0] + 1, last: counts[-1] + 2})
    assert [s.count for s in fxgrow.stages(student, X)] == [counts[0] + 1] + counts[1:-1] + [
        counts[-1] + 2
    ]
    for stage, new in [(stages[0], new_first), (stages[-1], new_last)]:
        template = student.get_submodule(stage.template.path)
        parent = stage.parent
        for path in new:
            block = student.get_submodule(path)
            assert type(block) is type(template)
            assert {k: v.shape for k, v in block.state_dict().items()} == {
                k: v.shape for k, v in template.state_dict().items()
            }
        # the copies run right after the stage's last block, in order
        order = block_order(student, parent)
        tail = stage.template.path[len(parent) + 1 :].split(".")[0]
        names = [p[len(parent) + 1 :] for p in new]
        assert order[order.index(tail) + 1 : order.index(tail) + 1 + len(names)] == names
    assert fxgrow.compare(model, student, randn(2, 3, 96, 96, seed=2)).max_rel <= TOL


# -- width and depth together, composition ------------------------------------------------------
def test_width_and_blocks_resnet18(resnet18):
    student = grow_exact(resnet18, width=1.5, blocks={"layer1": 3, "layer4": 4})
    assert student.get_submodule("layer1.2.conv1").out_channels == 96
    assert children(student, "layer4") == ["0", "1", "2", "3"]
    assert student.get_submodule("layer4.3.conv1").out_channels == 768
    train_step(student, X)


def test_grow_twice(resnet18):
    once = grow_exact(resnet18, blocks={"layer1": 3})
    twice = fxgrow.grow(once, X, blocks={"layer1": 4}, verify=False)
    assert children(twice, "layer1") == ["0", "1", "2", "3"]
    assert fxgrow.compare(resnet18, twice, X).max_rel <= TOL


def test_deepen_then_grow(resnet18):
    # an identity layer inside layer1.1 leaves layer1.1 a block of stage layer1: growing
    # layer1 to 3 blocks adds one block
    deep = fxgrow.deepen(resnet18, X, after="layer1_1_relu")
    assert [s.count for s in fxgrow.stages(deep, X)] == [2, 2, 2, 2]
    student = fxgrow.grow(deep, X, blocks={"layer1": 3}, verify=False)
    assert block_order(student, "layer1") == ["0", "1", "2"]
    assert fxgrow.compare(resnet18, student, X).max_rel <= TOL


def test_block_copies_after_several_blocks_in_one_call(resnet18):
    # a copy after every identity-shaped block of two stages, one named twice; the copies run
    # right after their blocks, and later blocks read the copies' outputs
    after = ["layer1.0", "layer1.1", "layer2.1", "layer2.1"]
    with teacher_unchanged(resnet18):
        student = fxgrow.deepen(resnet18, X, after=after, kind="block", verify=False)
    assert sorted(children(student, "layer1")) == ["0", "0_deepen0", "1", "1_deepen0"]
    assert block_order(student, "layer1") == ["0", "0_deepen0", "1", "1_deepen0"]
    assert block_order(student, "layer2") == ["0", "1", "1_deepen1", "1_deepen0"]
    assert fxgrow.compare(resnet18, student, X).max_rel <= TOL
    n_params = sum(p.numel() for p in student.parameters())
    assert n_params == sum(p.numel() for p in resnet18.parameters()) + sum(
        p.numel()
        for b in ("layer1.0", "layer1.1", "layer2.1", "layer2.1")
        for p in resnet18.get_submodule(b).parameters()
    )


# -- errors ------------------------------------------------------------------------------------
def test_unknown_stage(resnet18):
    with pytest.raises(fxgrow.UnknownGroupError) as e:
        fxgrow.grow(resnet18, X, blocks={"layer5": 3})
    msg = str(e.value)
    assert msg == "no residual stage named 'layer5'; did you mean 'layer4', 'layer3', 'layer2'?"
    with pytest.raises(
        fxgrow.UnknownGroupError, match=r"named .encoder.; stages: layer1, layer2, layer3, layer4$"
    ):
        fxgrow.grow(resnet18, X, blocks={"encoder": 3})
    with pytest.raises(fxgrow.UnknownGroupError, match="did you mean 'layer1'"):
        fxgrow.grow(resnet18, X, blocks={"layr1": 3})


@pytest.mark.parametrize(
    "blocks, match",
    [
        ({"layer1": 1}, "has 2 blocks; fxgrow only grows"),
        ({"layer1": 3.0}, "must be an integer"),
        (["layer1"], "must map a stage name"),
    ],
)
def test_bad_block_counts(resnet18, blocks, match):
    with teacher_unchanged(resnet18), pytest.raises(fxgrow.InputError, match=match):
        fxgrow.grow(resnet18, X, blocks=blocks)


def test_same_count_is_a_copy(resnet18):
    student = grow_exact(resnet18, blocks={"layer1": 2})
    assert children(student, "layer1") == ["0", "1"]


class Block(nn.Module):
    def __init__(self, c: int, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), act

    def forward(self, x):
        return self.act(x + self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.stage = nn.Sequential(Block(4, act), Block(4, act))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)))


def test_activation_after_add():
    # relu(x + 0) = x for the previous block's relu output; gelu(x + 0) != x
    x = randn(2, 3, 8, 8)
    torch.manual_seed(0)
    ok = Net(nn.ReLU()).eval()
    student = grow_exact(ok, x, blocks={"stage": 4})
    assert children(student, "stage") == ["0", "1", "2", "3"]
    torch.manual_seed(0)
    bad = Net(nn.GELU()).eval()
    with pytest.raises(fxgrow.DeepenError, match="idempotent"):
        fxgrow.grow(bad, x, blocks={"stage": 3})
