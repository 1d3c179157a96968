"""fx against torch.export: do both front ends find the same channel groups?

A group is compared by what it is on the model's own tensors: its width and unit, whether it is
widenable, and its parameter/buffer members (name, axis, role, positions) -- the names are the
model's module paths under both front ends.  Module attributes and graph constants differ by
construction (fx rewrites module attributes, export graph arguments) and are left out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

Signature = tuple
"""(width, unit, widenable, sorted parameter/buffer members) of one group."""


def signature(group: Any) -> Signature:
    """A group's signature: what it is on the model's own tensors (the same under both front
    ends)."""
    members = sorted(
        (m.kind, m.target, m.axis, m.role, m.offset, m.positions)
        for m in group.members
        if m.kind in ("parameter", "buffer")
    )
    return (group.width, group.unit, group.widenable, tuple(members))


@dataclass(frozen=True)
class FrontendDiff:
    """Groups under each front end and the signatures only one of them has."""

    fx_groups: int
    export_groups: int
    fx_widenable: int
    export_widenable: int
    only_fx: tuple[str, ...]
    only_export: tuple[str, ...]

    @property
    def equal(self) -> bool:
        """True when both front ends find the same group signatures."""
        return not self.only_fx and not self.only_export

    def describe(self, limit: int = 3) -> str:
        """One line: the group counts, and up to ``limit`` names found by only one front end."""
        if self.equal:
            return f"{self.fx_groups} groups, {self.fx_widenable} widenable: equal"
        return (
            f"fx {self.fx_groups} groups ({self.fx_widenable} widenable), export "
            f"{self.export_groups} ({self.export_widenable}); only fx: "
            f"{', '.join(self.only_fx[:limit]) or '-'}; only export: "
            f"{', '.join(self.only_export[:limit]) or '-'}"
        )


def _label(group: Any) -> str:
    state = (
        "widenable"
        if group.widenable
        else (str(group.blockers[0]) if group.blockers else "blocked")
    )
    return f"{group.name} [{group.width}] {state}"


def compare_frontends(model: torch.nn.Module, inputs: Any, **options: Any) -> FrontendDiff:
    """Analyse ``model`` with ``frontend="fx"`` and ``frontend="export"`` and compare groups."""
    import fxgrow

    fx = fxgrow.analyze(model, inputs, frontend="fx", **options).groups
    ex = fxgrow.analyze(model, inputs, frontend="export", **options).groups
    left = Counter(signature(g) for g in fx)
    right = Counter(signature(g) for g in ex)
    only_fx = tuple(_label(g) for g in fx if (left - right)[signature(g)] > 0)
    only_ex = tuple(_label(g) for g in ex if (right - left)[signature(g)] > 0)
    return FrontendDiff(
        len(fx),
        len(ex),
        sum(g.widenable for g in fx),
        sum(g.widenable for g in ex),
        only_fx,
        only_ex,
    )
