"""Streamed growth to a target config (``--stream --to-config``) and of tied hidden sizes:
the streamed checkpoint holds bit for bit the tensors of the in-memory growth, and loads into
a model computing the teacher's function."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fxgrow
from fxgrow.cli import main
from fxgrow.errors import ConfigError, InputError
from fxgrow.stream import Checkpoint, grow_checkpoint


def _llama(folder: Path, *, tie: bool = False, dtype: str = "float32", layers: int = 2) -> Path:
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        dtype=dtype,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    return folder


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    with Checkpoint(folder) as ck:
        return {n: ck.read(n) for n in ck.tensors}


def _same(streamed: Path, memory: Path) -> None:
    a, b = _tensors(streamed), _tensors(memory)
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


def _logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cli_to_config_streamed_equals_in_memory(tmp_path, one_thread, dtype):
    src = _llama(tmp_path / "t", dtype=dtype)
    target = ["--to-config", "intermediate_size=144", "--to-config", "num_hidden_layers=4"]
    assert main(["grow", str(src), "-o", str(tmp_path / "s"), "--stream", *target]) == 0
    assert main(["grow", str(src), "-o", str(tmp_path / "m"), *target]) == 0
    _same(tmp_path / "s", tmp_path / "m")
    cfg = transformers.AutoConfig.from_pretrained(tmp_path / "s")
    assert (cfg.intermediate_size, cfg.num_hidden_layers) == (144, 4)
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(3))
    # x3: shares of 1/3, which bfloat16 rounds (in memory as in the stream)
    tol = 1e-5 if dtype == "float32" else 1e-3
    assert torch.allclose(_logits(tmp_path / "s", ids), _logits(src, ids), atol=tol, rtol=0)


def test_tied_hidden_size_widened_in_a_stream(tmp_path, one_thread):
    """Qwen2-style tied embeddings, hidden size doubled: the tie's compensation is folded into
    the final norm's weight, as in memory; tensors equal, logits equal, weights still tied."""
    src = _llama(tmp_path / "t", tie=True)
    target = {"hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 4}
    r = grow_checkpoint(src, tmp_path / "s", to_config=target, progress=False)
    assert r.check is not None and r.check.max_rel < 1e-6
    norm = next(t for t in r.plan.tensors if t.name == "model.norm.weight")
    assert len(norm.folds) == 1
    teacher = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    memory = fxgrow.grow(teacher, torch.randint(0, 96, (1, 8)), to_config=target)
    memory.save_pretrained(tmp_path / "m")
    _same(tmp_path / "s", tmp_path / "m")
    student = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    assert student.config.tie_word_embeddings and student.config.hidden_size == 64
    assert student.lm_head.weight is student.model.embed_tokens.weight
    ids = torch.randint(0, 96, (2, 5), generator=torch.Generator().manual_seed(4))
    assert torch.allclose(_logits(tmp_path / "s", ids), _logits(src, ids), atol=1e-5, rtol=0)
    wide = grow_checkpoint(src, tmp_path / "f", factor=2, progress=False)  # by factor too
    assert wide.config.hidden_size == 64 and wide.check.max_rel < 1e-6


def test_to_config_refusals(tmp_path, one_thread):
    src = _llama(tmp_path / "t")
    with pytest.raises(InputError, match="to_config sets the widths and blocks itself"):
        grow_checkpoint(src, tmp_path / "a", to_config={"intermediate_size": 96}, blocks=3)
    with pytest.raises(ConfigError, match="changes nothing"):
        grow_checkpoint(src, tmp_path / "b", to_config={"intermediate_size": 48})
    with pytest.raises(ConfigError, match=r"from 32 to 48, not a whole multiple.* \(e\.g\. 64\)"):
        grow_checkpoint(
            src,
            tmp_path / "c",
            to_config={"hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 3},
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
