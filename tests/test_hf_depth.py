"""Depth growth of Hugging Face decoder families, on tiny random configs (no downloads).

1. The graph student: ``deepen(kind="block")`` after several blocks in one call (LLaMA-Pro),
   exact for Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma2/3 (sandwich norms), OLMo2, Phi3,
   GPT-2, GPT-NeoX (parallel residual), OPT (pre-norm), T5 (encoder and decoder); copies
   appended at the end of a stack with ``grow(blocks=...)`` too.
2. The same student in HF numbering: ``deeper_state_dict`` gives the state dict and config of
   the deeper HF model; it loads strictly into the teacher's class built from the new config,
   equals the teacher on fresh inputs with padding (batch 3, length 7) and generates the same
   tokens greedily with the KV cache.  The graph's copies, renumbered, are exactly those tensors.
3. Refusals: BERT (post-norm), OPT with ``do_layer_norm_before=False``, unknown families.
"""

from __future__ import annotations

import pytest
import torch
import transformers as T
from helpers import teacher_unchanged

import fxgrow
from fxgrow.rewrite.hf_depth import (
    ZERO_BY_MODEL_TYPE,
    deeper_config,
    deeper_state_dict,
    graph_insertions,
    graph_zero_targets,
    hf_numbering,
    layer_stacks,
)

TOL = 1e-5
V = 100
SMALL = dict(vocab_size=V, use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
LLAMA_LIKE = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, **SMALL
)


def _config(family: str, layers: int = 2):
    if family == "llama":
        return T.LlamaForCausalLM, T.LlamaConfig(num_hidden_layers=layers, **LLAMA_LIKE)
    if family == "mistral":
        return T.MistralForCausalLM, T.MistralConfig(
            num_hidden_layers=layers, sliding_window=4, **LLAMA_LIKE
        )
    if family == "qwen2":
        return T.Qwen2ForCausalLM, T.Qwen2Config(
            num_hidden_layers=layers,
            sliding_window=4,
            use_sliding_window=True,
            max_window_layers=1,
            tie_word_embeddings=True,
            **LLAMA_LIKE,
        )
    if family == "gemma2":
        return T.Gemma2ForCausalLM, T.Gemma2Config(
            num_hidden_layers=layers, head_dim=8, sliding_window=4, **LLAMA_LIKE
        )
    if family == "gemma3":
        return T.Gemma3ForCausalLM, T.Gemma3TextConfig(
            num_hidden_layers=layers,
            head_dim=8,
            sliding_window=4,
            sliding_window_pattern=2,
            **LLAMA_LIKE,
        )
    if family == "gemma":
        return T.GemmaForCausalLM, T.GemmaConfig(num_hidden_layers=layers, head_dim=8, **LLAMA_LIKE)
    if family == "qwen3":
        return T.Qwen3ForCausalLM, T.Qwen3Config(num_hidden_layers=layers, head_dim=8, **LLAMA_LIKE)
    if family == "olmo2":
        return T.Olmo2ForCausalLM, T.Olmo2Config(num_hidden_layers=layers, **LLAMA_LIKE)
    if family == "phi3":
        return T.Phi3ForCausalLM, T.Phi3Config(num_hidden_layers=layers, **LLAMA_LIKE)
    if family == "gpt2":
        return T.GPT2LMHeadModel, T.GPT2Config(
            n_embd=32, n_inner=64, n_layer=layers, n_head=4, n_positions=32, **SMALL
        )
    if family == "gpt_neox":
        return T.GPTNeoXForCausalLM, T.GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            **SMALL,
        )
    if family == "opt":
        return T.OPTForCausalLM, T.OPTConfig(
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            word_embed_proj_dim=32,
            max_position_embeddings=32,
            **SMALL,
        )
    if family == "t5":
        return T.T5ForConditionalGeneration, T.T5Config(
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_layers=layers,
            num_heads=4,
            decoder_start_token_id=0,
            **SMALL,
        )
    raise AssertionError(family)


def build(family: str, layers: int = 2):
    cls, cfg = _config(family, layers)
    torch.manual_seed(0)
    model = cls(cfg).eval()
    with torch.no_grad():  # no layer may be a no-op already: random norms and biases too
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def example(family: str):
    ids = torch.randint(3, V, (2, 8), generator=torch.Generator().manual_seed(1))
    if family == "t5":
        return ids, torch.ones_like(ids), ids.flip(1)
    return ids


def stack(family: str) -> str:
    return {
        "gpt2": "transformer.h",
        "gpt_neox": "gpt_neox.layers",
        "opt": "model.decoder.layers",
        "t5": "encoder.block",
    }.get(family, "model.layers")


def assert_same_function(teacher, student, family: str) -> None:
    """Fresh inputs (batch 3, length 7, left padding in row 0): logits within TOL, greedy
    generation with the KV cache identical."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, V, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    kw = dict(decoder_input_ids=torch.randint(3, V, (3, 5), generator=g)) if family == "t5" else {}
    with torch.no_grad():
        a = teacher(input_ids=ids, attention_mask=mask, **kw).logits
        b = student(input_ids=ids, attention_mask=mask, **kw).logits
        assert a.shape == b.shape
        assert a.abs().max() > 0
        err = ((a - b).abs().max() / a.abs().max()).item()
        assert err <= TOL, err
        gen = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, use_cache=True)
        ga, gb = teacher.generate(ids, **gen), student.generate(ids, **gen)
    assert torch.equal(ga, gb)


def deeper_hf_model(teacher, insert_after):
    sd, updates = deeper_state_dict(teacher.state_dict(), teacher.config, insert_after)
    config = deeper_config(teacher.config, updates)
    config.use_cache = True
    student = type(teacher)(config).eval()
    student.load_state_dict(sd, strict=True)
    return student, sd, updates


FAMILIES = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "olmo2",
    "phi3",
    "gpt2",
    "gpt_neox",
    "opt",
    "t5",
]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_copy_after_every_block_graph_and_hf(family):
    """One zero-output copy after every block in one call: the graph student is exact, its
    zeroed tensors are the table's, and renumbered it is the deeper HF model's state dict,
    which loads strictly and equals the teacher, generation included."""
    teacher, x = build(family), example(family)
    stacks = [stack(family)] + (["decoder.block"] if family == "t5" else [])
    after = [f"{s}.{i}" for s in stacks for i in range(2)]
    with teacher_unchanged(teacher):
        graph = fxgrow.deepen(teacher, x, after=after, kind="block", verify=False, as_graph=True)
        err = fxgrow.compare(teacher, graph, x)
    assert err.max_rel <= TOL, err
    for s in stacks:
        assert sorted(n for n, _ in graph.get_submodule(s).named_children()) == [
            "0",
            "0_deepen0",
            "1",
            "1_deepen0",
        ]

    zeroed = graph_zero_targets(teacher, x, f"{stacks[-1]}.1")
    names = ZERO_BY_MODEL_TYPE[teacher.config.model_type]
    assert zeroed and all(any(t.rpartition(".")[0].endswith(n) for n in names) for t in zeroed)

    student, sd, updates = deeper_hf_model(teacher, [0, 1])
    field = layer_stacks(teacher.state_dict(), teacher.config)[stacks[0]][0]
    assert updates[field] == 4
    counts = dict.fromkeys(stacks, 2)
    assert graph_insertions(graph.state_dict(), counts) == dict.fromkeys(stacks, [0, 1])
    renumbered = hf_numbering(graph.state_dict(), counts)
    assert renumbered.keys() == sd.keys()
    assert all(torch.equal(renumbered[k], sd[k]) for k in sd)
    assert_same_function(teacher, student, family)


@pytest.mark.slow
def test_llama_pro_every_second_block_and_append():
    """LLaMA-Pro on a 4-layer Llama: copies after layers 1 and 3 in one call (6 layers), and
    two copies appended at the end with grow (6 layers), graph and HF."""
    teacher, x = build("llama", 4), example("llama")
    graph = fxgrow.deepen(
        teacher, x, after=["model.layers.1", "model.layers.3"], kind="block", as_graph=True
    )
    student, sd, updates = deeper_hf_model(teacher, [1, 3])
    assert updates == {"num_hidden_layers": 6}
    assert graph_insertions(graph.state_dict(), {"model.layers": 4}) == {"model.layers": [1, 3]}
    renumbered = hf_numbering(graph.state_dict(), {"model.layers": 4})
    assert renumbered.keys() == sd.keys()
    assert all(torch.equal(renumbered[k], sd[k]) for k in sd)
    assert torch.equal(
        sd["model.layers.2.self_attn.o_proj.weight"],
        torch.zeros_like(sd["model.layers.2.self_attn.o_proj.weight"]),
    )
    assert torch.equal(
        sd["model.layers.2.self_attn.q_proj.weight"],
        teacher.state_dict()["model.layers.1.self_attn.q_proj.weight"],
    )
    assert torch.equal(
        sd["model.layers.3.mlp.down_proj.weight"],
        teacher.state_dict()["model.layers.2.mlp.down_proj.weight"],
    )
    assert_same_function(teacher, student, "llama")
    # without as_graph=True: the same deeper model, as the teacher's class, in one call
    direct = fxgrow.deepen(teacher, x, after=["model.layers.1", "model.layers.3"], kind="block")
    assert type(direct) is type(teacher) and direct.config.num_hidden_layers == 6
    assert direct.state_dict().keys() == sd.keys()
    assert all(torch.equal(direct.state_dict()[k], sd[k]) for k in sd)
    assert_same_function(teacher, direct, "llama")

    with teacher_unchanged(teacher):
        grown = fxgrow.grow(teacher, x, blocks={"model.layers": 6}, as_graph=True)
    appended, sd2, _ = deeper_hf_model(teacher, [3, 3])
    assert graph_insertions(grown.state_dict(), {"model.layers": 4}) == {"model.layers": [3, 3]}
    renumbered = hf_numbering(grown.state_dict(), {"model.layers": 4})
    assert renumbered.keys() == sd2.keys()
    assert all(torch.equal(renumbered[k], sd2[k]) for k in sd2)
    assert_same_function(teacher, appended, "llama")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gemma3", "gpt_neox", "opt", "t5"])
def test_append_blocks_graph_and_hf(family):
    """grow(blocks=...) appends copies of the last block; in HF numbering that is
    ``insert_after=[n - 1] * k``, for T5 in both stacks."""
    teacher, x = build(family), example(family)
    stacks = [stack(family)] + (["decoder.block"] if family == "t5" else [])
    with teacher_unchanged(teacher):
        graph = fxgrow.grow(
            teacher, x, blocks=dict.fromkeys(stacks, 4), verify=False, as_graph=True
        )
        err = fxgrow.compare(teacher, graph, x)
    assert err.max_rel <= TOL, err
    student, sd, updates = deeper_hf_model(teacher, [1, 1])
    found = layer_stacks(teacher.state_dict(), teacher.config)
    assert all(updates[found[s][0]] == 4 for s in stacks)
    if family == "gemma3":  # the appended copies are full-attention layers, like layer 1
        assert teacher.config.layer_types == ["sliding_attention", "full_attention"]
        assert updates["layer_types"] == ["sliding_attention"] + ["full_attention"] * 3
    counts = dict.fromkeys(stacks, 2)
    assert graph_insertions(graph.state_dict(), counts) == dict.fromkeys(stacks, [1, 1])
    renumbered = hf_numbering(graph.state_dict(), counts)
    assert renumbered.keys() == sd.keys()
    assert all(torch.equal(renumbered[k], sd[k]) for k in sd)
    assert_same_function(teacher, student, family)


@pytest.mark.slow
def test_gemma2_layer_types_follow_the_copies():
    """Gemma2 alternates sliding and full attention; the copies take their layer's type.  A
    config that recomputed the pattern from the new layer count instead would make layer 2
    (the teacher's full-attention layer 1) slide, which changes the function."""
    teacher = build("gemma2")
    student, sd, updates = deeper_hf_model(teacher, [0, 1])
    assert teacher.config.layer_types == ["sliding_attention", "full_attention"]
    assert updates["layer_types"] == [
        "sliding_attention",
        "sliding_attention",
        "full_attention",
        "full_attention",
    ]
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1, 2, 3]
    assert_same_function(teacher, student, "gemma2")
    wrong = deeper_config(teacher.config, {"num_hidden_layers": 4, "layer_types": None})
    assert wrong.layer_types[2] == "sliding_attention"
    bad = type(teacher)(wrong).eval()
    bad.load_state_dict(sd, strict=True)
    ids = torch.randint(3, V, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (bad(ids).logits - teacher(ids).logits).abs().max() > 1e-3


def test_gpt2_inverse_layer_index_scale_compensated():
    """GPT-2 with scale_attn_by_inverse_layer_idx divides attention logits by (index + 1):
    the query projection of every moved layer is rescaled, so the deeper model stays exact;
    without the rescaling it would not be."""
    teacher = build("gpt2")
    teacher.config.scale_attn_by_inverse_layer_idx = True
    torch.manual_seed(0)
    teacher = type(teacher)(teacher.config).eval()  # rebuilt: the scale is fixed at construction
    student, sd, _ = deeper_hf_model(teacher, [0, 1])
    old = teacher.state_dict()["transformer.h.1.attn.c_attn.weight"]
    assert torch.allclose(sd["transformer.h.2.attn.c_attn.weight"][:, :32], old[:, :32] * 1.5)
    assert torch.equal(sd["transformer.h.2.attn.c_attn.weight"][:, 32:], old[:, 32:])
    assert_same_function(teacher, student, "gpt2")
    with torch.no_grad():
        student.transformer.h[2].attn.c_attn.weight[:, :32] = old[:, :32]
        ids = torch.randint(3, V, (1, 8), generator=torch.Generator().manual_seed(3))
        assert (student(ids).logits - teacher(ids).logits).abs().max() > 1e-4


@pytest.mark.slow
def test_post_norm_refused_everywhere():
    cfg = T.BertConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=V,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    bert = T.BertModel(cfg).eval()
    ids = example("bert")
    with pytest.raises(fxgrow.DeepenError, match="post-norm"):
        fxgrow.deepen(bert, ids, after=["encoder.layer.0", "encoder.layer.1"], kind="block")
    with pytest.raises(fxgrow.DeepenError, match="post-norm"):
        graph_zero_targets(bert, ids, "encoder.layer.0")
    with pytest.raises(fxgrow.DeepenError, match="does not know which tensors of a 'bert'"):
        deeper_state_dict(bert.state_dict(), bert.config, [0])
    cls, cfg = _config("opt")
    cfg.do_layer_norm_before = False  # OPT-350m's layout: LayerNorm after each residual add
    torch.manual_seed(0)
    opt = cls(cfg).eval()
    with pytest.raises(fxgrow.DeepenError, match="post-norm"):
        fxgrow.deepen(opt, example("opt"), after="model.decoder.layers.1", kind="block")


def test_state_dict_refusals():
    teacher = build("opt")
    sd, cfg = teacher.state_dict(), teacher.config
    with pytest.raises(fxgrow.InputError, match=r"layer indices 0\.\.1 of 'model.decoder.layers'"):
        deeper_state_dict(sd, cfg, [2])
    with pytest.raises(fxgrow.InputError, match="no layer stack 'model.layers'"):
        deeper_state_dict(sd, cfg, {"model.layers": [0]})
    post = deeper_config(cfg, {"do_layer_norm_before": False})
    with pytest.raises(fxgrow.DeepenError, match="do_layer_norm_before=False"):
        deeper_state_dict(sd, post, [0])
    with pytest.raises(fxgrow.DeepenError, match="no tensor of model.decoder.layers.0 matches"):
        deeper_state_dict(sd, cfg, [0], zero=["mlp.nothing"])


def test_dtype_kept_and_one_stack_named():
    """bfloat16 tensors stay bfloat16 (no float32 detour); a mapping grows only the stacks it
    names (T5's decoder here), and the config update touches only that stack's count."""
    llama = build("llama").to(torch.bfloat16)
    sd, updates = deeper_state_dict(llama.state_dict(), llama.config, [1])
    assert {t.dtype for t in sd.values()} == {torch.bfloat16}
    assert torch.equal(
        sd["model.layers.2.mlp.up_proj.weight"],
        llama.state_dict()["model.layers.1.mlp.up_proj.weight"],
    )
    assert not sd["model.layers.2.mlp.down_proj.weight"].any()
    t5 = build("t5")
    sd, updates = deeper_state_dict(t5.state_dict(), t5.config, {"decoder.block": [1]})
    assert updates == {"num_decoder_layers": 3}
    student = type(t5)(deeper_config(t5.config, updates)).eval()
    student.load_state_dict(sd, strict=True)
    assert len(student.encoder.block) == 2 and len(student.decoder.block) == 3
    assert "decoder.block.2.layer.0.SelfAttention.relative_attention_bias.weight" not in sd
    one = build("t5", layers=1)  # one layer: nothing to tell that the bias table is layer 0's
    sd, updates = deeper_state_dict(one.state_dict(), one.config, [0])
    type(one)(deeper_config(one.config, updates)).load_state_dict(sd, strict=True)
