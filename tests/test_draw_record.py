"""``fxgrow.draw`` of a widened student reads the teacher -> student map from the student's
growth record (``fxgrow.drawing.groups.recorded_groups``) instead of analysing the student and
matching its groups by name; the picture is the one the matching gave."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

import fxgrow
import fxgrow.drawing.groups as dgroups
from fxgrow.drawing import scene
from fxgrow.growth import growth_record, set_growth_record

X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def summary(s):
    groups = [(g.index, g.name, g.colour, g.old, g.width, g.changed) for g in s.groups]
    edges = [
        (e.src, e.dst, [g.name for g in e.groups], [g.name for g in e.labels]) for e in s.edges
    ]
    items = [(i.id, i.shape, [g.name for g in i.out_groups], i.inserted) for i in s.items]
    return groups, edges, items


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    analysis = fxgrow.analyze(model, X32)
    plan = fxgrow.plan(model, X32, widths={"conv1": 96, "layer2.0.conv1": 160}, factor=1.25)
    return model, analysis, plan, fxgrow.widen(model, X32, plan=plan)


def test_record_gives_the_matched_picture_without_analysing_the_student(resnet, monkeypatch):
    model, analysis, plan, student = resnet
    record = growth_record(student)
    assert record.group_widths == {c.group: c.new_width for c in plan.changes}
    matched = summary(scene(analysis, student=student))  # the record path
    calls = []
    real = fxgrow.analysis.analyze
    monkeypatch.setattr(
        fxgrow.analysis, "analyze", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    assert summary(scene(analysis, student=student)) == matched and not calls
    monkeypatch.setattr(dgroups, "recorded_groups", lambda *a: None)
    import fxgrow.drawing as drawing

    monkeypatch.setattr(drawing, "recorded_groups", lambda *a: None)
    assert summary(scene(analysis, student=student)) == matched and calls  # analysed, matched
    groups = {g.name: g for g in scene(analysis, student=student).groups}
    assert (groups["conv1"].old, groups["conv1"].width) == (64, 96)
    assert (groups["layer2.0.conv1"].old, groups["layer2.0.conv1"].width) == (128, 160)


def test_a_record_that_disagrees_with_the_student_is_not_used(resnet):
    model, analysis, plan, student = resnet
    record = growth_record(student)
    assert dgroups.recorded_groups(analysis, student) is not None
    try:  # a width the student's tensors do not have
        set_growth_record(student, dataclasses.replace(record, group_widths={"conv1": 128}))
        assert dgroups.recorded_groups(analysis, student) is None
        # a group this analysis does not have
        set_growth_record(student, dataclasses.replace(record, group_widths={"nope": 3}))
        assert dgroups.recorded_groups(analysis, student) is None
    finally:
        set_growth_record(student, record)


def test_deepened_student_is_matched_not_read_from_the_record():
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    student = fxgrow.grow(model, X32, width=1.5, blocks={"layer1": 3})
    assert growth_record(student).group_widths is None  # layers inserted: node names differ
    s = scene(model, X32, student=student)
    assert sum(g.changed for g in s.groups) == 12 and any(i.inserted for i in s.items)
