"""Hugging Face in, Hugging Face out (fxgrow.hf): folder -> CLI -> folder -> from_pretrained.

Every family is built from a tiny config with random weights, saved as a folder with a
tokenizer made offline (the ``tokenizers`` package) and a chat template, grown by the CLI, and
loaded back with ``AutoModel*.from_pretrained``: the logits equal the teacher's on fresh inputs
with a padding mask (<= 1e-5, float32), greedy ``generate(use_cache=True)`` gives the same
tokens, the config has the targeted fields and the tokenizer loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as T

import fxgrow
from fxgrow.cli import main as cli
from fxgrow.hf import fresh_inputs

TOL = 1e-5
VOCAB = 100
SMALL = dict(vocab_size=VOCAB, num_hidden_layers=2)
LLAMA_LIKE = dict(
    SMALL, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2
)

FAMILIES = {
    "llama": (T.LlamaConfig, dict(LLAMA_LIKE)),
    "qwen2_tied": (T.Qwen2Config, dict(LLAMA_LIKE, tie_word_embeddings=True)),
    "mistral": (T.MistralConfig, dict(LLAMA_LIKE, sliding_window=4)),
    "gemma2": (T.Gemma2Config, dict(LLAMA_LIKE, head_dim=16)),
    "gemma3": (T.Gemma3TextConfig, dict(LLAMA_LIKE, head_dim=16, sliding_window=4)),
    "phi3": (T.Phi3Config, dict(LLAMA_LIKE, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "gpt2": (T.GPT2Config, dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64)),
    "gpt_neox": (
        T.GPTNeoXConfig,
        dict(SMALL, hidden_size=64, intermediate_size=128, num_attention_heads=4),
    ),
    "opt": (
        T.OPTConfig,
        dict(
            SMALL,
            hidden_size=64,
            ffn_dim=128,
            num_attention_heads=4,
            word_embed_proj_dim=64,
            max_position_embeddings=64,
        ),
    ),
    "bert": (
        T.BertConfig,
        dict(
            SMALL,
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            max_position_embeddings=64,
        ),
    ),
    "t5": (
        T.T5Config,
        dict(
            vocab_size=VOCAB,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=2,
        ),
    ),
}
# x2 targets: (field, value) pairs per family
TARGETS = {
    "gpt2": {"n_embd": 128, "n_head": 8},
    "bert": {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 8},
    "gpt_neox": {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 8},
    "opt": {
        "hidden_size": 128,
        "ffn_dim": 256,
        "num_attention_heads": 8,
        "word_embed_proj_dim": 128,
    },
    # encoder and decoder deepened too (transformers' T5 cannot generate with a cache when
    # num_decoder_layers > num_layers: its cache is sized by num_layers)
    "t5": {"d_model": 128, "d_ff": 256, "num_heads": 8, "num_layers": 4, "num_decoder_layers": 3},
}
DEFAULT_TARGET = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
}


def tokenizer() -> T.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({f"w{i}": i for i in range(4, VOCAB)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = T.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return fast


def make_folder(tmp: Path, family: str) -> tuple[Path, torch.nn.Module]:
    config_cls, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    config = config_cls(**kwargs)
    model = (
        T.BertForMaskedLM(config)
        if family == "bert"
        else T.T5ForConditionalGeneration(config)
        if family == "t5"
        else T.AutoModelForCausalLM.from_config(config)
    ).eval()
    src = tmp / f"{family}-src"
    model.save_pretrained(src)
    tokenizer().save_pretrained(src)
    return src, model


def load(path: Path, family: str):
    cls = (
        T.BertForMaskedLM
        if family == "bert"
        else T.AutoModelForSeq2SeqLM
        if family == "t5"
        else T.AutoModelForCausalLM
    )
    return cls.from_pretrained(path).eval()


def logits(model, **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(**kw).logits.double()


def assert_same_function(teacher, student, family: str) -> None:
    for batch, length in ((1, 6), (3, 13)):
        kw = fresh_inputs(teacher.config, batch, length, seed=batch)
        t, s = logits(teacher, **kw), logits(student, **kw)
        keep = kw["attention_mask"].bool()  # the encoder's mask for T5: decoder all kept
        if t.shape[:2] != keep.shape:
            keep = torch.ones(t.shape[:2], dtype=torch.bool)
        err = float((t[keep] - s[keep]).abs().max() / t[keep].abs().max())
        assert err <= TOL, (family, batch, length, err)
    if family != "bert":
        ids = fresh_inputs(teacher.config, 2, 5, seed=9)
        ids.pop("decoder_input_ids", None)  # an encoder-decoder starts its decoder itself
        kw = dict(max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        with torch.no_grad():
            a = teacher.generate(**ids, **kw)
            b = student.generate(**ids, **kw)
        assert torch.equal(a, b), family


@pytest.mark.parametrize("family", list(FAMILIES))
def test_folder_cli_folder_exact(tmp_path, family):
    src, teacher = make_folder(tmp_path, family)
    target = TARGETS.get(family, DEFAULT_TARGET)
    out = tmp_path / f"{family}-out"
    args = ["grow", str(src), "-o", str(out), "-q", "--max-shard-size", "200KB"]
    for k, v in target.items():
        args += ["--to-config", f"{k}={v}"]
    assert cli(args) == 0
    assert (out / "config.json").is_file() and (out / "README.md").is_file()
    assert (out / "model.safetensors.index.json").is_file()  # sharded at 200KB
    assert not list(tmp_path.glob(".*partial"))
    student = load(out, family)
    for k, v in target.items():
        assert getattr(student.config, k) == v, (k, getattr(student.config, k))
    assert_same_function(teacher, student, family)
    tok = T.AutoTokenizer.from_pretrained(out)
    assert tok.convert_tokens_to_ids("w7") == 7
    assert tok.chat_template == tokenizer().chat_template
    card = (out / "README.md").read_text()
    assert "preservation error" in card and str(src) in card
    key, value = next(iter(target.items()))
    old = json.loads((src / "config.json").read_text()).get(key)
    assert f"| `{key}` | `{json.dumps(old)}` | `{json.dumps(value)}` |" in card


def test_t5_cli_width_globs_blocks_and_non_whole_d_model(tmp_path):
    """T5 through the CLI by --width globs and --blocks (encoder only), then d_model x1.5
    (its RMSNorm stream zero-padded; the tied head's d_model ** -0.5 compensated)."""
    src, teacher = make_folder(tmp_path, "t5")
    out = tmp_path / "globs"
    assert (
        cli(
            [
                "grow",
                str(src),
                "-o",
                str(out),
                "-q",
                "--blocks",
                "encoder.block=3",
                "--width",
                "encoder.block.*.layer.1.DenseReluDense.wi=256",
                "--width",
                "decoder.block.*.layer.2.DenseReluDense.wi=256",
            ]
        )
        == 0
    )
    student = load(out, "t5")
    assert (student.config.num_layers, student.config.num_decoder_layers, student.config.d_ff) == (
        3,
        2,
        256,
    )
    assert_same_function(teacher, student, "t5")
    out = tmp_path / "x1.5"
    assert (
        cli(
            [
                "grow",
                str(src),
                "-o",
                str(out),
                "-q",
                "--to-config",
                "d_model=96",
                "--to-config",
                "num_heads=6",
            ]
        )
        == 0
    )
    student = load(out, "t5")
    assert (student.config.d_model, student.config.num_heads) == (96, 6)
    assert student.config.layer_norm_epsilon == pytest.approx(
        teacher.config.layer_norm_epsilon * 64 / 96
    )
    assert student.lm_head.weight is student.shared.weight
    assert_same_function(teacher, student, "t5")


def test_tied_model_stays_tied_and_exact(tmp_path):
    src, teacher = make_folder(tmp_path, "qwen2_tied")
    student = fxgrow.widen(teacher, fresh_inputs(teacher.config, 2, 8)["input_ids"], factor=2)
    assert type(student) is T.Qwen2ForCausalLM
    assert student.lm_head.weight is student.model.embed_tokens.weight
    assert not [n for n, _ in student.named_buffers() if "fxgrow" in n]
    out = fxgrow.hf.save_folder(student, tmp_path / "tied-out", source=src)
    again = load(out, "qwen2_tied")
    assert again.config.tie_word_embeddings
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()
    assert_same_function(teacher, again, "qwen2")


def llama(**kw) -> T.LlamaForCausalLM:
    torch.manual_seed(0)
    return T.LlamaForCausalLM(T.LlamaConfig(**dict(LLAMA_LIKE, **kw))).eval()


def test_student_class_depth_target_and_refusals():
    teacher = llama()  # default use_cache=True, untouched by the user
    assert teacher.config.use_cache
    ids = fresh_inputs(teacher.config, 2, 8)["input_ids"]
    graph = fxgrow.widen(teacher, ids, factor=2, as_graph=True)
    assert isinstance(graph, torch.fx.GraphModule)
    deeper = fxgrow.grow(teacher, ids, to_config={"num_hidden_layers": 4, "intermediate_size": 256})
    assert type(deeper) is T.LlamaForCausalLM and deeper.config.num_hidden_layers == 4
    assert (
        deeper.config.intermediate_size == 256 and fxgrow.growth_record(deeper).fresh_error <= TOL
    )
    assert [layer.self_attn.layer_idx for layer in deeper.model.layers] == [0, 1, 2, 3]
    assert_same_function(teacher, deeper, "llama")
    with pytest.raises(
        fxgrow.ConfigError,
        match=r"k_proj.weight axis 0 by 1, other axes by "
        r"2\): fxgrow grows whole heads",
    ):
        fxgrow.grow(teacher, ids, to_config={"num_attention_heads": 8})
    with pytest.raises(
        fxgrow.ConfigError,
        match=r"changes head_dim \(16 -> 32\).*grow "
        r"num_attention_heads",
    ):
        fxgrow.grow(teacher, ids, to_config={"head_dim": 32})
    with pytest.raises(
        fxgrow.ConfigError,
        match=r"mlp.gate_proj.weight is \[256, 64\], the "
        r"config gives \[128, 64\].*widen every layer",
    ):
        fxgrow.widen(teacher, ids, widths={"model.layers.0.mlp.gate_proj": 256})
    with pytest.raises(fxgrow.ConfigError, match="has no field 'hidden_sise'"):
        fxgrow.grow(teacher, ids, to_config={"hidden_sise": 128})


def test_zero_padded_stream_and_appended_layers_together():
    """hidden 64 -> 96 (zero padding, no whole multiple) and 2 -> 4 layers in one target: the
    appended blocks copy the padded ones (padding comes before depth)."""
    teacher = llama()
    ids = fresh_inputs(teacher.config, 2, 8)["input_ids"]
    grown = fxgrow.grow(
        teacher,
        ids,
        to_config={
            "hidden_size": 96,
            "num_attention_heads": 6,
            "num_key_value_heads": 3,
            "num_hidden_layers": 4,
        },
    )
    assert type(grown) is T.LlamaForCausalLM
    assert (grown.config.hidden_size, grown.config.num_hidden_layers) == (96, 4)
    assert tuple(grown.model.layers[3].input_layernorm.weight.shape) == (96,)
    assert fxgrow.growth_record(grown).fresh_error <= TOL
    assert_same_function(teacher, grown, "llama")


def test_cli_stream_llama_pro_and_mlp_width(tmp_path):
    """``--stream``: the folder grown tensor by tensor (fxgrow.stream), LLaMA-Pro copies
    interleaved and the MLP widened, verified layer by layer; loads and equals the teacher."""
    src, teacher = make_folder(tmp_path, "llama")
    out = tmp_path / "out"
    assert (
        cli(
            [
                "grow",
                str(src),
                "-o",
                str(out),
                "-q",
                "--stream",
                "--blocks",
                "model.layers=3",
                "--width",
                "model.layers.*.mlp.up_proj=192",
            ]
        )
        == 0
    )
    student = load(out, "llama")
    assert student.config.num_hidden_layers == 3 and student.config.intermediate_size == 192
    assert_same_function(teacher, student, "llama")
    assert (
        cli(
            [
                "grow",
                str(src),
                "-o",
                str(tmp_path / "o2"),
                "-q",
                "--stream",
                "--to-config",
                "hidden_size=96",
            ]
        )
        == 2
    )  # not streamed: a clear refusal
    assert not (tmp_path / "o2").exists()


def test_cli_width_globs_and_blocks(tmp_path):
    src, teacher = make_folder(tmp_path, "llama")
    out = tmp_path / "out"
    assert (
        cli(
            [
                "grow",
                str(src),
                "-o",
                str(out),
                "-q",
                "--blocks",
                "model.layers=3",
                "--width",
                "model.layers.*.mlp.up_proj=192",
            ]
        )
        == 0
    )
    student = load(out, "llama")
    assert student.config.num_hidden_layers == 3 and student.config.intermediate_size == 192
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 192
    assert_same_function(teacher, student, "llama")
    assert cli(["grow", str(src), "-o", str(out), "-q", "--factor", "2"]) == 2  # exists


def test_cli_llama_hidden_x1_5_zero_padded(tmp_path):
    """64 -> 96 is no whole multiple: the RMSNorm stream is zero-padded, the norm weights
    scaled by sqrt(64/96) and rms_norm_eps by 64/96."""
    src, teacher = make_folder(tmp_path, "llama")
    out = tmp_path / "out"
    assert (
        cli(
            [
                "grow",
                str(src),
                "-o",
                str(out),
                "-q",
                "--to-config",
                "hidden_size=96",
                "--to-config",
                "intermediate_size=192",
            ]
        )
        == 0
    )
    student = load(out, "llama")
    assert (student.config.hidden_size, student.config.intermediate_size) == (96, 192)
    assert student.config.rms_norm_eps == pytest.approx(teacher.config.rms_norm_eps * 64 / 96)
    assert_same_function(teacher, student, "llama")
    assert float(student.model.embed_tokens.weight[:, 64:].abs().max()) == 0.0


@pytest.mark.parametrize(
    "family,target",
    [
        ("qwen2_tied", {"hidden_size": 96, "num_attention_heads": 6, "num_key_value_heads": 3}),
        ("gemma2", {"hidden_size": 96}),  # (1 + w) norms, embeddings scaled by sqrt(hidden_size)
    ],
)
def test_hidden_x1_5_tied_and_gemma_norms(tmp_path, family, target):
    src, teacher = make_folder(tmp_path, family)
    ids = fresh_inputs(teacher.config, 2, 8)["input_ids"]
    student = fxgrow.grow(teacher, ids, to_config=target)
    for k, v in target.items():
        assert getattr(student.config, k) == v
    assert student.lm_head.weight is student.model.embed_tokens.weight  # both are tied
    assert_same_function(teacher, student, family)


def test_gpt2_layernorm_stream_x1_5_average_expansion(tmp_path):
    """LEMON's average expansion: the new stream channels hold the mean of the old ones."""
    _, teacher = make_folder(tmp_path, "gpt2")
    ids = fresh_inputs(teacher.config, 2, 8)["input_ids"]
    student = fxgrow.grow(teacher, ids, to_config={"n_embd": 96, "n_head": 6})
    assert (student.config.n_embd, student.config.n_head) == (96, 6)
    assert student.config.layer_norm_epsilon == pytest.approx(
        teacher.config.layer_norm_epsilon * 64 / 96
    )
    wte = student.transformer.wte.weight
    assert torch.allclose(wte[:, 64:], wte[:, :64].mean(dim=1, keepdim=True).expand(-1, 32))
    assert student.lm_head.weight is wte
    assert_same_function(teacher, student, "gpt2")


@pytest.mark.parametrize(
    "family,target",
    [
        ("gpt_neox", {"hidden_size": 96, "num_attention_heads": 6}),  # parallel residual
        ("opt", {"hidden_size": 96, "num_attention_heads": 6, "word_embed_proj_dim": 96}),
    ],
)
def test_layernorm_x1_5_neox_parallel_residual_and_opt_without_eps_field(tmp_path, family, target):
    """GPT-NeoX: both norms of a parallel block are pre-norms, so the average expansion is
    exact with layer_norm_eps x 64/96 (and 6 heads of 16: its partial rotary size alone
    would also fit 4 heads of 13).  OPT's LayerNorms take torch's default eps, which no
    config field holds: the stream is scaled by sqrt(96/64) instead, eps unchanged."""
    src, teacher = make_folder(tmp_path, family)
    out = tmp_path / "out"
    args = ["grow", str(src), "-o", str(out), "-q"]
    for k, v in target.items():
        args += ["--to-config", f"{k}={v}"]
    assert cli(args) == 0
    student = load(out, family)
    for k, v in target.items():
        assert getattr(student.config, k) == v
    if family == "gpt_neox":
        assert student.config.layer_norm_eps == pytest.approx(
            teacher.config.layer_norm_eps * 64 / 96
        )
    else:
        assert (
            student.model.decoder.final_layer_norm.eps == teacher.model.decoder.final_layer_norm.eps
        )
        emb, old = student.model.decoder.embed_tokens.weight, teacher.model.decoder.embed_tokens
        assert torch.allclose(emb[:, :64], old.weight * (96 / 64) ** 0.5, atol=1e-6)
        assert student.lm_head.weight is emb
    assert_same_function(teacher, student, family)


@pytest.mark.parametrize(
    "family,target,message",
    [
        (
            "gemma3",
            {"hidden_size": 96},
            r"q_norm \(Gemma3RMSNorm\) uses rms_norm_eps too but does not normalise the stream.*"
            r"whole multiple of 64",
        ),
        (
            "bert",
            {"hidden_size": 96, "num_attention_heads": 6},
            r"not exact for BertForMaskedLM.*post-norm model.*whole multiple",
        ),
    ],
)
def test_non_whole_stream_refused(tmp_path, family, target, message):
    _, teacher = make_folder(tmp_path, family)
    ids = fresh_inputs(teacher.config, 2, 8)["input_ids"]
    with pytest.raises(fxgrow.ConfigError, match=message):
        fxgrow.grow(teacher, ids, to_config=target)


def test_untie_on_request_and_layer_types_follow_depth(tmp_path):
    src, teacher = make_folder(tmp_path, "qwen2_tied")
    ids = fresh_inputs(teacher.config, 2, 8)["input_ids"]
    untied = fxgrow.grow(teacher, ids, width=2, untie=True)
    assert untied.config.tie_word_embeddings is False
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    assert fxgrow.growth_record(untied).config_fields["tie_word_embeddings"] is False
    out = fxgrow.hf.save_folder(untied, tmp_path / "untied", source=src)
    assert_same_function(teacher, load(out, "qwen2"), "qwen2")
    deeper = fxgrow.grow(teacher, ids, to_config={"num_hidden_layers": 3})
    assert deeper.config.num_hidden_layers == 3
    assert len(deeper.config.layer_types) == 3
    assert deeper.lm_head.weight is deeper.model.embed_tokens.weight
    assert_same_function(teacher, deeper, "qwen2")


def test_interrupted_save_leaves_no_folder(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(T.LlamaConfig(**LLAMA_LIKE)).eval()
    real = model.save_pretrained

    def interrupted(path, **kw):
        real(path, **kw)  # everything written, then the run is stopped before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fxgrow.hf.save_folder(model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(fxgrow.InputError, match="save_folder takes a transformers model"):
        fxgrow.hf.save_folder(torch.nn.Linear(2, 2), tmp_path / "x")


def test_bfloat16_folder_stays_bfloat16(tmp_path):
    from safetensors import safe_open

    src, teacher = make_folder(tmp_path, "llama")
    teacher = teacher.to(torch.bfloat16)
    teacher.save_pretrained(src)
    out = tmp_path / "out"
    assert cli(["grow", str(src), "-o", str(out), "-q", "--factor", "2"]) == 0
    files = list(out.glob("*.safetensors"))
    with safe_open(str(files[0]), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    student = T.AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert student.dtype == torch.bfloat16 and student.config.hidden_size == 128
    kw = fresh_inputs(teacher.config, 2, 7)
    keep = kw["attention_mask"].bool()
    t, s = logits(teacher, **kw)[keep], logits(student, **kw)[keep]
    assert float((t - s).abs().max() / t.abs().max()) <= 2e-2


def test_vit_x1_5_heads_of_the_kept_size_with_explicit_head_dim(tmp_path):
    """ViT x1.5 grows the heads (4 -> 6 of 8) while the LayerNorm stream doubles (32 -> 64):
    64 is no multiple of 6, so the config says head_dim=8 explicitly (ViT reads it); the
    class student equals the teacher on fresh images, also after save/from_pretrained."""
    torch.manual_seed(0)
    m = T.ViTForImageClassification(
        T.ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            num_labels=10,
        )
    ).eval()
    student = fxgrow.widen(m, torch.randn(2, 3, 32, 32), factor=1.5)
    assert type(student) is T.ViTForImageClassification
    assert fxgrow.growth_record(student).config_fields == {
        "head_dim": 8,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_attention_heads": 6,
    }
    student.save_pretrained(tmp_path / "vit")
    again = T.ViTForImageClassification.from_pretrained(tmp_path / "vit").eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t = m(pixel_values=x).logits
        for s in (student, again):
            assert float((t - s(pixel_values=x).logits).abs().max() / t.abs().max()) <= TOL
