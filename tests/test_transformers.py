"""Transformers: attention, normalisation over channels, gated MLPs, tied weights and the
torch.export front end (random init, tiny inputs, no downloads).

1. ``widen(factor=2)`` on vision transformers and ConvNeXts (torchvision, timm): exact, and
   every widenable group widened.
2. Hugging Face models from tiny configs (GPT-2, Llama with grouped-query attention, BERT,
   ViT): hidden size, MLP and heads doubled, exact, the student's shapes, GPT-2's tied
   embedding kept tied (or untied on request).
3. ``deepen(kind="block")`` / ``grow(blocks=...)`` on pre-norm transformers, and the refusal of
   post-norm blocks (BERT).
4.-5. Small hand-checked graphs: LayerNorm/RMSNorm widths, nn.MultiheadAttention, explicit
   matmul attention, SDPA with enable_gqa, a SwiGLU MLP, tied Embedding + Linear.
6. The torch.export front end: a model fx cannot trace is captured automatically, its groups
   are named by module paths, and the student trains.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import teacher_unchanged, train_step, widen_exact
from torch.fx.passes.shape_prop import ShapeProp

import fxgrow

TOL = 1e-5  # float32, eval mode


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def token_ids(vocab: int = 100, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(seed))


def seeded(make, *args, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return make(*args, **kwargs).eval()


def first_tensor(out) -> torch.Tensor:
    return next(t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor))


def assert_input_dependent(model: nn.Module, x: torch.Tensor) -> None:
    """The output depends on the input: the exactness checks below are not vacuous."""
    with torch.no_grad():
        a = first_tensor(model(x)).double()
        b = first_tensor(
            model(
                randn(*x.shape, seed=7)
                if x.is_floating_point()
                else torch.randint_like(x, 0, int(x.max()) + 1)
            )
        ).double()
    assert a.abs().max() > 0
    assert (a - b).abs().max() / a.abs().max() > 1e-3


def params(model: nn.Module, name: str) -> tuple[int, ...]:
    return tuple(model.get_parameter(name).shape)


def is_inner(g: fxgrow.ChannelGroup, outer: fxgrow.ChannelGroup) -> bool:
    """``g`` is laid out inside ``outer`` on a shared parameter axis (a value head dim inside
    the heads): the axis is outer.unit x g.unit, and ``factor`` grows only the outer class."""
    axes = {(m.target, m.axis) for m in outer.members if m.kind == "parameter"}
    return g.width == outer.unit * g.unit and any(
        (m.target, m.axis) in axes for m in g.members if m.kind == "parameter"
    )


def assert_every_group_widened(
    analysis: fxgrow.Analysis, plan: fxgrow.WidenPlan, inner: tuple[str, ...] = ()
) -> None:
    """Every widenable group is in the plan, except the named ones, which must each be laid
    out inside a widened group (they then grow with it: value head dims inside heads)."""
    changed = {c.group for c in plan.changes}
    widenable = {g.name for g in analysis.widenable}
    assert changed <= widenable
    assert widenable - changed == set(inner), sorted(widenable - changed)
    assert len(plan.changes) == len(analysis.widenable) - len(inner)
    for name in inner:
        g = analysis.group(name)
        assert any(is_inner(g, analysis.group(c.group)) for c in plan.changes), name


def sdpa_inputs(student: torch.fx.GraphModule, x) -> list[tuple[torch.Size, ...]]:
    """Shapes of (query, key, value) at every scaled_dot_product_attention of the student."""
    ShapeProp(student).propagate(*(x if isinstance(x, tuple) else (x,)))
    return [
        tuple(a.meta["tensor_meta"].shape for a in n.args[:3])
        for n in student.graph.nodes
        if "scaled_dot_product_attention" in str(n.target)
    ]


# --------------------------------------------------------------------------------------------
# 1. Vision transformers and ConvNeXts, widened x2
# --------------------------------------------------------------------------------------------


def _torchvision(name: str, **kwargs):
    import torchvision

    model = seeded(getattr(torchvision.models, name), **kwargs)
    if name == "vit_b_16":  # torchvision zero-initialises the head: the output would be 0
        with torch.no_grad():
            model.heads.head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(2))
    return model


def _timm(name: str, **kwargs):
    import timm

    return seeded(timm.create_model, name, pretrained=False, **kwargs)


VISION = {
    "vit_b_16": (lambda: _torchvision("vit_b_16", image_size=32), 32),
    "swin_t": (lambda: _torchvision("swin_t"), 64),
    "convnext_tiny": (lambda: _torchvision("convnext_tiny"), 64),
    "timm_vit_tiny_patch16_224": (lambda: _timm("vit_tiny_patch16_224", img_size=32), 32),
    "timm_deit_tiny_patch16_224": (lambda: _timm("deit_tiny_patch16_224", img_size=32), 32),
    "timm_convnext_atto": (lambda: _timm("convnext_atto"), 32),
    "timm_efficientnet_b0": (lambda: _timm("efficientnet_b0"), 32),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VISION))
def test_vision_widen_x2_exact_and_complete(name):
    make, side = VISION[name]
    model, x = make(), randn(2, 3, side, side)
    assert_input_dependent(model, x)
    analysis = fxgrow.analyze(model, x)
    plan = fxgrow.plan(analysis, factor=2)
    # only the model's input channels (RGB) and its classes are fixed
    assert [g.name for g in analysis.groups if not g.widenable] == [
        g.name for g in analysis.groups if g.boundary
    ]
    assert len([g for g in analysis.groups if not g.widenable]) == 2
    assert_every_group_widened(analysis, plan)
    student = widen_exact(model, x, factor=2)
    for c in plan.changes:
        assert c.new_width == 2 * c.old_width, c
    assert sum(p.numel() for p in student.parameters()) > 2 * sum(
        p.numel() for p in model.parameters()
    )


@pytest.mark.slow
def test_timm_efficientnet_keeps_batchnormact_modules():
    from timm.layers import BatchNormAct2d

    model = _timm("efficientnet_b0")
    gm = fxgrow.trace(model)
    bnact = [
        n
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), BatchNormAct2d)
    ]
    assert bnact, "timm's BatchNormAct2d was traced through instead of kept as a module"
    assert len(bnact) == sum(isinstance(m, BatchNormAct2d) for m in model.modules())


# --------------------------------------------------------------------------------------------
# 2. Hugging Face models from tiny configs
# --------------------------------------------------------------------------------------------

H, MLP, HEADS, VOCAB = 32, 64, 4, 100


def gpt2():
    import transformers

    cfg = transformers.GPT2Config(
        n_embd=H,
        n_inner=MLP,
        n_layer=2,
        n_head=HEADS,
        vocab_size=VOCAB,
        n_positions=16,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return seeded(transformers.GPT2LMHeadModel, cfg)


def llama():
    import transformers

    cfg = transformers.LlamaConfig(
        hidden_size=H,
        intermediate_size=MLP,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        use_cache=False,
    )
    return seeded(transformers.LlamaForCausalLM, cfg)


def bert():
    import transformers

    cfg = transformers.BertConfig(
        hidden_size=H,
        intermediate_size=MLP,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        vocab_size=VOCAB,
        max_position_embeddings=16,
    )
    return seeded(transformers.BertModel, cfg)


def hf_vit():
    import transformers

    cfg = transformers.ViTConfig(
        hidden_size=H,
        intermediate_size=MLP,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        image_size=32,
        patch_size=8,
    )
    return seeded(transformers.ViTModel, cfg)


@pytest.fixture(scope="module")
def llama_model():
    return llama()


@pytest.mark.slow
def test_gpt2_widen_x2_exact_tied():
    model, ids = gpt2(), token_ids()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert_input_dependent(model, ids)
    analysis = fxgrow.analyze(model, ids)
    plan = fxgrow.plan(analysis, factor=2)
    assert_every_group_widened(analysis, plan)
    heads = analysis.group("transformer.h.0.attn.c_attn")
    assert heads.unit == HEADS
    student = widen_exact(model, ids, factor=2, as_graph=True)
    # hidden, MLP (Conv1D weights are [in, out]) and heads doubled, head dim kept
    assert params(student, "transformer.wte.weight") == (VOCAB, 2 * H)
    assert params(student, "transformer.wpe.weight") == (16, 2 * H)
    assert params(student, "transformer.h.0.attn.c_attn.weight") == (2 * H, 3 * 2 * H)
    assert params(student, "transformer.h.0.mlp.c_fc.weight") == (2 * H, 2 * MLP)
    assert params(student, "transformer.h.1.mlp.c_proj.weight") == (2 * MLP, 2 * H)
    for q, k, v in sdpa_inputs(student, ids):
        assert q[1] == k[1] == v[1] == 2 * HEADS and q[-1] == H // HEADS
    # the output projection is still the embedding: one tensor
    vocab_by_hidden = [p for p in student.parameters() if tuple(p.shape) == (VOCAB, 2 * H)]
    assert len(vocab_by_hidden) == 1
    assert student.get_parameter("lm_head.weight") is student.get_parameter(
        "transformer.wte.weight"
    )


@pytest.mark.slow
def test_gpt2_widen_x2_untied_exact():
    model, ids = gpt2(), token_ids()
    student = widen_exact(model, ids, factor=2, untie=True, as_graph=True)
    vocab_by_hidden = [p for p in student.parameters() if tuple(p.shape) == (VOCAB, 2 * H)]
    assert len(vocab_by_hidden) == 2
    assert params(student, "transformer.wte.weight") == (VOCAB, 2 * H)
    assert model.lm_head.weight is model.transformer.wte.weight  # the teacher stays tied


@pytest.mark.slow
def test_llama_gqa_widen_x2_exact(llama_model):
    model, ids = llama_model, token_ids()
    assert_input_dependent(model, ids)
    analysis = fxgrow.analyze(model, ids)
    plan = fxgrow.plan(analysis, factor=2)
    # the value head dims sit inside the KV heads: factor grows the heads only
    assert_every_group_widened(
        analysis, plan, inner=("model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj")
    )
    kv = analysis.group("model.layers.0.self_attn.q_proj")
    assert kv.unit == 2  # the KV head count: whole query groups replicate with their KV head
    assert {(m.target, m.axis) for m in kv.members if m.kind == "parameter"} >= {
        ("model.layers.0.self_attn.q_proj.weight", 0),
        ("model.layers.0.self_attn.k_proj.weight", 0),
        ("model.layers.0.self_attn.v_proj.weight", 0),
        ("model.layers.0.self_attn.o_proj.weight", 1),
    }
    change = next(c for c in plan.changes if c.group == kv.name)
    assert (change.map.old, change.map.new) == (2, 4)
    student = widen_exact(model, ids, factor=2, as_graph=True)
    hd = H // HEADS
    kv_dim = 2 * hd
    for i in range(2):
        p = f"model.layers.{i}.self_attn."
        assert params(student, p + "q_proj.weight") == (2 * H, 2 * H)
        assert params(student, p + "k_proj.weight") == (2 * kv_dim, 2 * H)
        assert params(student, p + "v_proj.weight") == (2 * kv_dim, 2 * H)
        assert params(student, p + "o_proj.weight") == (2 * H, 2 * H)
        m = f"model.layers.{i}.mlp."
        assert params(student, m + "gate_proj.weight") == (2 * MLP, 2 * H)
        assert params(student, m + "up_proj.weight") == (2 * MLP, 2 * H)
        assert params(student, m + "down_proj.weight") == (2 * H, 2 * MLP)
        assert params(student, f"model.layers.{i}.input_layernorm.weight") == (2 * H,)
    assert params(student, "model.embed_tokens.weight") == (VOCAB, 2 * H)
    assert params(student, "lm_head.weight") == (VOCAB, 2 * H)
    shapes = sdpa_inputs(student, ids)
    assert len(shapes) == 2
    for q, k, v in shapes:  # 8 query heads (after repeat_kv: 8 key/value heads), head dim 8
        assert q[1] == 2 * HEADS and q[-1] == hd and k[-1] == hd


@pytest.mark.slow
@pytest.mark.parametrize(
    "make,inner",
    [
        (bert, ("encoder.layer.0.attention.self.value", "encoder.layer.1.attention.self.value")),
        (hf_vit, ("layers.0.attention.v_proj", "layers.1.attention.v_proj")),
    ],
    ids=["BertModel", "ViTModel"],
)
def test_hf_encoder_widen_x2_grows_hidden_state(make, inner):
    model = make()
    x = token_ids() if make is bert else randn(2, 3, 32, 32)
    assert_input_dependent(model, x)
    analysis = fxgrow.analyze(model, x, outputs="grow")
    plan = fxgrow.plan(analysis, factor=2)
    assert_every_group_widened(analysis, plan, inner=inner)
    student = widen_exact(model, x, factor=2, outputs="grow")  # compares at teacher positions
    with torch.no_grad():
        hidden = first_tensor(student(x))
        teacher_hidden = first_tensor(model(x))
    assert hidden.shape == teacher_hidden.shape[:-1] + (2 * H,)
    for q, k, v in sdpa_inputs(student, x):
        assert q[1] == k[1] == v[1] == 2 * HEADS and q[-1] == H // HEADS
    names = dict(student.named_parameters())
    mlp = [n for n in names if n.endswith(("intermediate.dense.weight", "mlp.fc1.weight"))]
    assert len(mlp) == 2 and all(tuple(names[n].shape) == (2 * MLP, 2 * H) for n in mlp)


@pytest.mark.slow
def test_hf_encoder_hidden_state_is_fixed_by_default():
    """Without outputs="grow" the hidden state is the model's output: its width is fixed."""
    model, ids = bert(), token_ids()
    analysis = fxgrow.analyze(model, ids)
    hidden = analysis.group("embeddings.LayerNorm")
    assert not hidden.widenable and hidden.boundary
    student = widen_exact(model, ids, factor=2, as_graph=True)
    with torch.no_grad():
        assert first_tensor(student(ids)).shape == first_tensor(model(ids)).shape
    assert params(student, "encoder.layer.0.intermediate.dense.weight") == (2 * MLP, H)


# --------------------------------------------------------------------------------------------
# 3. deepen(kind="block") and grow(blocks=...)
# --------------------------------------------------------------------------------------------


def deepen_exact(model: nn.Module, x, **kwargs) -> torch.fx.GraphModule:
    with teacher_unchanged(model):
        student = fxgrow.deepen(model, x, verify=False, **kwargs)
        err = fxgrow.compare(model, student, x)
    assert err.max_rel <= TOL, err
    return student


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_deepen_vit_b_16_block_exact():
    model, x = _torchvision("vit_b_16", image_size=32), randn(2, 3, 32, 32)
    block = "encoder.layers.encoder_layer_5"
    student = deepen_exact(model, x, after=block, kind="block")
    assert n_params(student) == n_params(model) + n_params(model.get_submodule(block))
    train_step(student, x)


@pytest.mark.slow
def test_deepen_llama_block_exact(llama_model):
    model, ids = llama_model, token_ids()
    student = deepen_exact(model, ids, after="model.layers.0", kind="block", as_graph=True)
    assert n_params(student) == n_params(model) + n_params(model.get_submodule("model.layers.0"))


@pytest.mark.slow
def test_grow_llama_blocks_and_width_exact(llama_model):
    model, ids = llama_model, token_ids()
    (stage,) = fxgrow.stages(model, ids)
    assert stage.name == "model.layers"
    assert [b.path for b in stage.blocks] == ["model.layers.0", "model.layers.1"]
    with teacher_unchanged(model):
        student = fxgrow.grow(
            model, ids, blocks={"model.layers": 4}, width=2, verify=False, as_graph=True
        )
        err = fxgrow.compare(model, student, ids)
    assert err.max_rel <= TOL, err
    for i in range(4):
        assert params(student, f"model.layers.{i}.self_attn.q_proj.weight") == (2 * H, 2 * H)
        assert params(student, f"model.layers.{i}.mlp.down_proj.weight") == (2 * H, 2 * MLP)
    assert len(sdpa_inputs(student, ids)) == 4


@pytest.mark.slow
def test_bert_post_norm_blocks_refused():
    model, ids = bert(), token_ids()
    stages = fxgrow.stages(model, ids)
    assert stages
    for stage in stages:
        with teacher_unchanged(model), pytest.raises(fxgrow.DeepenError, match="post-norm"):
            fxgrow.grow(model, ids, blocks={stage.name: len(stage.blocks) + 1})
    block = stages[0].blocks[0].path
    with pytest.raises(fxgrow.DeepenError, match="post-norm"):
        fxgrow.deepen(model, ids, after=block, kind="block")


# --------------------------------------------------------------------------------------------
# 4. Normalisation over channels: whole multiples only
# --------------------------------------------------------------------------------------------


def test_layernorm_width_error_names_nearest_exact_widths():
    model = seeded(nn.Sequential, nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    x = randn(2, 8)
    with pytest.raises(fxgrow.WidthError) as e:
        fxgrow.widen(model, x, widths={"0": 24})
    assert "16" in str(e.value) and "32" in str(e.value)
    with pytest.raises(fxgrow.WidthError) as e:
        fxgrow.widen(model, x, widths={"0": 40})
    assert "32" in str(e.value) and "48" in str(e.value)
    student = widen_exact(model, x, widths={"0": 48})
    assert student.get_submodule("1").normalized_shape == (48,)


class RMSNorm(nn.Module):
    """RMSNorm written out: x * rsqrt(mean(x^2) + eps) * weight."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(d))
        self.eps = 1e-6

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RMSModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(8, 16), RMSNorm(16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)))


def test_rmsnorm_pow_mean_rsqrt_whole_multiples_only():
    model, x = seeded(RMSModel), randn(2, 5, 8)
    assert_input_dependent(model, x)
    student = widen_exact(model, x, factor=2)
    assert params(student, "norm.weight") == (32,)
    assert params(student, "fc1.weight") == (32, 8)
    with pytest.raises(fxgrow.WidthError) as e:
        fxgrow.widen(model, x, widths={"fc1": 24})  # 1.5x
    assert "16" in str(e.value) and "32" in str(e.value)
    # factor=1.5 rounds a uniformly replicated group up to the next whole multiple
    plan = fxgrow.plan(model, x, factor=1.5)
    assert [(c.group, c.new_width) for c in plan.changes] == [("fc1", 32)]


# --------------------------------------------------------------------------------------------
# 5. Small hand-checked attention graphs, gated MLP, tied weights
# --------------------------------------------------------------------------------------------


class MHAModel(nn.Module):
    def __init__(self, need_weights: bool = True) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.out = nn.Linear(16, 4)
        self.need_weights = need_weights

    def forward(self, x):
        h = self.inp(x)
        a, _ = self.attn(h, h, h, need_weights=self.need_weights)
        return self.out(a)


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_heads_doubled(need_weights):
    model, x = seeded(MHAModel, need_weights), randn(2, 6, 8)
    assert_input_dependent(model, x)
    analysis = fxgrow.analyze(model, x)
    heads = analysis.group("attn")
    assert heads.unit == 4 and heads.width == 16
    # embed_dim = num_heads x head_dim: the input, the heads and the output are one space
    assert {m.target for m in heads.members if m.kind == "parameter"} >= {
        "inp.weight",
        "attn.in_proj_weight",
        "attn.out_proj.weight",
        "out.weight",
    }
    plan = fxgrow.plan(analysis, factor=2)
    assert_every_group_widened(analysis, plan)
    student = widen_exact(model, x, factor=2)
    attn = student.get_submodule("attn")
    assert (attn.num_heads, attn.embed_dim, attn.head_dim) == (8, 32, 4)
    assert tuple(attn.in_proj_weight.shape) == (96, 32)
    assert tuple(attn.out_proj.weight.shape) == (32, 32)
    train_step(student, x)


class ExplicitAttention(nn.Module):
    """q k^T / sqrt(d) -> softmax -> v with matmul, heads made by a reshape."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.inp = nn.Linear(8, d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.out = nn.Linear(d, 4)
        self.scale = 1 / math.sqrt(d // heads)

    def forward(self, x):
        h = self.inp(x)
        B, T = h.shape[0], h.shape[1]
        q = self.q(h).reshape(B, T, self.heads, -1).transpose(1, 2)
        k = self.k(h).reshape(B, T, self.heads, -1).transpose(1, 2)
        v = self.v(h).reshape(B, T, self.heads, -1).transpose(1, 2)
        a = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        y = torch.matmul(a, v).transpose(1, 2).reshape(B, T, -1)
        return self.out(self.o(y))


def test_explicit_matmul_attention_heads_widen_head_dim_fixed():
    model, x = seeded(ExplicitAttention), randn(2, 6, 8)
    assert_input_dependent(model, x)
    analysis = fxgrow.analyze(model, x)
    heads = analysis.group("q")
    assert (heads.unit, heads.width, heads.widenable) == (2, 16, True)
    # the q/k head dim: 8 units, contracted between two activations -> not widenable
    head_dim = [
        g
        for g in analysis.all_groups
        if g.unit == 8
        and not g.widenable
        and any(m.target == "q.weight" and m.axis == 0 for m in g.members)
        and any(m.target == "k.weight" and m.axis == 0 for m in g.members)
    ]
    assert len(head_dim) == 1, [(g.name, g.unit) for g in analysis.all_groups]
    assert any("matmul" in str(b) for b in head_dim[0].blockers)
    plan = fxgrow.plan(analysis, factor=2)
    assert_every_group_widened(analysis, plan, inner=("v",))  # v's head dim: inside heads
    assert next(c for c in plan.changes if c.group == "q").map.new == 4
    student = widen_exact(model, x, factor=2)
    assert params(student, "q.weight") == (32, 32)
    ShapeProp(student).propagate(x)
    scores = [
        n for n in student.graph.nodes if n.op == "call_function" and n.target is torch.softmax
    ]
    assert [tuple(n.meta["tensor_meta"].shape) for n in scores] == [(2, 4, 6, 6)]  # 4 heads
    matmuls = [n for n in student.graph.nodes if n.target is torch.matmul]
    q_in = matmuls[0].args[0].meta["tensor_meta"].shape
    assert tuple(q_in) == (2, 4, 6, 8)  # head dim stays 8


class GQAttention(nn.Module):
    """F.scaled_dot_product_attention with 4 query heads over 2 key/value heads."""

    def __init__(self, d: int = 16, hq: int = 4, hkv: int = 2, hd: int = 4) -> None:
        super().__init__()
        self.hq, self.hkv, self.hd = hq, hkv, hd
        self.inp = nn.Linear(8, d)
        self.q, self.k, self.v = (
            nn.Linear(d, hq * hd),
            nn.Linear(d, hkv * hd),
            nn.Linear(d, hkv * hd),
        )
        self.o, self.out = nn.Linear(hq * hd, d), nn.Linear(d, 4)

    def forward(self, x):
        h = self.inp(x)
        B, T = h.shape[0], h.shape[1]
        q = self.q(h).view(B, T, self.hq, self.hd).transpose(1, 2)
        k = self.k(h).view(B, T, self.hkv, self.hd).transpose(1, 2)
        v = self.v(h).view(B, T, self.hkv, self.hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.out(self.o(y.transpose(1, 2).reshape(B, T, self.hq * self.hd)))


def test_sdpa_gqa_replicates_whole_kv_groups():
    model, x = seeded(GQAttention), randn(2, 6, 8)
    assert_input_dependent(model, x)
    analysis = fxgrow.analyze(model, x)
    kv = analysis.group("k")
    assert kv.name == analysis.group("q").name and kv.unit == 2  # KV heads
    plan = fxgrow.plan(analysis, factor=2)
    assert_every_group_widened(analysis, plan, inner=("v",))
    g = next(c for c in plan.changes if c.group == kv.name).map
    assert (g.old, g.new) == (2, 4)
    student = widen_exact(model, x, factor=2)
    hd, r = 4, 2
    qw = student.get_parameter("q.weight").detach().view(4, r, hd, -1)  # kv head, group, dim
    kw = student.get_parameter("k.weight").detach().view(4, hd, -1)
    vw = student.get_parameter("v.weight").detach().view(4, hd, -1)
    ow = student.get_parameter("o.weight").detach().view(-1, 4, r, hd)
    t_ow = model.o.weight.detach().view(-1, 2, r, hd)
    assert tuple(qw.shape)[-1] == 32
    for j, src in enumerate(g.source):
        # a new KV head copies its source with all r query heads that read it ...
        assert torch.equal(qw[j], qw[src]) and torch.equal(kw[j], kw[src])
        assert torch.equal(vw[j], vw[src])
        # ... and the output projection divides the whole group by its replication count
        o_rows = ow[:16, j]
        assert torch.allclose(o_rows, t_ow[:, src] / g.counts[src], atol=1e-7)
    q, k, v = sdpa_inputs(student, x)[0]
    assert (q[1], k[1], v[1], q[-1]) == (8, 4, 4, hd)


class SwiGLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.gate, self.up = nn.Linear(16, 32, bias=False), nn.Linear(16, 32, bias=False)
        self.down = nn.Linear(32, 16, bias=False)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.down(F.silu(self.gate(h)) * self.up(h)))


def test_swiglu_gate_and_up_one_group():
    model, x = seeded(SwiGLU), randn(2, 5, 8)
    assert_input_dependent(model, x)
    analysis = fxgrow.analyze(model, x)
    hidden = analysis.group("gate")
    assert hidden.widenable and hidden.width == 32
    assert analysis.group("up").name == hidden.name
    assert {(m.target, m.axis) for m in hidden.members if m.kind == "parameter"} == {
        ("gate.weight", 0),
        ("up.weight", 0),
        ("down.weight", 1),
    }
    plan = fxgrow.plan(analysis, factor=2)
    assert_every_group_widened(analysis, plan)
    student = widen_exact(model, x, factor=2)
    assert params(student, "gate.weight") == params(student, "up.weight") == (64, 32)
    assert params(student, "down.weight") == (32, 64)


class TiedLM(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mid = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        h = self.emb(ids)
        return self.head(h + torch.tanh(self.mid(h)))


@pytest.mark.parametrize("untie", [False, True])
def test_tied_embedding_and_linear(untie):
    model, ids = seeded(TiedLM), token_ids(vocab=50)
    assert_input_dependent(model, ids)
    gm = fxgrow.trace(model)
    assert fxgrow.growth.frontend(gm) != "export"
    analysis = fxgrow.analyze(model, ids)
    assert_every_group_widened(analysis, fxgrow.plan(analysis, factor=2))
    student = widen_exact(model, ids, factor=2, untie=untie)
    vocab_by_hidden = [p for p in student.parameters() if tuple(p.shape) == (50, 32)]
    assert len(vocab_by_hidden) == (2 if untie else 1)
    tied = student.get_parameter("head.weight") is student.get_parameter("emb.weight")
    assert tied != untie
    assert model.head.weight is model.emb.weight
    train_step(student, ids)
    if not untie:  # still one tensor after an optimizer step
        assert student.get_parameter("head.weight") is student.get_parameter("emb.weight")


# --------------------------------------------------------------------------------------------
# 6. The torch.export front end
# --------------------------------------------------------------------------------------------


class ShapeBranch(nn.Module):
    """Python control flow on the batch size: fx cannot trace it, torch.export (static shapes)
    can."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if x.shape[0] > 1:
            h = torch.relu(self.fc2(h)) * 2.0
        else:
            h = h - 1.0
        return self.fc3(h)


def test_export_front_end_for_fx_untraceable_model():
    model, x = seeded(ShapeBranch), randn(3, 8)
    with pytest.raises(fxgrow.TraceError):
        fxgrow.trace(model)
    analysis = fxgrow.analyze(model, x)
    assert fxgrow.growth.frontend(analysis.gm) == "export"
    assert {g.name for g in analysis.widenable} == {"fc1", "fc2"}
    student = widen_exact(model, x, factor=2)
    assert isinstance(student, torch.fx.GraphModule)
    assert params(student, "fc1.weight") == (32, 8)
    assert params(student, "fc2.weight") == (32, 32)
    assert params(student, "fc3.weight") == (4, 32)
    assert all(p.requires_grad for p in student.parameters())
    train_step(student, x)


@pytest.mark.slow
def test_export_front_end_llama_names_and_training(llama_model):
    model, ids = llama_model, token_ids()
    with pytest.raises(fxgrow.TraceError):
        fxgrow.trace(model)
    analysis = fxgrow.analyze(model, ids)
    assert fxgrow.growth.frontend(analysis.gm) == "export"
    names = {g.name for g in analysis.groups}
    assert {
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.0.mlp.gate_proj",
        "model.layers.0.self_attn.v_proj",
        "lm_head",
    } <= names
    # widen one group by its module path
    student = widen_exact(model, ids, widths={"model.layers.0.mlp.gate_proj": 96}, as_graph=True)
    assert isinstance(student, torch.fx.GraphModule)
    assert params(student, "model.layers.0.mlp.up_proj.weight") == (96, H)
    assert params(student, "model.layers.0.mlp.down_proj.weight") == (H, 96)
    assert params(student, "model.layers.1.mlp.up_proj.weight") == (MLP, H)
    assert all(p.requires_grad for p in student.parameters())
    train_step(student, ids)
