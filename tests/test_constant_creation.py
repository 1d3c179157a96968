"""``aten.zeros`` / ``aten.ones`` of literal sizes: a constant's replicas are the constant, so
their axes grow with the channel space they meet (the size entry is rewritten) instead of
blocking it (T5's all-zero cross-attention position bias over the heads)."""

from __future__ import annotations

import torch

import fxgrow

C = 8


class BiasedByConstant(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, C), torch.nn.Linear(C, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = h + torch.zeros(1, C) + 0.5 * torch.ones(1, C)  # literal sizes
        return self.b(h)


def test_zeros_and_ones_of_literal_sizes_grow_with_the_channels():
    torch.manual_seed(0)
    model, x = BiasedByConstant().eval(), torch.randn(5, 4)
    analysis = fxgrow.analyze(model, x, frontend="export")
    group = next(
        g
        for g in analysis.groups
        if any(m.target == "a.weight" and m.axis == 0 for m in analysis.group(g.name).members)
    )
    assert group.widenable, group.blockers
    student = fxgrow.widen(model, x, factor=2, frontend="export", as_graph=True)
    assert tuple(student.get_submodule("a").weight.shape) == (2 * C, 4)
    assert fxgrow.growth_record(student).error.max_rel <= 1e-6
    other = torch.randn(5, 4)  # export captures static shapes: other values
    with torch.no_grad():
        assert torch.allclose(student(other), model(other), atol=1e-6)
