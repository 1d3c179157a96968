"""A growth planned on a two-block capture (depth, widths inside the blocks) is the plan of
the full model's analysis, tensor for tensor; models whose blocks may differ, and widths that
span the blocks, are analysed in full."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fxgrow
from fxgrow.errors import FxgrowError
from fxgrow.planning.plan import check_plan
from fxgrow.stream import make_stream_plan, meta_model, plan_checkpoint
from fxgrow.stream.hf import example_ids, expand_widths
from fxgrow.stream.plan import balanced
from fxgrow.stream.reduced import reduced_depth_plan, reduced_plan


def _config(tie: bool = False, **kw):
    return transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        architectures=["LlamaForCausalLM"],
        **kw,
    )


def _shapes(model):
    return {n: tuple(t.shape) for n, t in model.state_dict().items() if "rotary" not in n}


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize(
    "placement, blocks", [("interleave", 7), ("append", 6), ("interleave", 11)]
)
def test_two_block_plan_is_the_full_plan(tie, placement, blocks):
    config = _config(tie)
    model = meta_model(config)
    shapes = _shapes(model)
    if tie:
        shapes.pop("lm_head.weight")
    ids = example_ids(config, 8)
    reduced = reduced_depth_plan(config, model, shapes, ids, blocks=blocks, placement=placement)
    analysis = fxgrow.analyze(model, tuple(x.to("meta") for x in ids))
    full = make_stream_plan(analysis, shapes, blocks=blocks, placement=placement)
    assert reduced is not None and reduced == full
    assert len(full.zeroed) == blocks - 5 and any(t.zero for t in full.tensors)


@pytest.mark.parametrize("mixed", [True, False])
def test_layers_that_differ_are_analysed_in_full(mixed):
    config = transformers.Qwen2Config(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        use_sliding_window=mixed,
        sliding_window=4,
        max_window_layers=1,
        architectures=["Qwen2ForCausalLM"],
    )
    # mixed: one full-attention layer, then sliding ones
    assert len(set(config.layer_types)) == (2 if mixed else 1)
    model = meta_model(config)
    ids = example_ids(config, 8)
    reduced = reduced_depth_plan(config, model, _shapes(model), ids, blocks=4)
    assert (reduced is None) == mixed


@pytest.mark.parametrize("change", ["module", "shape"])
def test_a_block_unlike_block_1_is_analysed_in_full(change):
    config = _config()
    model = meta_model(config)
    shapes = _shapes(model)
    ids = example_ids(config, 8)
    assert reduced_plan(config, model, shapes, ids, blocks=7) is not None  # before the change
    mlp = model.model.layers[3].mlp
    if change == "module":  # another activation module in one block
        mlp.act_fn = torch.nn.GELU()
    else:  # a bias in one block's projection (a tensor the two-block model lacks)
        with torch.device("meta"):
            mlp.down_proj = torch.nn.Linear(48, 32, bias=True)
        shapes = _shapes(model)
    assert reduced_plan(config, model, shapes, ids, blocks=7) is None
    assert (
        reduced_plan(config, model, shapes, ids, widths={"model.layers.*.mlp.up_proj": 64}) is None
    )


def _same(a, b):
    """Two stream plans are equal (recipes compared by their index and share tensors)."""
    assert a.widen == b.widen
    assert (a.stage, a.layers, a.zeroed) == (b.stage, b.layers, b.zeroed)
    assert [(t.name, t.source, t.shape, t.zero, t.folds) for t in a.tensors] == [
        (t.name, t.source, t.shape, t.zero, t.folds) for t in b.tensors
    ]
    for x, y in zip(a.tensors, b.tensors, strict=True):
        assert (x.recipe is None) == (y.recipe is None)
        if x.recipe is None:
            continue
        rx, ry = x.recipe, y.recipe
        assert (rx.target, rx.old_shape, rx.new_shape) == (ry.target, ry.old_shape, ry.new_shape)
        assert [s.axis for s in rx.steps] == [s.axis for s in ry.steps]
        for s, t in zip(rx.steps, ry.steps, strict=True):
            assert torch.equal(s.index, t.index)
            assert (s.fraction is None) == (t.fraction is None)
            assert s.fraction is None or torch.equal(s.fraction, t.fraction)


def _full_plan(model, shapes, ids, widths, blocks, seed):
    """``plan_checkpoint``'s full analysis: balanced equal-split maps."""
    analysis = fxgrow.analyze(model, tuple(x.to("meta") for x in ids))
    names = [g.name for g in analysis.groups] + list(analysis.state.modules)
    plan = fxgrow.plan(analysis, widths=expand_widths(widths, names), seed=seed, split="equal")
    wplan = balanced(plan, seed)
    check_plan(analysis, wplan)
    return make_stream_plan(analysis, shapes, widen=wplan, blocks=blocks)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize(
    "widths, blocks",
    [
        ({"model.layers.*.mlp.up_proj": 64}, None),
        ({"model.layers.*.mlp.up_proj": 72}, 7),
        ({"model.layers.*.self_attn.q_proj": 48}, None),
        ({"model.layers.*.mlp.up_proj": 64, "model.layers.*.self_attn.v_proj": 32}, 6),
    ],
)
def test_two_block_width_plan_is_the_full_plan(tie, widths, blocks):
    config = _config(tie)
    model = meta_model(config)
    shapes = _shapes(model)
    if tie:
        shapes.pop("lm_head.weight")
    ids = example_ids(config, 8)
    reduced = reduced_plan(config, model, shapes, ids, blocks=blocks, widths=widths, seed=3)
    full = _full_plan(model, shapes, ids, widths, blocks, seed=3)
    assert reduced is not None
    _same(reduced, full)
    assert len(full.widen.changes) == 5 * len(widths)
    widened = sum(t.recipe is not None for t in full.tensors)
    assert widened and widened % (blocks or 5) == 0  # the same tensors in every block


@pytest.mark.parametrize(
    "widths",
    [
        {"model.embed_tokens": 64},  # the residual stream: every block's tensors
        {"model.layers.*.self_attn.q_proj": 50},  # not whole heads: the full error
        {"model.layers.9.mlp.up_proj": 64},  # no such block
        {"model.layers.1": 64},  # a whole block
        {"model.layers.1.input_layernorm": 64},  # a block's module on the residual stream
        {"model.layers.*.input_layernorm": 64},
    ],
)
def test_widths_that_span_the_blocks_or_fail_are_analysed_in_full(widths):
    config = _config()
    model = meta_model(config)
    ids = example_ids(config, 8)
    assert reduced_plan(config, model, _shapes(model), ids, widths=widths) is None


def test_plan_checkpoint_uses_two_blocks_inside_the_blocks(tmp_path):
    config = _config()
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "t")
    depth = plan_checkpoint(tmp_path / "t", blocks=6)
    assert depth.teacher_graph is None and depth.plan.layers == (0, 1, 2, 3, 4, 4)
    mlp = {"model.layers.*.mlp.up_proj": 64}
    wide = plan_checkpoint(tmp_path / "t", blocks=6, widths=mlp)
    assert wide.teacher_graph is None and wide.new_config.intermediate_size == 64
    assert wide.new_config.num_hidden_layers == 6
    random = plan_checkpoint(tmp_path / "t", widths=mlp, split="random")
    assert random.teacher_graph is not None  # maps drawn per group name: the full analysis
    hidden = plan_checkpoint(tmp_path / "t", widths={"model.embed_tokens": 64})
    assert hidden.teacher_graph is not None and hidden.new_config.hidden_size == 64
    with pytest.raises(FxgrowError, match=r"model\.layers\.0\.self_attn\.q_proj"):
        plan_checkpoint(tmp_path / "t", widths={"model.layers.*.self_attn.q_proj": 50})
