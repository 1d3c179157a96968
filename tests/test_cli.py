"""The fxgrow command line: end to end in subprocesses (a few: each pays Python's start-up) and
in-process through ``fxgrow.cli.main`` for the rest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import fxgrow
from fxgrow.cli import main

R18 = ["torchvision:resnet18", "--input-shape", "1,3,32,32"]
TIMM = ["timm:resnet10t", "--input-shape", "1,3,32,32"]
LLAMA = [
    "hf:LlamaForCausalLM?hidden_size=32&intermediate_size=64&num_hidden_layers=2"
    "&num_attention_heads=4&num_key_value_heads=2&vocab_size=64",
    "--input-ids",
    "2,8",
]


def fxgrow_cmd() -> list[str]:
    exe = shutil.which("fxgrow", path=str(Path(sys.executable).parent)) or shutil.which("fxgrow")
    return [exe] if exe else [sys.executable, "-m", "fxgrow.cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        fxgrow_cmd() + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def one_line_error(stderr: str) -> str:
    """The error line; there must be exactly one and no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("fxgrow: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# -- subprocesses: the installed command, exit codes, clean errors -----------------------------------


def test_widen_torchvision_subprocess(tmp_path):
    out = run("widen", *R18, "--factor", "1.5", "-o", "wide.safetensors", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "12 channel groups widened" in out.stdout
    assert "conv1" in out.stdout and "64  →   96" in out.stdout
    assert "11,689,512 → 25,901,896" in out.stdout
    assert (
        "[ok: max rel err <= tolerance 1e-05; the tolerance bounds the relative error]"
        in out.stdout
    )
    assert "✓ verifying against the teacher" in out.stderr  # progress on stderr
    student = fxgrow.load(tmp_path / "wide.safetensors")
    assert student.conv1.out_channels == 96


def test_grow_timm_and_deepen_hf_subprocess(tmp_path):
    pytest.importorskip("timm")
    out = run("grow", *TIMM, "--blocks", "layer1=2", "--factor", "1.5", "-q", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "+ layer1.1" in out.stdout and out.stderr == ""
    pytest.importorskip("transformers")
    out = run(
        "deepen", *LLAMA, "--after", "model.layers.1", "--kind", "block", "--json", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["modules_inserted"] == ["model.layers.1_deepen0"]  # a copy of layer 1
    assert report["preservation"]["ok"] and report["preservation"]["max_rel"] < 1e-5


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "torchvision:resnet181"], "did you mean resnet18"),
        (["widen", *R18, "--width", "conv1=50"], "only grows"),
        (["inspect", "untraceable.py:make", "--input-shape", "1,3,8,8"], "could not trace"),
    ],
)
def test_user_errors_subprocess(tmp_path, args, message):
    (tmp_path / "untraceable.py").write_text(UNTRACEABLE)
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in one_line_error(out.stderr)
    assert out.stdout == ""


UNTRACEABLE = textwrap.dedent("""
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else self.b(x)

    def make():
        return M()
""")


# -- in process -------------------------------------------------------------------------------------


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inspect_tables_and_json(capsys):
    code, out, _ = cli(capsys, "inspect", *R18, "-q")
    assert code == 0
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("group "))
    assert lines[header].split() == [
        "group",
        "width",
        "unit",
        "members",
        "widenable",
        "/",
        "blockers",
    ]
    assert lines[header + 2].split()[:2] == ["conv1[in]", "3"]
    assert "14 groups: 12 widenable, 2 fixed" in out
    assert "layer1       2  layer1.0, layer1.1" in out  # stages for grow --blocks
    code, out, _ = cli(capsys, "inspect", *TIMM, "--json", "-q")
    doc = json.loads(out)
    assert code == 0 and doc["class"] == "ResNet" and len(doc["groups"]) > 10
    assert all({"name", "width", "widenable", "blockers"} <= set(g) for g in doc["groups"])


def test_inspect_hf_and_saved_file(capsys, tmp_path):
    pytest.importorskip("transformers")
    code, out, _ = cli(capsys, "inspect", *LLAMA, "-q")
    assert code == 0 and "export graph" in out and "model.layers.0.mlp.gate_proj" in out
    path = tmp_path / "s.safetensors"
    code, out, _ = cli(capsys, "widen", *R18, "--width", "layer1.0.conv1=96", "-o", str(path), "-q")
    assert code == 0 and "layer1.0.conv1     64  →   96" in out
    code, out, _ = cli(capsys, "inspect", str(path), "-q")  # inputs recorded in the file
    assert code == 0 and "input 1x3x32x32" in out
    code, out, _ = cli(capsys, "grow", str(path), "--blocks", "layer2=3", "-q")
    assert code == 0 and "+ layer2.2" in out


def test_widen_plan_only_and_no_output(capsys, tmp_path):
    code, out, _ = cli(capsys, "widen", *R18, "--factor", "2", "--plan-only", "--json", "-q")
    plan = fxgrow.WidenPlan.from_json(out)
    assert code == 0 and len(plan.changes) == 12
    code, out, _ = cli(
        capsys, "deepen", *R18, "--after", "layer1.0.relu", "--kind", "residual", "-q"
    )
    assert code == 0
    assert "+ layer1.0.relu_deepen0" in out and "not saved" in out
    assert "max abs err 0," in out


def test_draw_commands(capsys, tmp_path):
    code, out, _ = cli(capsys, "draw", *R18, "-o", str(tmp_path / "r.dot"), "-q")
    assert code == 0 and (tmp_path / "r.dot").read_text().startswith("digraph")
    if shutil.which("dot"):
        svg = tmp_path / "grown.svg"
        code, out, _ = cli(
            capsys,
            "draw",
            *R18,
            "--factor",
            "1.5",
            "--blocks",
            "layer1=3",
            "-o",
            str(svg),
            "--collapse",
            "2",
            "-q",
        )
        assert code == 0 and "teacher → student" in out
        texts = [t.text for t in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}text")]
        assert "64 → 96" in texts and "512 → 768" in texts


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")
@pytest.mark.parametrize("name", ["resnet50", "densenet121"])
def test_draw_acceptance_every_group_colour(capsys, tmp_path, name):
    """`fxgrow draw torchvision:NAME -o NAME.svg` as typed (224x224 input, collapse=auto)."""
    import torchvision

    svg = tmp_path / f"{name}.svg"
    code, out, _ = cli(capsys, "draw", f"torchvision:{name}", "-o", str(svg), "-q")
    assert code == 0
    colours = {
        el.get(a).lower()
        for el in ET.parse(svg).getroot().iter()
        for a in ("stroke", "fill")
        if el.get(a)
    }
    torch_model = getattr(torchvision.models, name)().eval()
    import torch

    s = fxgrow.drawing.scene(torch_model, torch.randn(1, 3, 224, 224), collapse="auto")
    assert len(s.groups) == {"resnet50": 39, "densenet121": 122}[name]
    missing = [g.name for g in s.groups if g.colour not in colours]
    assert not missing


def test_user_errors_in_process(capsys, tmp_path, monkeypatch):
    cases = [
        (["inspect", "torchvison:resnet18"], "cannot tell what model"),
        (["inspect", "hf:LlamaForCausalLm"], "did you mean LlamaForCausalLM"),
        (["widen", *R18, "--width", "conv1=abc"], "must be an integer"),
        (["widen", *R18, "--width", "fc=2000"], "cannot be widened exactly"),
        (["widen", *R18, "--factor", "0.5"], ">= 1"),
        (["widen", *R18], "say how to widen"),
        (["inspect", "torchvision:resnet18", "--input-shape", "1,3"], "does not run"),
        (["deepen", *R18, "--after", "layer9"], "no node or module named 'layer9'"),
        (["draw", *R18, "-o", "x.jpeg"], ".svg, .png"),
        (["inspect", "nope.py:make", "--input-shape", "1,3,8,8"], "no such file"),
        (["inspect", str(tmp_path / "missing.safetensors")], "no such file"),
    ]
    for args, message in cases:
        code, out, err = cli(capsys, *args, "-q")
        assert code == 2, (args, err)
        assert message in one_line_error(err), (args, err)


def test_draw_without_graphviz_is_a_user_error(capsys, tmp_path, monkeypatch):
    from fxgrow.drawing import render

    monkeypatch.setattr(render, "dot_binary", lambda: None)
    code, _, err = cli(capsys, "draw", *R18, "-o", str(tmp_path / "r.svg"), "-q")
    assert code == 2 and "Graphviz" in one_line_error(err)
    code, _, _ = cli(capsys, "draw", *R18, "-o", str(tmp_path / "r.dot"), "-q")
    assert code == 0


def test_internal_errors_exit_1(capsys, monkeypatch):
    import fxgrow.cli.steps as cli_steps

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli_steps, "load_model", boom)
    code, _, err = cli(capsys, "inspect", *R18)
    assert code == 1
    assert "internal error: RuntimeError: kaboom" in err and "Traceback" not in err
    code, _, err = cli(capsys, "inspect", *R18, "--traceback")
    assert code == 1 and "Traceback" in err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for text in (
        "examples:",
        "fxgrow widen torchvision:resnet18 --factor 1.5",
        "hf:LlamaForCausalLM",
        "exit status",
    ):
        assert text in out
    with pytest.raises(SystemExit) as info:
        main(["widen"])  # missing model: argparse's usage error
    assert info.value.code == 2


def test_model_spec_parsing():
    from fxgrow.cli import SpecError, _split_spec

    name, opts = _split_spec(
        "LlamaForCausalLM?hidden_size=64&tie_word_embeddings=true&rope_theta=1e4&act=silu&x=null"
    )
    assert name == "LlamaForCausalLM"
    assert opts == {
        "hidden_size": 64,
        "tie_word_embeddings": True,
        "rope_theta": 1e4,
        "act": "silu",
        "x": None,
    }
    with pytest.raises(SpecError):
        _split_spec("resnet18?num_classes")
