"""tools/sweep.py: the CI slice runs with no BUG, and the sweep's own machinery (subprocess
isolation, time limit, classification, the generated table) does what it says."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("sweep", ROOT / "tools" / "sweep.py")
sweep = importlib.util.module_from_spec(_spec)
sys.modules["sweep"] = sweep
_spec.loader.exec_module(sweep)


def test_quick_slice_has_no_bug(tmp_path):
    out = tmp_path / "quick.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t0 = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "sweep.py"),
            "--quick",
            "--json",
            str(out),
            "--no-md",
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert [n for _, n in sweep.QUICK] == list(results)
    bugs = {n: r["detail"] for n, r in results.items() if r["cls"] == "BUG"}
    assert bugs == {}
    assert results["resnet18"]["cls"] == "exact"
    assert results["resnet18"]["groups"] == 14 and results["resnet18"]["widened"] == 12
    assert results["resnet18"]["max_rel"] < 1e-5
    assert results["shufflenet_v2_x0_5"]["cls"] == "partial"
    assert results["shufflenet_v2_x0_5"]["detail"].startswith("chunk_")
    detector = results["fasterrcnn_mobilenet_v3_large_320_fpn"]  # its backbone, within=
    assert detector["cls"] == "exact" and detector["widened"] == 30
    assert detector["detail"].startswith(
        "within backbone: whole model 100 detections matched (0 unmatched)"
    )
    print(f"quick slice: {time.time() - t0:.0f} s")


def _case(name: str = "toy") -> sweep.Case:
    return sweep.Case("toy", name, "toy")


@pytest.fixture
def toy_builder(monkeypatch):
    """A builder for suite "toy"; a forked child inherits the patched table."""

    def build(name: str, meta: bool = False):
        if name == "hang":
            time.sleep(60)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)
        )
        return model, torch.randn(1, 3, 8, 8)

    monkeypatch.setitem(sweep.BUILDERS, "toy", build)


def test_exact_toy_model_in_a_subprocess(toy_builder):
    r = sweep.run_isolated(_case(), timeout=60, mem_mb=4000, max_params=10**9)
    assert (r.cls, r.groups, r.widenable, r.widened, r.op_blocked, r.input) == (
        "exact",
        3,
        1,
        1,
        0,
        "1x3x8x8",
    )
    assert r.max_rel < 1e-6


def test_timeout_is_a_bug_and_the_child_is_killed(toy_builder):
    t0 = time.time()
    r = sweep.run_isolated(_case("hang"), timeout=2, mem_mb=4000, max_params=10**9)
    assert time.time() - t0 < 20
    assert (r.cls, r.detail) == ("BUG", "timeout after 2 s")


def test_raw_exception_is_a_bug_and_fxgrow_error_a_refusal(toy_builder, monkeypatch):
    import fxgrow

    def boom(*args, **kwargs):
        raise RuntimeError("shape mismatch in a rule")

    monkeypatch.setattr(fxgrow, "analyze", boom)
    r = sweep.run_isolated(_case(), timeout=60, mem_mb=4000, max_params=10**9)
    assert (r.cls, r.detail) == (
        "BUG",
        "raw exception in analyze/plan: RuntimeError: shape mismatch in a rule",
    )
    assert "boom" in r.trace

    def refuse(*args, **kwargs):
        raise fxgrow.UnsupportedModelError("node x: cannot grow\nmore text")

    monkeypatch.setattr(fxgrow, "analyze", refuse)
    r = sweep.run_isolated(_case(), timeout=60, mem_mb=4000, max_params=10**9)
    assert (r.cls, r.detail) == ("refused", "UnsupportedModelError: node x: cannot grow")


def test_parameter_cap_skips(toy_builder):
    r = sweep.run_isolated(_case(), timeout=60, mem_mb=4000, max_params=10)
    assert (r.cls, r.params) == ("skipped", 122)


def test_timm_family_is_the_name_prefix():
    assert [
        sweep.timm_family(n)
        for n in ("resnet50d", "vit_tiny_patch16_224", "beitv2_base", "efficientnet_b0")
    ] == ["resnet", "vit", "beitv", "efficientnet"]


def test_markdown_section_replaced_in_place(tmp_path):
    md = tmp_path / "zoo.md"
    md.write_text("# Zoo\n\nintro\n")
    meta = {
        "date": "2026-01-01",
        "torch": "t",
        "torchvision": "v",
        "timm": "m",
        "transformers": "h",
    }
    row = dict(
        suite="timm",
        name="a_b",
        family="a",
        module="m",
        cls="BUG",
        detail="x | y",
        input="1x3x8x8",
        groups=1,
        widened=0,
        op_blocked=0,
        max_rel=None,
        dtype="float32",
        params=1,
        seconds=1.0,
        trace="",
    )
    sweep.write_md(md, sweep.markdown([row], meta))
    sweep.write_md(md, sweep.markdown([row, dict(row, name="a_c", cls="exact")], meta))
    text = md.read_text()
    assert text.startswith("# Zoo\n\nintro\n\n" + sweep.BEGIN)
    assert text.count(sweep.BEGIN) == 1 and text.count(sweep.END) == 1
    assert "| models | 1 | 0 | 0 | 0 | 0 | 1 | 2 |" in text
    assert "* timm:a_b: x \\| y" in text
    assert "no `op` blocker: **1** of 2 run" in text
