"""The class student of ``widen(hf_model, x, factor=1.5)``: the config solver (fxgrow.hf.config)
finds the GQA config that gives the student's shapes -- the hidden stream doubled (a normalised
stream grows by whole multiples), 4 -> 6 query heads and 2 -> 3 KV heads of the kept size 8,
the MLP x1.5 -- or says why no config of the class holds them (fxgrow.hf.unfit).
"""

from __future__ import annotations

import re

import pytest
import torch
import transformers as T

import fxgrow
from fxgrow.hf import fresh_inputs

TOL = 1e-5
GQA = dict(
    vocab_size=100,
    num_hidden_layers=2,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
)
X1_5 = dict(
    hidden_size=64, intermediate_size=96, num_attention_heads=6, num_key_value_heads=3, head_dim=8
)


def teacher(config_cls, model_cls, **kw):
    torch.manual_seed(0)
    return model_cls(config_cls(**kw)).eval()


def ids(model) -> torch.Tensor:
    return fresh_inputs(model.config, 2, 8)["input_ids"]


def max_rel(a, b) -> float:
    """Largest difference of the logits on fresh padded inputs, relative to the teacher's."""
    kw = fresh_inputs(a.config, 3, 11)
    keep = kw["attention_mask"].bool()
    with torch.no_grad():
        t, s = a(**kw).logits[keep].double(), b(**kw).logits[keep].double()
    return float((t - s).abs().max() / t.abs().max())


def saved_and_loaded(model, path):
    model.save_pretrained(path)
    return type(model).from_pretrained(path).eval()


@pytest.mark.parametrize(
    "config_cls,model_cls",
    [(T.MistralConfig, T.MistralForCausalLM), (T.Qwen2Config, T.Qwen2ForCausalLM)],
)
def test_gqa_x1_5_class_student_saved_and_reloaded(tmp_path, config_cls, model_cls):
    m = teacher(config_cls, model_cls, **GQA)
    student = fxgrow.widen(m, ids(m), factor=1.5)
    assert type(student) is model_cls
    assert {k: getattr(student.config, k) for k in X1_5} == X1_5
    assert max_rel(m, student) <= TOL
    again = saved_and_loaded(student, tmp_path / "student")
    assert {k: getattr(again.config, k) for k in X1_5} == X1_5
    assert max_rel(m, again) <= TOL


def test_llama_x1_5_refused_by_its_config_class_names_why_and_the_nearest(tmp_path):
    """LlamaConfig's validator wants hidden_size a multiple of num_attention_heads even with
    head_dim set, so the x1.5 shapes (64 wide, 6 heads of 8) exist only as the graph; the
    error quotes the validator and names the nearest config Llama holds (the stream zero
    padded to 48), which grow(to_config=...) reaches exactly."""
    m = teacher(T.LlamaConfig, T.LlamaForCausalLM, **GQA)
    x = ids(m)
    nearest = dict(
        hidden_size=48, intermediate_size=96, num_attention_heads=6, num_key_value_heads=3
    )
    message = (
        "no config of LlamaForCausalLM that LlamaConfig accepts gives the student's shapes: "
        "hidden_size=64, intermediate_size=96, num_attention_heads=6, num_key_value_heads=3 "
        "give them all, and LlamaConfig refuses that (The hidden size (64) is not a multiple "
        "of the number of attention heads (6)). Keep the graph (as_graph=True), or grow to a "
        f"config the class holds, e.g. the nearest it holds: grow(to_config={nearest!r})"
    )
    with pytest.raises(fxgrow.ConfigError, match=f"^{re.escape(message)}$"):
        fxgrow.widen(m, x, factor=1.5)
    graph = fxgrow.widen(m, x, factor=1.5, as_graph=True)
    assert fxgrow.growth_record(graph).error.max_rel <= TOL
    assert tuple(graph.get_parameter("model.layers.0.self_attn.q_proj.weight").shape) == (48, 64)
    student = fxgrow.grow(m, x, to_config=nearest)
    assert type(student) is T.LlamaForCausalLM
    assert {k: getattr(student.config, k) for k in nearest} == nearest
    assert student.config.head_dim == 8
    assert max_rel(m, student) <= TOL
    assert max_rel(m, saved_and_loaded(student, tmp_path / "student")) <= TOL


def test_gpt2_x1_5_refused_attention_follows_n_embd():
    """GPT-2 sizes attention by n_embd (no head size field): 6 heads of 8 in a 64 wide stream
    is no GPT2Config, and the error says which axis follows which field."""
    m = teacher(T.GPT2Config, T.GPT2LMHeadModel, n_embd=32, n_layer=2, n_head=4, vocab_size=100)
    x = ids(m)
    message = (
        "no config of GPT2LMHeadModel gives the student's shapes (nearest: n_embd=64, "
        "n_inner=192): transformer.h.0.attn.c_attn.bias is [144], the config gives [192]; "
        "transformer.h.0.attn.c_attn.weight is [64, 144], the config gives [64, 192]; "
        "transformer.h.0.attn.c_proj.weight is [48, 64], the config gives [64, 64]; "
        "transformer.h.1.attn.c_attn.bias is [144], the config gives [192]; and 2 more. "
        "In GPT2LMHeadModel axis 0 of transformer.h.0.attn.c_attn.bias follows only "
        "n_embd (64), which the student's other tensors fix: no field sizes it apart. "
        "Keep the graph (as_graph=True)"
    )
    with pytest.raises(fxgrow.ConfigError, match=f"^{re.escape(message)}$"):
        fxgrow.widen(m, x, factor=1.5)
    graph = fxgrow.widen(m, x, factor=1.5, as_graph=True)
    assert fxgrow.growth_record(graph).error.max_rel <= TOL


def test_one_layer_widened_refused_as_uneven():
    """A config holds one MLP size for every layer: widening layer 0 alone is refused with
    that cause, the teacher's config being the nearest."""
    m = teacher(T.MistralConfig, T.MistralForCausalLM, **GQA)
    message = (
        "no config of MistralForCausalLM gives the student's shapes (nearest: the teacher's "
        "config): model.layers.0.mlp.down_proj.weight is [32, 96], the config gives [32, 64]; "
        "model.layers.0.mlp.gate_proj.weight is [96, 32], the config gives [64, 32]; "
        "model.layers.0.mlp.up_proj.weight is [96, 32], the config gives [64, 32]. A config "
        "holds one size per kind of layer: widen every layer's group alike (e.g. --width "
        "'model.layers.*.mlp.up_proj=N'). Keep the graph (as_graph=True)"
    )
    with pytest.raises(fxgrow.ConfigError, match=f"^{re.escape(message)}$"):
        fxgrow.widen(m, ids(m), widths={"model.layers.0.mlp.up_proj": 96})
