"""Widening plans: plain, inspectable, serialisable descriptions of what will change."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import torch

from ..analysis import Analysis
from ..analysis.group import ChannelGroup
from ..errors import BlockedGroupError, InputError, WidthError
from .checks import check_plan, root_maps  # noqa: F401
from .maps import ReplicationMap, _fractions  # noqa: F401
from .placement import Placement, interleave_only, place
from .ties import _check_ties, _growth_coefficients, _nullspace, _settle_growth  # noqa: F401
from .widths import _check_width, _inner_factors, _stuck_roots, _uniform_roots


@dataclass(frozen=True)
class GroupChange:
    """One group's new width.  ``map`` acts on the group's unit (its replicated space)."""

    group: str
    old_width: int
    new_width: int
    map: ReplicationMap
    init: str = "replicate"  # how the new units start: see plan/init.py


@dataclass(frozen=True)
class WidenPlan:
    """What ``widen`` will do: which groups grow, to what width, with which maps."""

    changes: tuple[GroupChange, ...]
    seed: int = 0
    split: str = "equal"
    noise: float = 0.0
    approximate: bool = False  # normalised groups may grow by non-whole factors (not exact)
    init: str = "replicate"  # what was asked for; each change records what it got
    placements: tuple[Placement, ...] = ()  # fresh units placed through shuffle chains
    # the Analysis it was made from (fxgrow.plan), so that widen(plan) need not analyse again;
    # not part of the plan's value: not compared, not serialised
    analysis: Analysis | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        """The plan as a JSON-ready dict; ``from_dict`` reads it back to an equal plan."""
        return {
            "seed": self.seed,
            "split": self.split,
            "noise": self.noise,
            "approximate": self.approximate,
            "init": self.init,
            "changes": [
                {
                    "group": c.group,
                    "old_width": c.old_width,
                    "new_width": c.new_width,
                    "init": c.init,
                    "map": {
                        "old": c.map.old,
                        "new": c.map.new,
                        "source": list(c.map.source),
                        "fractions": None if c.map.fractions is None else list(c.map.fractions),
                    },
                }
                for c in self.changes
            ],
            "placements": [
                {"node": p.node, "old": p.old, "new": p.new, "source": list(p.source)}
                for p in self.placements
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WidenPlan:
        """The plan ``to_dict`` wrote (older dicts: missing options take their defaults); a
        dict of another form is an :class:`InputError`."""
        try:
            return cls._from_dict(d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(
                f"malformed plan ({type(e).__name__}: {e}); give the dict or JSON that "
                f"WidenPlan.to_dict / to_json wrote"
            ) from e

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> WidenPlan:

        def rmap(m):
            fr = m.get("fractions")
            return ReplicationMap(
                m["old"], m["new"], tuple(m["source"]), None if fr is None else tuple(fr)
            )

        return cls(
            tuple(
                GroupChange(
                    c["group"],
                    c["old_width"],
                    c["new_width"],
                    rmap(c["map"]),
                    c.get("init", "replicate"),
                )
                for c in d["changes"]
            ),
            d.get("seed", 0),
            d.get("split", "equal"),
            d.get("noise", 0.0),
            d.get("approximate", False),
            d.get("init", "replicate"),
            tuple(
                Placement(p["node"], p["old"], p["new"], tuple(p["source"]))
                for p in d.get("placements", ())
            ),
        )

    def to_json(self) -> str:
        """The plan as a JSON string (see ``to_dict``)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> WidenPlan:
        """The plan ``to_json`` wrote."""
        return cls.from_dict(json.loads(s))

    def __str__(self) -> str:
        if not self.changes and not self.placements:
            return "WidenPlan: no group changes"
        w = max(len(c.group) for c in self.changes) if self.changes else 0
        lines = [f"WidenPlan (seed {self.seed}): {len(self.changes)} groups"]
        lines += [
            f"  {c.group:<{w}}  {c.old_width:>6} -> {c.new_width}"
            + ("" if c.init == "replicate" else f"  ({c.init})")
            for c in self.changes
        ]
        lines += [f"  {p.node}  {p.old:>6} -> {p.new}  (zero, placed)" for p in self.placements]
        return "\n".join(lines)


def make_plan(
    analysis: Analysis,
    widths: Mapping[str, int] | None = None,
    factor: float | None = None,
    seed: int = 0,
    split: str = "equal",
    noise: float = 0.0,
    approximate: bool = False,
    init: str = "replicate",
) -> WidenPlan:
    """Choose new widths and replication maps.

    ``factor`` widens every widenable group (rounded up to what the group allows: a whole
    multiple of its unit, or of its width when normalised over channels); ``widths`` names
    groups (or their modules) and overrides the factor for them.  ``split="random"`` splits
    each replicated unit's outgoing weights by random shares (still exact; the copies then
    learn apart); ``noise`` > 0 adds the paper's noise to the copies (not exact).
    ``approximate=True`` lets groups under a channel normalisation grow by any width (their
    statistics then change: the student is not exact, and ``widen`` reports the error).
    ``init="zero"`` / ``"gradmax"``: new units get their own fan-in and a zero fan-out, in
    every group where that is exact (``plan/init.py``); the others replicate."""
    from .init import check_init, fresh_init_blockers

    check_init(init)
    if split not in ("equal", "random"):
        raise InputError(f"split must be 'equal' or 'random', got {split!r}")
    if isinstance(noise, bool) or not isinstance(noise, Real) or noise < 0:
        raise InputError(f"noise must be a number >= 0, got {noise!r}")
    if widths is None and factor is None:
        raise InputError("give widths={group or module: new width} or factor=... to widen")
    if factor is not None and (
        isinstance(factor, bool)
        or not isinstance(factor, Real)
        or not math.isfinite(factor)
        or factor < 1
    ):
        raise WidthError(f"factor must be a number >= 1, got {factor!r}")
    if widths is not None and not isinstance(widths, Mapping):
        raise InputError("widths must be a mapping {group or module name: new width}")
    uniform = set() if approximate else _uniform_roots(analysis)
    uniform_maps = _uniform_roots(analysis)
    targets: dict[int, tuple[ChannelGroup, int]] = {}
    stuck = {} if approximate else _stuck_roots(analysis)
    if factor is not None:
        inner = _inner_factors(analysis)
        for g in analysis.widenable:
            if g.root in inner or g.root in stuck:
                continue
            if g.root in uniform:
                unit = g.unit * math.ceil(factor - 1e-12)
            else:
                unit = math.ceil(g.unit * factor - 1e-9)
            if unit > g.unit:
                targets[g.root] = (g, unit)
    placed: dict[frozenset, tuple[ChannelGroup, int]] = {}  # chain -> (group, growth)
    for name, new in (widths or {}).items():
        g = analysis.group(name)
        chain = interleave_only(analysis, g.root) if init == "zero" and not g.widenable else None
        if chain:  # held by its shuffles alone: fresh units may be placed through them
            new = _check_width(g, new, False)
            _, before = placed.get(chain, (g, 0))
            placed[chain] = (g, max(before, new - g.width))
            continue
        if not g.widenable:
            reasons = "; ".join(str(b) for b in g.blockers)
            others = [o.name for o in analysis.widenable if set(o.modules) & set(g.modules)]
            hint = (
                f" (its modules are also in the widenable group(s) "
                f"{', '.join(repr(n) for n in others[:4])}: did you mean one of them?)"
                if others
                else ""
            )
            tied = any(b in analysis.state.spaces.tie_causes for b in g.blockers)
            if init != "replicate" and tied:  # held by equal-growth ties (shuffle chains)
                hint += (
                    "; init='zero' places fresh units through a channel shuffle chain "
                    "only when nothing but its interleaves holds it"
                    if init == "zero"
                    else f"; init={init!r} does not lift this: only init='zero' places "
                    f"fresh units through channel shuffle chains (docs/design.md)"
                )
            raise BlockedGroupError(f"group {g.name!r} cannot be widened exactly: {reasons}{hint}")
        if g.root in stuck and new != g.width:
            raise WidthError(
                f"group {g.name!r} cannot be widened exactly: {stuck[g.root]} "
                f"normalises it together with channels that cannot grow (fixed "
                f"or blocked), so no replication keeps its statistics; "
                f"approximate=True widens it anyway and reports the error"
            )
        new = _check_width(g, new, g.root in uniform)
        if new == g.width:
            targets.pop(g.root, None)
        else:
            targets[g.root] = (g, new // g.multiplicity)
    if analysis.state.spaces.ties:
        pinned = {analysis.group(name).root for name in (widths or {})}
        _settle_growth(analysis, targets, pinned, stuck)
    changes = []
    no_fresh = fresh_init_blockers(analysis) if init != "replicate" else {}
    for g, unit in sorted(targets.values(), key=lambda t: analysis.groups.index(t[0])):
        gen = torch.Generator().manual_seed(
            (seed * 1_000_003 + zlib.crc32(g.name.encode())) % (2**63)
        )
        fresh = init != "replicate" and g.root not in no_fresh
        if g.root in uniform_maps and unit % g.unit == 0:
            m = ReplicationMap.uniform(g.unit, unit, gen, "equal" if fresh else split)
        else:
            m = ReplicationMap.random(g.unit, unit, gen, "equal" if fresh else split)
        if fresh:  # old units keep their whole fan-out, new ones get none
            m = ReplicationMap(m.old, m.new, m.source, (1.0,) * m.old + (0.0,) * (m.new - m.old))
        changes.append(
            GroupChange(g.name, g.width, unit * g.multiplicity, m, init if fresh else "replicate")
        )
    placements = _placements(analysis, placed, {t[0].root for t in targets.values()}, no_fresh)
    plan = WidenPlan(tuple(changes), seed, split, float(noise), bool(approximate), init, placements)
    if not approximate:
        check_plan(analysis, plan)
    return plan


def _placements(
    analysis: Analysis,
    placed: dict[frozenset, tuple[ChannelGroup, int]],
    grown: set[int],
    no_fresh: dict[int, str],
) -> tuple[Placement, ...]:
    """Fresh units placed through each named shuffle chain (``planning/placement.py``)."""
    out: list[Placement] = []
    for chain, (g, growth) in placed.items():
        if growth <= 0:
            continue
        clash = chain & grown
        why = next((no_fresh[r] for r in chain if r in no_fresh), None)
        if clash or why:
            raise WidthError(
                f"group {g.name!r} is in a channel shuffle chain that init='zero' grows as "
                f"a whole, by placing fresh units: "
                + (why or "another change of this plan widens part of it; name only the chain")
            )
        try:
            out.extend(place(analysis, g.root, growth))
        except WidthError as e:
            raise WidthError(f"group {g.name!r}: {e}") from e
    return tuple(out)
