"""The widths a group may take: whole multiples of its unit, or of its width where a
normalisation over channels takes its statistics; which groups a normalisation holds fixed
(``_stuck_roots``) and which lie inside another (``_inner_factors``).

Invariant: a width is accepted only where some replication keeps the model's function."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from ..analysis import Analysis
from ..analysis.context import PRODUCE
from ..analysis.group import ChannelGroup
from ..analysis.layout import Prod, iter_segments
from ..errors import WidthError
from .index_map import expand
from .maps import ReplicationMap


def _uniform_roots(analysis: Analysis) -> set[int]:
    sp = analysis.state.spaces
    return {r for lay, _ in analysis.state.uniform for r in sp.roots(lay)}


def _stuck_roots(analysis: Analysis) -> dict[int, str]:
    """Widenable classes normalised (LayerNorm/GroupNorm, mean) together with positions that
    never grow -- fixed channels such as a model input concatenated in, or blocked groups:
    no replication keeps those statistics, so they keep their width.  Class root -> the
    normalising node."""
    sp = analysis.state.spaces
    free = {g.root for g in analysis.widenable}
    stuck: dict[int, str] = {}
    changed = True
    while changed:
        changed = False
        for lay, blocker in analysis.state.uniform:
            roots = [r for r in sp.roots(lay) if r in free and r not in stuck]
            if not roots:
                continue
            maps = {r: ReplicationMap.uniform(sp.width[r], 2 * sp.width[r]) for r in roots}
            counts = expand(sp, lay, maps).count
            if counts.numel() and not bool((counts == counts[0]).all()):
                stuck.update((r, blocker.node) for r in roots)
                changed = True
    return stuck


def _inner_factors(analysis: Analysis) -> set[int]:
    """Widenable classes that a producer lays out inside another widenable class (head dim
    inside heads, per-group channels inside groups).  ``factor`` grows only the outer one, so
    the axis grows by the factor and not by its square."""
    sp = analysis.state.spaces
    widenable = {g.root for g in analysis.widenable}
    inner: set[int] = set()

    for pa in analysis.state.params.values():
        if PRODUCE not in pa.roles:
            continue
        for seg in iter_segments(sp.resolve(pa.layout)):
            if isinstance(seg, Prod) and any(r in widenable for r in sp.roots(seg.outer)):
                inner.update(r for r in sp.roots(seg.inner) if r in widenable)
    return inner


def _check_width(g: ChannelGroup, new: Any, uniform: bool) -> int:
    if isinstance(new, bool) or not isinstance(new, Integral):
        raise WidthError(f"width for group {g.name!r} must be an integer, got {new!r}")
    new = int(new)
    if new < g.width:
        raise WidthError(
            f"group {g.name!r} has width {g.width}; fxgrow only grows, so the new "
            f"width must be >= {g.width} (got {new})"
        )
    step = g.width if uniform else g.multiplicity
    if new % step:
        lo, hi = new // step * step, (new // step + 1) * step
        why = (
            (
                "it passes through a normalisation over channels (LayerNorm/GroupNorm/RMSNorm), "
                "whose statistics survive only whole-multiple replication"
            )
            if uniform
            else f"its unit of {g.unit} channels repeats {g.multiplicity} times along {g.name}"
        )
        hint = " (or pass approximate=True to accept a measured approximation)" if uniform else ""
        raise WidthError(
            f"group {g.name!r} cannot be widened exactly to {new}: {why}. "
            f"Nearest exact widths: "
            f"{', '.join(str(v) for v in (lo, hi) if v >= g.width)}{hint}"
        )
    return new
