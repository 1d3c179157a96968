"""init= on widen: replicate / zero / gradmax, exact on real models; fresh units learn;
rank_groups orders groups by their new units' gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from helpers import teacher_unchanged

import fxgrow
from fxgrow.analysis.context import CONSUME, PRODUCE
from fxgrow.rewrite.init import new_unit_axes

TOL = 1e-10


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def lm_loss(model, batch):
    logits = model(batch).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    return model, x, (x, torch.tensor([1, 7]))


def vit():
    import timm

    torch.manual_seed(0)
    model = (
        timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10
        )
        .double()
        .eval()
    )
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    return model, x, (x, torch.tensor([1, 7]))


def llama():
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        use_cache=False,
    )
    model = transformers.LlamaForCausalLM(cfg).double().eval()
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    return model, ids, ids


def _kwargs(init, loss, batch):
    return dict(init=init, loss_fn=loss, batch=batch) if init == "gradmax" else dict(init=init)


@pytest.mark.parametrize("init", ["replicate", "zero", "gradmax"])
def test_resnet18_each_init_exact(resnet, init):
    model, x, batch = resnet
    # gradmax runs double backward passes: two groups keep it quick
    sizes = (
        dict(widths={"layer1.0.conv1": 96, "layer3.0.conv2": 320})
        if init == "gradmax"
        else dict(factor=1.5)
    )
    with teacher_unchanged(model):
        student = fxgrow.widen(model, x, verify=False, **sizes, **_kwargs(init, ce, batch))
    assert fxgrow.compare(model, student, x).max_abs <= TOL
    w = student.get_submodule("layer1.0.conv1").weight
    assert w.shape[0] == 96
    new_rows, out_cols = w[64:], student.get_submodule("layer1.0.conv2").weight[:64, 64:]
    if init == "replicate":
        (change,) = [
            c for c in fxgrow.plan(model, x, **sizes).changes if c.group == "layer1.0.conv1"
        ]
        assert torch.equal(new_rows, w[torch.as_tensor(change.map.source[64:])])
    else:  # own fan-in, zero fan-out
        assert new_rows.abs().sum() > 0 and out_cols.abs().sum() == 0
        assert not any(torch.allclose(r, w[j]) for r in new_rows[:4] for j in range(64))


@pytest.mark.slow
@pytest.mark.parametrize("init", ["replicate", "zero", "gradmax"])
def test_vit_each_init_exact(init):
    model, x, batch = vit()
    student = fxgrow.widen(model, x, factor=2, verify=False, **_kwargs(init, ce, batch))
    assert fxgrow.compare(model, student, x).max_abs <= TOL
    plan = fxgrow.plan(model, x, factor=2, init=init)
    got = {c.group: c.init for c in plan.changes}
    # the residual stream is normalised by LayerNorm: it replicates; heads and MLPs take init
    assert got["patch_embed.proj"] == "replicate"
    assert got["blocks.0.mlp.fc1"] == got["blocks.0.attn.qkv"] == init
    assert student.get_submodule("blocks.0.mlp.fc1").weight.shape == (1536, 384)


@pytest.mark.slow
@pytest.mark.parametrize("init", ["replicate", "zero", "gradmax"])
def test_llama_each_init_exact(init):
    model, ids, batch = llama()
    student = fxgrow.widen(model, ids, factor=2, verify=False, **_kwargs(init, lm_loss, batch))
    assert (model(ids).logits - student(ids).logits).abs().max() <= TOL
    got = {c.group: c.init for c in fxgrow.plan(model, ids, factor=2, init=init).changes}
    assert got["model.embed_tokens"] == "replicate"  # RMSNorm over the hidden stream
    assert got["model.layers.0.mlp.gate_proj"] == got["model.layers.0.self_attn.q_proj"] == init
    up = student.get_submodule("model.layers.0.mlp.up_proj").weight
    down = student.get_submodule("model.layers.0.mlp.down_proj").weight
    assert up.shape == (128, 64) and down.shape == (64, 128)
    if init != "replicate":
        assert up[64:].abs().sum() > 0 and down[:, 64:].abs().sum() == 0


def test_fresh_units_learn():
    """Fan-out moves on the first step (the new units' values are non-zero), fan-in on the
    second (once the fan-out is non-zero)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    student = fxgrow.widen(model, x, widths={"layer2.0.conv1": 192}, init="zero")
    conv1, conv2 = (student.get_submodule(f"layer2.0.conv{i}") for i in (1, 2))
    fan_in0 = conv1.weight[128:].detach().clone()
    assert fan_in0.abs().min() > 0 and conv2.weight[:, 128:].abs().max() == 0
    student.train()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        F.cross_entropy(student(x), y).backward()
        opt.step()
        if step == 0:
            assert conv2.weight[:, 128:].abs().max() > 0
            assert torch.equal(conv1.weight[128:], fan_in0)
    assert not torch.equal(conv1.weight[128:], fan_in0)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_gradmax_beats_random_fan_in():
    torch.manual_seed(0)
    model = MLP().double()
    x = torch.randn(64, 32, dtype=torch.float64)
    batch = (x, torch.randint(0, 4, (64,)))
    objective, norms = {}, {}
    for init in ("zero", "gradmax"):  # 4 new units in a 32-d input space
        student = fxgrow.widen(model, x, widths={"fc1": 20}, init=init, loss_fn=ce, batch=batch)
        g = torch.autograd.grad(ce(student, batch), student.fc2.weight)[0]
        objective[init] = float(g[:, 16:].pow(2).sum())
        norms[init] = float(student.fc1.weight[16:].detach().norm(dim=1).mean())
    assert norms["gradmax"] == pytest.approx(norms["zero"], rel=1e-9)  # same row norm
    assert objective["gradmax"] > 3 * objective["zero"]


def test_amax_over_channels_replicates():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            h = self.a(x)
            return self.b(h) + h.amax(dim=-1, keepdim=True)

    torch.manual_seed(0)
    model, x = M().double(), torch.randn(5, 4, dtype=torch.float64)
    plan = fxgrow.plan(model, x, factor=2, init="zero")
    assert [c.init for c in plan.changes] == ["replicate"]
    assert fxgrow.compare(model, fxgrow.widen(model, x, factor=2, init="zero"), x).max_abs <= TOL


def test_plan_round_trip_keeps_init(resnet):
    model, x, _ = resnet
    plan = fxgrow.plan(model, x, widths={"layer1.0.conv1": 80}, init="zero")
    again = fxgrow.WidenPlan.from_json(plan.to_json())
    assert again == plan and again.changes[0].init == "zero"
    assert again.changes[0].map.fractions[64:] == (0.0,) * 16
    assert "(zero)" in str(plan)
    student = fxgrow.widen(model, x, plan=again)
    assert student.get_submodule("layer1.0.conv2").weight[:, 64:].abs().sum() == 0


def test_hand_written_plan_with_zero_on_a_normalised_group_is_refused():
    model, x, _ = vit()
    plan = fxgrow.plan(model, x, factor=2, init="zero").to_dict()
    for c in plan["changes"]:
        c["init"] = "zero"
        c["map"]["fractions"] = [1.0] * c["map"]["old"] + [0.0] * (
            c["map"]["new"] - c["map"]["old"]
        )
    with pytest.raises(
        fxgrow.WidthError,
        match="group 'patch_embed.proj' cannot take "
        "init='zero' exactly: .*normalised by layer_norm",
    ):
        fxgrow.widen(model, x, plan=fxgrow.WidenPlan.from_dict(plan))


def test_bad_init_arguments(resnet):
    model, x, _ = resnet
    with pytest.raises(
        fxgrow.InputError, match="init must be one of 'replicate', 'zero', 'gradmax', got 'random'"
    ):
        fxgrow.widen(model, x, factor=2, init="random")
    with pytest.raises(fxgrow.InputError, match='init="gradmax" needs loss_fn'):
        fxgrow.widen(model, x, factor=2, init="gradmax")


def test_new_unit_masks(resnet):
    model, x, _ = resnet
    analysis = fxgrow.analyze(model, x)
    plan = fxgrow.plan(analysis, widths={"layer1.0.conv1": 80}, init="zero")
    root = analysis.group("layer1.0.conv1").root
    fan_in = {(a.target, a.axis): a.mask for a in new_unit_axes(analysis, plan, {root}, PRODUCE)}
    fan_out = {(a.target, a.axis): a.mask for a in new_unit_axes(analysis, plan, {root}, CONSUME)}
    assert fan_in[("layer1.0.conv1.weight", 0)].nonzero().flatten().tolist() == list(range(64, 80))
    assert list(fan_out) == [("layer1.0.conv2.weight", 1)]


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a1, self.a2 = nn.Linear(8, 16), nn.Linear(16, 3)
        self.b1, self.b2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.a2(torch.relu(self.a1(x))), self.b2(torch.relu(self.b1(x)))


def test_rank_groups_scores_what_the_loss_sees():
    torch.manual_seed(0)
    model = TwoHeads()
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    scores = fxgrow.rank_groups(model, x, lambda m, b: F.cross_entropy(m(b[0])[0], b[1]), (x, y))
    assert [s.group for s in scores] == ["a1", "b1"]
    assert scores[0].score > 0 and scores[1].score == 0.0
    assert scores[0].new_units == 16 and scores[0].width == 16
    with pytest.raises(fxgrow.InputError, match="init must be 'zero' or 'gradmax'"):
        fxgrow.rank_groups(model, x, lambda m, b: m(b).sum(), x, init="replicate")


def test_rank_groups_with_gradmax_scores_at_least_random_fan_in():
    torch.manual_seed(0)
    model = TwoHeads()
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))

    def loss(m, b):
        return F.cross_entropy(m(b[0])[0], b[1])

    zero = {s.group: s.score for s in fxgrow.rank_groups(model, x, loss, (x, y))}
    grad = {s.group: s.score for s in fxgrow.rank_groups(model, x, loss, (x, y), init="gradmax")}
    assert grad["a1"] > zero["a1"] > 0 and grad["b1"] == zero["b1"] == 0.0


def test_rank_lists_normalised_groups_unscored():
    model, x, batch = vit()
    scores = fxgrow.rank_groups(model, x, ce, batch)
    unscored = [s for s in scores if s.score is None]
    assert [s.group for s in unscored] == ["patch_embed.proj"]
    assert "LayerNorm" in unscored[0].why or "norm" in unscored[0].why
    assert all(s.score > 0 for s in scores if s.score is not None)


def test_cli_inspect_rank(capsys):
    from fxgrow.cli import main

    assert (
        main(["inspect", "torchvision:resnet18", "--input-shape", "2,3,32,32", "--rank", "-q"]) == 0
    )
    out = capsys.readouterr().out
    assert "groups ranked by the gradient new units would get" in out
    assert out.count("layer") >= 12


@pytest.mark.slow
def test_shufflenet_zero_init_exact_and_factor_leaves_the_stage3_trunk():
    """init="zero" widens every widenable group of shufflenet_v2_x0_5 exactly.  ``factor=``
    leaves stage3's trunk (the channel-shuffled pieces) at its width: it is no group of its own
    but a chain that grows by placing fresh units, when named in ``widths=``
    (tests/test_shuffle_fresh.py grows it to 57-64 channels a half)."""
    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    plan = fxgrow.plan(model, x, factor=2, init="zero")
    assert {c.init for c in plan.changes} == {"zero"} and len(plan.changes) == 46
    student = fxgrow.widen(model, x, plan=plan)
    assert fxgrow.compare(model, student, x).max_abs <= TOL
    changed = {c.group for c in plan.changes}
    assert "stage3.0.branch2.0" in changed
    assert not any(name.startswith("stage3.0.branch2.5") for name in changed)
