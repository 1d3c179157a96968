"""Streamed growth of checkpoints (fxgrow.stream): bit-identical to the in-memory rewrite, exact
after from_pretrained, bounded memory, a verifier that names a corrupted tensor, and clear
errors for bad checkpoints and interrupted runs."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fxgrow
from fxgrow.errors import PreservationError, UnsupportedModelError
from fxgrow.stream import (
    Checkpoint,
    CheckpointError,
    GrowthInterrupted,
    WriteError,
    depth_layout,
    grow_checkpoint,
    meta_model,
    verify_folders,
)
from fxgrow.stream import grow as grow_mod
from fxgrow.stream import writer as writer_mod


def llama(
    layers: int = 3,
    hidden: int = 32,
    mlp: int = 48,
    dtype: str = "float32",
    tie_word_embeddings: bool = False,
):
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        dtype=dtype,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1 so that a wrong copy shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model.to(getattr(torch, dtype))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("teacher") / "llama"
    model = llama()
    model.save_pretrained(folder, max_shard_size="40KB")  # several shards and an index
    (folder / "tokenizer_config.json").write_text("{}")
    return folder, model


def _digest(folder: Path) -> dict:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_depth_and_width_exact_after_from_pretrained(teacher, tmp_path):
    src, model = teacher
    before = _digest(src)
    r = grow_checkpoint(
        src,
        tmp_path / "out",
        blocks=5,
        widths={"model.layers.*.mlp.up_proj": 96},
        max_shard_size="60KB",
        progress=False,
    )
    assert r.config.num_hidden_layers == 5 and r.config.intermediate_size == 96
    assert r.plan.layers == (0, 0, 1, 2, 2) and r.plan.zeroed == (1, 4)
    assert r.check is not None and r.check.max_rel < 1e-6
    out = tmp_path / "out"
    assert (out / "model.safetensors.index.json").is_file() and len(r.shards) > 1
    assert (out / "tokenizer_config.json").is_file() and (out / "README.md").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]
    student = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    sd = student.state_dict()
    assert not sd["model.layers.1.self_attn.o_proj.weight"].any()
    assert not sd["model.layers.4.mlp.down_proj.weight"].any()
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(_logits(student, ids), _logits(model, ids), atol=1e-5, rtol=0)
    assert torch.equal(
        student.generate(ids, max_new_tokens=4, do_sample=False),
        model.generate(ids, max_new_tokens=4, do_sample=False),
    )
    assert _digest(src) == before  # the teacher's files are untouched


def test_streamed_width_equals_in_memory_bit_for_bit(teacher, tmp_path):
    src, model = teacher
    r = grow_checkpoint(
        src, tmp_path / "out", factor=2, split="random", verify=False, progress=False
    )
    assert r.config.hidden_size == 64 and r.config.num_attention_heads == 8
    assert r.config.num_key_value_heads == 4 and r.config.intermediate_size == 96
    ids = torch.randint(0, 96, (1, 8))
    model.config.use_cache = False  # a graph capture needs a plain output
    try:
        memory = fxgrow.widen(model, ids, plan=r.plan.widen).state_dict()
    finally:
        model.config.use_cache = True
    with Checkpoint(tmp_path / "out") as ck:
        assert set(ck.tensors) == {k for k in memory if "rotary" not in k}
        for name in ck.tensors:
            assert torch.equal(ck.read(name), memory[name]), name


def test_bfloat16_keeps_dtype_and_stays_exact(tmp_path):
    model = llama(layers=2, dtype="bfloat16")
    model.save_pretrained(tmp_path / "t")
    r = grow_checkpoint(
        tmp_path / "t",
        tmp_path / "s",
        blocks=3,
        placement="append",
        widths={"model.layers.*.mlp.up_proj": 72},
        progress=False,
    )
    assert r.plan.layers == (0, 1, 1) and r.plan.zeroed == (2,)
    # x1.5 with balanced maps: shares 1 and 1/2 only, exact in bfloat16 (checked in float32)
    assert set(r.plan.widen.changes[0].map.counts) == {1, 2} and r.check.max_rel < 1e-6
    with Checkpoint(tmp_path / "s") as ck:
        assert {i.dtype for i in ck.tensors.values()} == {"BF16"}
    assert json.loads((tmp_path / "s" / "config.json").read_text())["dtype"] == "bfloat16"


def test_depth_layout_interleaves_like_llama_pro():
    layout = depth_layout(32, 40)
    assert [j for j, (_, z) in enumerate(layout) if z] == [4, 9, 14, 19, 24, 29, 34, 39]
    assert [b for b, _ in layout][:6] == [0, 1, 2, 3, 3, 4]
    assert depth_layout(2, 4, "append") == [(0, False), (1, False), (1, True), (1, True)]


def test_verifier_names_a_corrupted_tensor(teacher, tmp_path):
    src, _ = teacher
    r = grow_checkpoint(src, tmp_path / "out", blocks=4, verify=False, progress=False)
    out = tmp_path / "out"
    with Checkpoint(out) as ck:
        info = ck.tensors["model.layers.1.mlp.up_proj.weight"]
    with open(info.file, "r+b") as f:  # flip the sign of the tensor's first values
        f.seek(info.start)
        raw = bytearray(f.read(64))
        for k in range(3, 64, 4):
            raw[k] ^= 0x80
        f.seek(info.start)
        f.write(raw)
    with pytest.raises(
        PreservationError,
        match=r"does not compute the teacher's function: max "
        r"abs err .* stored tensors that differ from the plan: "
        r"model\.layers\.1\.mlp\.up_proj\.weight$",
    ):
        verify_folders(src, out, plan=r.plan)


def test_peak_memory_of_streamed_growth_stays_below_checkpoint(tmp_path):
    """A ~200 MB checkpoint grown by depth in a subprocess: the memory the growth adds to the
    interpreter (VmHWM, the high-water mark of the process since exec, minus its RSS after
    the imports) stays far below the checkpoint's size."""
    from fxgrow.stream.writer import OutTensor, shard, write_index, write_tensor

    src = tmp_path / "t"
    cfg = transformers.LlamaConfig(
        vocab_size=24000,
        hidden_size=640,
        intermediate_size=1728,
        num_hidden_layers=4,
        num_attention_heads=10,
        num_key_value_heads=5,
        dtype="float32",
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    specs = [OutTensor(n, "F32", tuple(p.shape)) for n, p in meta_model(cfg).state_dict().items()]
    src.mkdir()
    for s in shard(specs, 60_000_000):
        with open(src / s.file, "wb") as out:
            out.write(s.header())
            for spec in s.tensors:
                write_tensor(out, torch.full(spec.shape, 0.01), spec)
    write_index(src, shard(specs, 60_000_000))
    cfg.save_pretrained(src)
    code = f"""
import json, re, psutil, torch, transformers
from fxgrow.stream import grow_checkpoint, plan_checkpoint
from pathlib import Path
src = Path({str(src)!r})
planned = plan_checkpoint(src, blocks=5, widths={{"model.layers.*.mlp.up_proj": 2592}})
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM: the peak from here on
base = psutil.Process().memory_info().rss
r = grow_checkpoint(src, src.parent / "s", planned=planned, verify=False, progress=False)
status = open("/proc/self/status").read()
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024
print(json.dumps({{"size": sum(f.stat().st_size for f in src.glob("*.safetensors")),
                  "base": base, "peak": peak, "written": r.bytes_written}}))
"""
    env = dict(os.environ, PYTHONPATH=str(Path(fxgrow.__file__).parents[1]))
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert 180e6 < m["size"] < 260e6 and m["written"] > m["size"]
    added = m["peak"] - m["base"]
    assert added < 0.25 * m["size"], m


# -- bad input and interruptions ------------------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_shard(teacher, tmp_path):
    t = _copy(teacher[0], tmp_path / "t")
    (t / "model-00002-of-00005.safetensors").unlink() if (
        t / "model-00002-of-00005.safetensors"
    ).exists() else sorted(t.glob("model-0*.safetensors"))[1].unlink()
    with pytest.raises(CheckpointError, match=r"shard .* is missing; the checkpoint is incomplete"):
        grow_checkpoint(t, tmp_path / "s", blocks=4, progress=False)
    assert not (tmp_path / "s").exists()


def test_truncated_shard(teacher, tmp_path):
    t = _copy(teacher[0], tmp_path / "t")
    f = sorted(t.glob("model-0*.safetensors"))[0]
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=rf"{f.name} is truncated: .* its header needs"):
        grow_checkpoint(t, tmp_path / "s", blocks=4, progress=False)


def test_dtype_and_shape_disagreeing_with_config(teacher, tmp_path):
    t = _copy(teacher[0], tmp_path / "t")
    cfg = json.loads((t / "config.json").read_text())
    (t / "config.json").write_text(json.dumps({**cfg, "dtype": "bfloat16"}))
    with pytest.raises(
        CheckpointError,
        match=r"is stored as torch.float32 but config.json says "
        r"dtype torch.bfloat16",
    ):
        grow_checkpoint(t, tmp_path / "s", blocks=4, progress=False)
    (t / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 64}))
    with pytest.raises(
        CheckpointError,
        match=r"has shape \[48, 32\] in the checkpoint but "
        r"\[64, 32\] in the model its config builds",
    ):
        grow_checkpoint(t, tmp_path / "s", blocks=4, progress=False)


def test_growth_without_a_config_is_refused(teacher, tmp_path):
    with pytest.raises(
        UnsupportedModelError,
        match=r"the growth has no config of "
        r"LlamaForCausalLM.*widen every block alike",
    ):
        grow_checkpoint(
            teacher[0], tmp_path / "s", widths={"model.layers.0.mlp.up_proj": 96}, progress=False
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("failure", ["disk full", "no space mid-write", "ctrl-c", "exists"])
def test_failed_write_leaves_no_folder(teacher, tmp_path, monkeypatch, failure):
    src = teacher[0]
    before = _digest(src)
    out = tmp_path / "s"
    if failure == "disk full":
        monkeypatch.setattr(
            writer_mod.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})()
        )
        error, match = WriteError, r"not enough disk space in .*: the student needs"
    elif failure == "no space mid-write":
        calls = []

        def full(out_file, t, spec):
            calls.append(spec.name)
            if len(calls) > 2:
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(grow_mod, "write_tensor", full)
        error, match = WriteError, r"disk full while writing .*the partial output was removed"
    elif failure == "ctrl-c":

        def interrupt(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(grow_mod, "make_tensor", interrupt)
        error, match = GrowthInterrupted, r"interrupted; the partial output .* was removed"
    else:
        out.mkdir()
        (out / "x").write_text("")
        error, match = WriteError, r"already exists and is not empty"
    with pytest.raises(error, match=match):
        grow_checkpoint(
            src,
            out,
            blocks=4,
            widths={"model.layers.*.mlp.up_proj": 96},
            verify=False,
            progress=False,
        )
    assert [p.name for p in tmp_path.iterdir()] == (["s"] if failure == "exists" else [])
    assert _digest(src) == before


def test_plan_on_meta_device_holds_no_parameters():
    cfg = llama(layers=2).config
    model = meta_model(cfg)
    assert all(p.is_meta for p in model.parameters())
    analysis = fxgrow.analyze(model, torch.zeros(1, 8, dtype=torch.long, device="meta"))
    plan = fxgrow.plan(analysis, factor=2)
    assert {c.group: c.new_width for c in plan.changes}["model.layers.0.mlp.gate_proj"] == 96


def test_tied_embeddings_deepen(tmp_path):
    """(Widening a tied hidden size: tests/test_stream_config.py.)"""
    model = llama(layers=2, tie_word_embeddings=True)
    model.save_pretrained(tmp_path / "t")
    r = grow_checkpoint(tmp_path / "t", tmp_path / "deep", blocks=3, progress=False)
    assert r.config.tie_word_embeddings and r.check.max_rel < 1e-6
    student = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "deep").eval()
    assert student.lm_head.weight is student.model.embed_tokens.weight
    ids = torch.randint(0, 96, (2, 5))
    assert torch.allclose(_logits(student, ids), _logits(model, ids), atol=1e-5, rtol=0)


def test_torchvision_state_dict_widened_from_safetensors(tmp_path):
    """Any model: a meta-device resnet18 and its weights in one .safetensors file."""
    torchvision = pytest.importorskip("torchvision")
    from safetensors.torch import save_file

    from fxgrow.stream import widen_safetensors

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "r18.safetensors"
    )
    with torch.device("meta"):
        meta = torchvision.models.resnet18()
    x = torch.randn(2, 3, 32, 32)
    r = widen_safetensors(
        meta,
        x,
        tmp_path / "r18.safetensors",
        tmp_path / "out",
        factor=1.5,
        max_shard_size="20MB",
        progress=False,
    )
    assert r.check is not None and r.check.max_rel < 1e-5 and len(r.shards) > 1
    memory = fxgrow.widen(model, x, plan=r.plan.widen, verify=False).state_dict()
    with Checkpoint(tmp_path / "out") as ck:
        assert set(ck.tensors) == set(memory)
        for name in ck.tensors:
            assert torch.equal(ck.read(name), memory[name]), name


def test_module_stream_runs_each_module_with_its_own_weights(tmp_path):
    """run_modules: the meta model's own code with each module's parameters read for its call
    equals the real model; a parameter read outside its module's call fails the run."""
    from safetensors.torch import save_file

    from fxgrow.stream import run_modules

    class Net(torch.nn.Module):
        def __init__(self, outside: bool = False) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)
            self.outside = outside

        def forward(self, x):
            y = self.b(torch.relu(self.a(x)))
            return y * self.b.bias if self.outside else y

    torch.manual_seed(0)
    real = Net()
    save_file(real.state_dict(), tmp_path / "w.safetensors")
    x = torch.randn(2, 4)
    with torch.device("meta"):
        meta, leaky = Net(), Net(outside=True)
    with Checkpoint(tmp_path / "w.safetensors") as ck:
        out, peak = run_modules(meta, ck, (x,))
        assert torch.equal(out, real(x)) and peak == (4 * 6 + 6) * 4  # one module at a time
        assert all(p.is_meta for p in meta.parameters())  # put back after each call
        with pytest.raises((PreservationError, RuntimeError, NotImplementedError)):
            run_modules(leaky, ck, (x,))
        assert all(p.is_meta for p in leaky.parameters())
