"""Dry runs never build the student: fxgrow.plan and `widen --plan-only` on ResNet-50 widened
100x (a 235-billion-parameter student) answer with the exact planned size and allocate
nothing of its size."""

from __future__ import annotations

import time

import psutil
import torch
import torchvision

import fxgrow
from fxgrow import cli
from fxgrow.planning.estimate import estimate

X = torch.randn(1, 3, 64, 64)
STUDENT_PARAMS = 234_666_093_800  # ResNet-50 with every widenable group x100


def test_plan_and_estimate_allocate_nothing_large():
    torch.manual_seed(0)
    teacher = torchvision.models.resnet50().eval()
    rss = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    analysis = fxgrow.analyze(teacher, X)
    plan = fxgrow.plan(analysis, factor=100)
    est = estimate(analysis, plan)
    assert time.perf_counter() - t0 < 60
    assert psutil.Process().memory_info().rss - rss < 1 << 30
    assert est.student_params == STUDENT_PARAMS
    assert est.student_bytes > 900e9 and est.needed_bytes == 2 * est.student_bytes
    assert not est.fits or est.available_bytes > est.needed_bytes


def test_estimate_is_exact_on_a_built_student():
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    analysis = fxgrow.analyze(teacher, x)
    plan = fxgrow.plan(analysis, factor=1.5)
    stages = fxgrow.stages(teacher, x)
    est = estimate(analysis, plan, stages=stages, blocks={"layer1": 3})
    student = fxgrow.grow(teacher, x, blocks={"layer1": 3}, width=1.5, verify=False)
    assert est.student_params == sum(p.numel() for p in student.parameters())


def test_cli_plan_only_prints_the_estimate(capsys, monkeypatch):
    from fxgrow import rewrite

    def refuse(*a, **k):
        raise AssertionError("--plan-only built the student")

    monkeypatch.setattr(rewrite, "apply", refuse)
    assert (
        cli.main(
            [
                "widen",
                "torchvision:resnet50",
                "--input-shape",
                "1,3,64,64",
                "--factor",
                "100",
                "--plan-only",
                "-q",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out.startswith("WidenPlan (seed 0): 37 groups")
    assert f"fxgrow: planned student: {STUDENT_PARAMS:,} parameters" in err


def test_cli_deepen_prints_the_planned_size_before_building(capsys):
    assert (
        cli.main(
            [
                "deepen",
                "torchvision:resnet18",
                "--input-shape",
                "1,3,32,32",
                "--after",
                "layer3.1",
                "--kind",
                "block",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    planned = err.index(
        "fxgrow: planned student: 12,870,184 parameters (1.10x the teacher's 11,689,512)"
    )
    assert planned < err.index("inserting block layers")
    assert "11,689,512 → 12,870,184" in out
