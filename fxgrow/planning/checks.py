"""Checking a plan against its analysis: every change names a widenable group of this model with
a map of the right size, and every normalisation over channels still sees whole-multiple
replication.

Invariant: a plan that passes ``check_plan`` rewrites into an exact student (unless it was made
with ``approximate=True``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..analysis import Analysis
from ..errors import BlockedGroupError, InputError, WidthError
from .index_map import expand
from .maps import ReplicationMap

if TYPE_CHECKING:
    from .plan import WidenPlan


def root_maps(analysis: Analysis, plan: WidenPlan) -> dict[int, ReplicationMap]:
    """Class root -> map, validating the plan against the analysis."""
    by_name = {g.name: g for g in analysis.groups}
    maps = {}
    for c in plan.changes:
        g = by_name.get(c.group)
        if g is None:
            raise InputError(f"the plan names group {c.group!r}, which this model does not have")
        if not g.widenable:
            raise BlockedGroupError(
                f"group {g.name!r} cannot be widened exactly: "
                + "; ".join(str(b) for b in g.blockers)
            )
        if c.map.old != g.unit:
            raise InputError(
                f"the plan's map for {g.name!r} starts from {c.map.old} units; "
                f"the group has {g.unit}"
            )
        maps[g.root] = c.map
    return maps


def check_plan(analysis: Analysis, plan: WidenPlan) -> None:
    """Every normalised axis must be replicated uniformly (LayerNorm/GroupNorm statistics)."""
    maps = root_maps(analysis, plan)
    sp = analysis.state.spaces
    names = {g.root: g.name for g in analysis.groups}
    widths = {r: m.new for r, m in maps.items()}
    for layouts, blocker in sp.ties:
        grown = {sp.growth(lay, widths) for lay in layouts}
        if len(grown) > 1:
            involved = ", ".join(
                sorted(
                    {repr(names.get(r, r)) for lay in layouts for r in sp.roots(lay) if r in maps}
                )
            )
            raise WidthError(
                f"{blocker.node} ({blocker.reason}) needs the channels it "
                f"interleaves or chunks to grow alike; the plan grows them by "
                f"{sorted(grown)} (groups {involved})"
            )
    for lay, blocker in analysis.state.uniform:
        roots = [r for r in sp.roots(lay) if r in maps]
        if not roots:
            continue
        counts = expand(sp, lay, maps).count
        if counts.numel() and not bool((counts == counts[0]).all()):
            involved = ", ".join(repr(names.get(r, r)) for r in sp.roots(lay))
            raise WidthError(
                f"{blocker.node} normalises over groups {involved}: they must all "
                f"grow by the same whole factor (every unit replicated equally)"
            )
