"""``--init`` on the command line: fresh fan-in / zero fan-out students through ``widen`` and
``grow``, the groups that must replicate, and gradmax refused with what to do instead."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

import fxgrow
from fxgrow.cli import main

R18 = ["torchvision:resnet18", "--input-shape", "1,3,32,32"]
VIT = ["timm:vit_tiny_patch16_224?img_size=32&patch_size=8&depth=2", "--input-shape", "1,3,32,32"]


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)  # what the CLI builds for seed 0
    return torchvision.models.resnet18(weights=None).eval()


def _exact(teacher: torch.nn.Module, student: torch.nn.Module) -> float:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        t, s = teacher.double()(x), student.double().eval()(x)
    return float((t - s).abs().max() / t.abs().max())


def test_widen_init_zero(capsys, tmp_path, one_thread):
    path = tmp_path / "s.safetensors"
    code, out, err = _cli(
        capsys, "widen", *R18, "--factor", "1.5", "--init", "zero", "-o", str(path), "-q", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert {c["init"] for c in doc["groups_changed"]} == {"zero"}
    assert len(doc["groups_changed"]) == 12 and doc["preservation"]["ok"]
    student = fxgrow.load(path)
    teacher = _teacher()
    assert _exact(teacher, student) <= 1e-10  # fp64 on fresh inputs
    # new units of layer1.0.conv1: zero fan-out, fresh fan-in (not copies of old rows)
    w_in = student.get_submodule("layer1.0.conv1").weight.detach()
    assert w_in.shape[0] == 96
    fan_out = student.get_submodule("layer1.0.conv2").weight.detach()[:64, 64:]  # old rows
    assert fan_out.shape == (64, 32, 3, 3) and not bool(fan_out.any())
    old = w_in[:64].reshape(64, -1)
    for row in w_in[64:].reshape(32, -1):
        assert not any(torch.equal(row, o) for o in old)
    # the same command with --init replicate gives copies
    code, out, _ = _cli(
        capsys,
        "widen",
        *R18,
        "--factor",
        "1.5",
        "-o",
        str(tmp_path / "r.safetensors"),
        "-q",
        "--json",
    )
    rep = fxgrow.load(tmp_path / "r.safetensors").get_submodule("layer1.0.conv1").weight.detach()
    assert {c["init"] for c in json.loads(out)["groups_changed"]} == {"replicate"}
    assert all(
        any(torch.equal(row, o) for o in rep[:64].reshape(64, -1))
        for row in rep[64:].reshape(32, -1)
    )


def test_grow_init_zero_text_report(capsys, tmp_path, one_thread):
    path = tmp_path / "g.safetensors"
    code, out, err = _cli(
        capsys,
        "grow",
        *R18,
        "--factor",
        "2",
        "--blocks",
        "layer2=3",
        "--init",
        "zero",
        "-o",
        str(path),
    )
    assert code == 0, err
    assert "init" in out.splitlines()[out.splitlines().index("12 channel groups widened:") + 1]
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if "→" in line}
    assert rows["layer1.0.conv1"] == ["64", "→", "128", "zero"]
    student = fxgrow.load(path)
    assert _exact(_teacher(), student) <= 1e-10


def test_layernorm_groups_replicate_under_init_zero(capsys, one_thread):
    pytest.importorskip("timm")
    code, out, err = _cli(capsys, "widen", *VIT, "--factor", "2", "--init", "zero", "-q", "--json")
    assert code == 0, err
    doc = json.loads(out)
    inits = {c["group"]: c["init"] for c in doc["groups_changed"]}
    assert "replicate" in inits.values() and "zero" in inits.values(), inits
    assert inits[next(g for g in inits if "fc1" in g)] == "zero"  # the MLP hidden units
    assert doc["preservation"]["ok"]


@pytest.mark.parametrize("cmd", ["widen", "grow"])
def test_gradmax_refused_on_the_command_line(capsys, cmd):
    code, _, err = _cli(capsys, cmd, *R18, "--factor", "2", "--init", "gradmax")
    assert code == 2
    line = next(x for x in err.splitlines() if x.startswith("fxgrow: error:"))
    assert "--init gradmax needs a training batch and a loss" in line
    assert "--init zero" in line and 'init="gradmax", loss_fn=' in line
    assert "Traceback" not in err


def test_unknown_init_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["widen", *R18, "--factor", "2", "--init", "copy"])
    assert e.value.code == 2
    assert "invalid choice: 'copy'" in capsys.readouterr().err


def test_init_refused_for_hugging_face_folders(capsys, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    code, _, err = _cli(
        capsys, "grow", str(folder), "--factor", "2", "--init", "zero", "-o", str(tmp_path / "out")
    )
    assert code == 2
    assert "--init zero is not available for Hugging Face folders yet" in err
