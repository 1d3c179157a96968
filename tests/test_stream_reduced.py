"""A depth growth planned on a two-block capture is the plan of the full model's analysis,
tensor for tensor; models whose blocks may differ are analysed in full."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fxgrow
from fxgrow.stream import make_stream_plan, meta_model, plan_checkpoint
from fxgrow.stream.hf import example_ids
from fxgrow.stream.reduced import reduced_depth_plan


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


def test_plan_checkpoint_uses_two_blocks_for_depth_only(tmp_path):
    config = _config()
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "t")
    depth = plan_checkpoint(tmp_path / "t", blocks=6)
    assert depth.teacher_graph is None and depth.plan.layers == (0, 1, 2, 3, 4, 4)
    wide = plan_checkpoint(tmp_path / "t", blocks=6, widths={"model.layers.*.mlp.up_proj": 64})
    assert wide.teacher_graph is not None  # widths: the full analysis
