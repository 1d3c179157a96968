"""A boundary blocker says which side of the model fixes its group (structured, not text)."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

import fxgrow
from fxgrow.analysis.layout import Blocker


def test_boundary_blockers_name_their_side():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3)).eval()
    groups = fxgrow.groups(m, torch.randn(1, 3, 8, 8))
    sides = {b.side for g in groups for b in g.blockers if b.boundary}
    assert sides == {"input", "output"}
    fixed = {g.name: {b.label for b in g.blockers} for g in groups if g.blockers}
    assert sorted(fixed.values(), key=sorted) == [{"input"}, {"output"}]
    assert all(b.side is None for g in groups for b in g.blockers if not b.boundary)


def test_label_does_not_read_the_reason():
    op = Blocker("n", "model input would cut inside a unit", "structure")
    assert op.label == "structure"
    side = Blocker("x", "model input (fixed boundary)", "boundary", "input")
    assert replace(side, reason="an output").label == "input"
