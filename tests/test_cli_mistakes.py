"""Mistakes a new user makes on the command line: each exits with status 2, prints one line
naming the problem and the fix (command-line flags, never Python keywords), no traceback, and
leaves nothing behind (no file written; checks that can be made first are made before any
model is built)."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch

import fxgrow
from fxgrow import cli
from fxgrow.cli.advice import PYTHON_HINTS, for_cli

R18 = ["torchvision:resnet18", "--input-shape", "1,3,32,32", "-q"]


def run(capsys, tmp_path, *args, code=2):
    """main(args) in ``tmp_path``: the exit status, the single stderr line; nothing new on
    disk."""
    before = sorted(p.name for p in tmp_path.rglob("*"))
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        got = cli.main(list(args))
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert got == code, err
    if code == 2:
        lines = [line for line in err.splitlines() if not line.startswith("fxgrow: planned")]
        assert "Traceback" not in err and len(lines) == 1, err
        assert lines[0].startswith("fxgrow: error: ")
        assert not PYTHON_HINTS.search(lines[0]), lines[0]
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
    return out, err


@pytest.fixture
def no_model(monkeypatch):
    """Building a model fails the test: the mistake must be caught before."""

    def refuse(*a, **k):
        raise AssertionError("a model was built before the options were checked")

    monkeypatch.setattr(cli, "load_model", refuse)


# -- checked before any work ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, message",
    [
        ("w.pt", r"-o/--output must end in \.safetensors, got 'w\.pt' \(e\.g\. w\.safetensors\)"),
        (
            "nowhere/w.safetensors",
            r"the folder 'nowhere' does not exist; create it \(mkdir -p "
            r"nowhere\)",
        ),
        ("sub", r"'sub' is a folder; give a file name such as sub/student\.safetensors"),
    ],
)
def test_output_checked_first(capsys, tmp_path, no_model, output, message):
    (tmp_path / "sub").mkdir()
    for command in (
        ["widen", *R18, "--factor", "1.5"],
        ["grow", *R18, "--blocks", "layer1=3"],
        ["deepen", *R18, "--after", "layer1.0.relu"],
    ):
        _, err = run(capsys, tmp_path, *command, "-o", output)
        assert __import__("re").search(message, err), err


def test_draw_output_suffix_checked_first(capsys, tmp_path, no_model):
    _, err = run(capsys, tmp_path, "draw", *R18, "-o", "graph.jpg")
    assert (
        "must end in .svg, .png, .pdf, .dot, .gv or .html, got 'graph.jpg' (e.g. graph.svg)" in err
    )


def test_student_file_checked_first(capsys, tmp_path, no_model):
    _, err = run(capsys, tmp_path, "draw", *R18, "-o", "g.dot", "--student", "missing.safetensors")
    assert "--student: no such file: missing.safetensors" in err


def test_bad_factor_and_missing_growth(capsys, tmp_path, no_model):
    _, err = run(capsys, tmp_path, "widen", *R18, "--factor", "0.5")
    assert "--factor must be a number >= 1 (fxgrow only grows), got 0.5" in err


def test_growth_not_said(capsys, tmp_path):
    _, err = run(capsys, tmp_path, "widen", *R18)
    assert "say how to widen: --factor 1.5" in err and "--width GROUP=N" in err


# -- model specs ----------------------------------------------------------------------------------


def test_misspelt_and_unknown_models(capsys, tmp_path):
    _, err = run(capsys, tmp_path, "inspect", "torchvision:resnet1B", "-q")
    assert "torchvision has no model 'resnet1B'; did you mean resnet18" in err
    _, err = run(capsys, tmp_path, "inspect", "torchvision:qqqqzz", "-q")
    assert "torchvision's models: alexnet, convnext_base" in err and "in all)" in err


def test_missing_factory_lists_the_names(capsys, tmp_path):
    (tmp_path / "m.py").write_text(
        "import torch\n\ndef make_net():\n    return torch.nn.Linear(4, 4)\n"
    )
    before = sorted(p.name for p in tmp_path.rglob("*"))
    _, err = run(capsys, tmp_path, "inspect", f"{tmp_path}/m.py:zzz", "--input-shape", "2,4", "-q")
    assert f"has no 'zzz'; the public names in {tmp_path}/m.py: make_net, torch" in err
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name != "__pycache__") == before


def test_bad_spec_option_and_shape(capsys, tmp_path):
    _, err = run(capsys, tmp_path, "inspect", "torchvision:resnet18?num_clases=10", "-q")
    assert "torchvision:resnet18 does not accept {'num_clases': 10}" in err
    _, err = run(
        capsys, tmp_path, "inspect", "torchvision:resnet18", "--input-shape", "1,a,3", "-q"
    )
    assert "--input-shape must be positive integers separated by commas, e.g. 1,3,224,224" in err


def test_unknown_flag_is_argparse_usage(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["widen", *R18, "--factr", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --factr" in err and "Traceback" not in err


def test_missing_saved_file(capsys, tmp_path):
    _, err = run(capsys, tmp_path, "inspect", "nosuch.safetensors", "-q")
    assert "no such file: nosuch.safetensors" in err


# -- memory ----------------------------------------------------------------------------------------


def test_student_too_big_is_refused_before_building(capsys, tmp_path, monkeypatch):
    from fxgrow import rewrite

    def refuse(*a, **k):
        raise AssertionError("the student was built")

    monkeypatch.setattr(rewrite, "apply", refuse)
    _, err = run(capsys, tmp_path, "widen", *R18, "--factor", "1000", "-o", "big.safetensors")
    assert "fxgrow: planned student: 11,158,035,009,000 parameters" in err and "44.6 TB" in err
    assert "grow less (a smaller --factor, --width or --blocks), or pass --yes" in err
    out, err = run(capsys, tmp_path, "widen", *R18, "--factor", "1000", "--plan-only", code=0)
    assert "layer4.1.conv1     512 -> 512000" in out and "planned student: 11" in err


# -- advice in the CLI's words -------------------------------------------------------------------


def test_deepen_after_gelu_advises_the_flag(capsys, tmp_path):
    (tmp_path / "g.py").write_text(
        textwrap.dedent("""
        import torch.nn as nn

        def make():
            return nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2)).eval()
    """)
    )
    _, err = run(
        capsys,
        tmp_path,
        "deepen",
        f"{tmp_path}/g.py:make",
        "--input-shape",
        "2,8",
        "--after",
        "1",
        "-q",
    )
    assert "Use --kind residual" in err and "kind=" not in err


def test_untrusted_file_advises_the_flag(capsys, tmp_path):
    import json

    import safetensors.torch

    torch.manual_seed(0)
    student = fxgrow.widen(
        torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval(),
        torch.randn(2, 4),
        factor=1.0,
    )
    path = tmp_path / "s.safetensors"
    fxgrow.save(student, path)
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    desc = json.loads(meta["fxgrow"])
    node = next(n for n in desc["graph"] if n["op"] == "call_module")
    node.update(op="call_function", target="json.dumps")
    safetensors.torch.save_file(
        safetensors.torch.load_file(path), str(path), metadata={**meta, "fxgrow": json.dumps(desc)}
    )
    _, err = run(capsys, tmp_path, "inspect", str(path), "--input-shape", "2,4", "-q")
    assert "calls json.dumps, which fxgrow does not load" in err
    assert "pass --trust json.dumps" in err and "trusted=" not in err


@pytest.mark.parametrize(
    "message, expected",
    [
        (
            "group 'x' cannot be widened exactly to 5: ... (or pass approximate=True to accept a "
            "measured approximation)",
            "(or pass --approximate to accept",
        ),
        (
            "so the function would change. Use kind='residual' (a zero-initialised",
            "Use --kind residual (a zero",
        ),
        (
            "Pass leaf_modules=[...] naming that module (its type or qualified name) to keep it as one "
            "opaque call, or use fxgrow's torch.export front end.",
            "Pass --leaf MODULE naming that module (its qualified name) to keep it as one opaque "
            "call, or use --frontend export.",
        ),
        (
            "channels-last; pass layer='conv' or layer='linear'",
            "pass --layer conv or --layer linear",
        ),
        (
            "please report it with the model (pass verify=False to get the student anyway).",
            "(--no-verify writes the student anyway)",
        ),
        (
            "normalises it ...; approximate=True widens it anyway",
            "; --approximate widens it anyway",
        ),
        (
            "Pass inputs of the number, shape, dtype and device the model expects.",
            "Give inputs the model accepts: --input-shape",
        ),
    ],
)
def test_library_advice_translated(message, expected):
    got = for_cli(message)
    assert expected in got and not PYTHON_HINTS.search(got)


def test_documented_timm_spec_needs_no_input_shape():
    args = cli.build_parser().parse_args(["inspect", "timm:vit_tiny_patch16_224?img_size=64"])
    pytest.importorskip("timm")
    loaded = cli.load_model(args)
    assert [tuple(x.shape) for x in loaded.inputs] == [(1, 3, 64, 64)]


def test_student_of_another_model_refused(capsys, tmp_path):
    (tmp_path / "m.py").write_text(
        textwrap.dedent("""
        import torch.nn as nn

        def a():
            return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).eval()

        def b():
            return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)).eval()
    """)
    )
    spec = f"{tmp_path}/m.py"
    student = tmp_path / "s.safetensors"
    run(
        capsys,
        tmp_path,
        "widen",
        f"{spec}:a",
        "--input-shape",
        "2,8",
        "--factor",
        "2",
        "-o",
        str(student),
        "-q",
        code=0,
    )
    assert student.is_file()
    _, err = run(
        capsys,
        tmp_path,
        "draw",
        f"{spec}:b",
        "--input-shape",
        "2,8",
        "--student",
        str(student),
        "-o",
        "x.dot",
        "-q",
    )
    assert f"--student {student} was not grown from {spec}:b" in err
    assert "give the model it was grown from" in err
    run(
        capsys,
        tmp_path,
        "draw",
        f"{spec}:a",
        "--input-shape",
        "2,8",
        "--student",
        str(student),
        "-o",
        str(tmp_path / "x.dot"),
        "-q",
        code=0,
    )
    assert (tmp_path / "x.dot").is_file()
