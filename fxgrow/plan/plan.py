"""Widening plans: plain, inspectable, serialisable descriptions of what will change."""
from __future__ import annotations

import json
import math
from fractions import Fraction
import zlib
from dataclasses import asdict, dataclass
from functools import cached_property
from numbers import Integral, Real
from typing import Any, Mapping

import torch

from ..analysis import Analysis
from ..analysis.context import PRODUCE
from ..analysis.group import ChannelGroup
from ..analysis.layout import Prod
from ..errors import BlockedGroupError, InputError, WidthError
from .index_map import expand


@dataclass(frozen=True)
class ReplicationMap:
    """g: [0, new) -> [0, old) with g(j) = j for j < old.  ``source[j]`` is g(j).

    ``fractions[j]`` (optional) is the share of unit g(j) that copy j passes on to consumers:
    the shares of one unit's copies sum to 1, so the student stays exact.  Without it the
    split is equal (1 / c(g(j))): replicas then get equal gradients and never diverge."""

    old: int
    new: int
    source: tuple[int, ...]
    fractions: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.source) != self.new or tuple(self.source[:self.old]) != tuple(range(self.old)):
            raise InputError("a replication map must keep its first `old` units in place")
        if any(not 0 <= s < self.old for s in self.source):
            raise InputError("a replication map may only point at existing units")
        if self.fractions is not None:
            if len(self.fractions) != self.new:
                raise InputError("a replication map needs one fraction per new unit")
            sums = [0.0] * self.old
            for s, f in zip(self.source, self.fractions):
                sums[s] += f
            if any(abs(t - 1.0) > 1e-9 for t in sums):
                raise InputError("the fractions of one unit's copies must sum to 1")

    @classmethod
    def random(cls, old: int, new: int, generator: torch.Generator,
               split: str = "equal") -> "ReplicationMap":
        extra = torch.randint(0, old, (new - old,), generator=generator).tolist()
        source = tuple(range(old)) + tuple(extra)
        return cls(old, new, source, _fractions(source, old, split, generator))

    @classmethod
    def uniform(cls, old: int, new: int, generator: torch.Generator | None = None,
                split: str = "equal") -> "ReplicationMap":
        """Every unit replicated new/old times: g(j) = j mod old."""
        source = tuple(j % old for j in range(new))
        return cls(old, new, source, _fractions(source, old, split, generator))

    @cached_property
    def _fraction_tensor(self) -> torch.Tensor:
        if self.fractions is not None:
            return torch.tensor(self.fractions, dtype=torch.float64)
        c = self.count_tensor().double()
        return 1.0 / c[self.source_tensor()]

    def fraction_tensor(self) -> torch.Tensor:
        """Per new unit, its share of the source unit (1/c for an equal split)."""
        return self._fraction_tensor

    @cached_property
    def counts(self) -> tuple[int, ...]:
        """c(i) = |{j : g(j) = i}|."""
        c = [0] * self.old
        for s in self.source:
            c[s] += 1
        return tuple(c)

    def source_tensor(self) -> torch.Tensor:
        return self._source_tensor

    @cached_property
    def _source_tensor(self) -> torch.Tensor:
        return torch.tensor(self.source, dtype=torch.long)

    def count_tensor(self) -> torch.Tensor:
        return self._count_tensor

    @cached_property
    def _count_tensor(self) -> torch.Tensor:
        return torch.tensor(self.counts, dtype=torch.long)


def _fractions(source: tuple[int, ...], old: int, split: str,
               generator: torch.Generator | None) -> tuple[float, ...] | None:
    """Shares for ``split="random"``: each unit's copies split it by random positive weights
    (between 1 and 3 before normalising, so no copy starts near zero) that sum to one."""
    if split == "equal":
        return None
    if split != "random":
        raise InputError(f"split must be 'equal' or 'random', got {split!r}")
    weights = (1.0 + 2.0 * torch.rand(len(source), generator=generator,
                                      dtype=torch.float64)).tolist()
    totals = [0.0] * old
    for s, w in zip(source, weights):
        totals[s] += w
    return tuple(w / totals[s] for s, w in zip(source, weights))


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

    def to_dict(self) -> dict:
        return {"seed": self.seed, "split": self.split, "noise": self.noise,
                "approximate": self.approximate, "init": self.init, "changes": [
            {"group": c.group, "old_width": c.old_width, "new_width": c.new_width,
             "init": c.init,
             "map": {"old": c.map.old, "new": c.map.new, "source": list(c.map.source),
                     "fractions": None if c.map.fractions is None else list(c.map.fractions)}}
            for c in self.changes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WidenPlan":
        def rmap(m):
            fr = m.get("fractions")
            return ReplicationMap(m["old"], m["new"], tuple(m["source"]),
                                  None if fr is None else tuple(fr))
        return cls(tuple(GroupChange(c["group"], c["old_width"], c["new_width"], rmap(c["map"]),
                                     c.get("init", "replicate"))
                         for c in d["changes"]), d.get("seed", 0), d.get("split", "equal"),
                   d.get("noise", 0.0), d.get("approximate", False),
                   d.get("init", "replicate"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> "WidenPlan":
        return cls.from_dict(json.loads(s))

    def __str__(self) -> str:
        if not self.changes:
            return "WidenPlan: no group changes"
        w = max(len(c.group) for c in self.changes)
        lines = [f"WidenPlan (seed {self.seed}): {len(self.changes)} groups"]
        lines += [f"  {c.group:<{w}}  {c.old_width:>6} -> {c.new_width}"
                  + ("" if c.init == "replicate" else f"  ({c.init})") for c in self.changes]
        return "\n".join(lines)


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

    def walk(layout) -> None:
        for seg in sp.resolve(layout):
            if isinstance(seg, Prod):
                if any(r in widenable for r in sp.roots(seg.outer)):
                    inner.update(r for r in sp.roots(seg.inner) if r in widenable)
                walk(seg.outer)
                walk(seg.inner)
    for pa in analysis.state.params.values():
        if PRODUCE in pa.roles:
            walk(pa.layout)
    return inner


def _check_width(g: ChannelGroup, new: Any, uniform: bool) -> int:
    if isinstance(new, bool) or not isinstance(new, Integral):
        raise WidthError(f"width for group {g.name!r} must be an integer, got {new!r}")
    new = int(new)
    if new < g.width:
        raise WidthError(f"group {g.name!r} has width {g.width}; fxgrow only grows, so the new "
                         f"width must be >= {g.width} (got {new})")
    step = g.width if uniform else g.multiplicity
    if new % step:
        lo, hi = new // step * step, (new // step + 1) * step
        why = ("it passes through a normalisation over channels (LayerNorm/GroupNorm/RMSNorm), "
               "whose statistics survive only whole-multiple replication") if uniform else \
            f"its unit of {g.unit} channels repeats {g.multiplicity} times along {g.name}"
        hint = " (or pass approximate=True to accept a measured approximation)" if uniform else ""
        raise WidthError(f"group {g.name!r} cannot be widened exactly to {new}: {why}. "
                         f"Nearest exact widths: "
                         f"{', '.join(str(v) for v in (lo, hi) if v >= g.width)}{hint}")
    return new


def make_plan(analysis: Analysis, widths: Mapping[str, int] | None = None,
              factor: float | None = None, seed: int = 0, split: str = "equal",
              noise: float = 0.0, approximate: bool = False,
              init: str = "replicate") -> WidenPlan:
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
    if factor is not None:
        if isinstance(factor, bool) or not isinstance(factor, Real) or not math.isfinite(factor) \
                or factor < 1:
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
    for name, new in (widths or {}).items():
        g = analysis.group(name)
        if not g.widenable:
            reasons = "; ".join(str(b) for b in g.blockers)
            others = [o.name for o in analysis.widenable if set(o.modules) & set(g.modules)]
            hint = (f" (its modules are also in the widenable group(s) "
                    f"{', '.join(repr(n) for n in others[:4])}: did you mean one of them?)"
                    if others else "")
            if init != "replicate" and "channel shuffle" in reasons:
                hint += (f"; init={init!r} does not lift this yet: such chains have exact "
                         f"students with fresh units only at some widths, and fxgrow cannot "
                         f"place their new units (docs/design.md, channel spaces)")
            raise BlockedGroupError(f"group {g.name!r} cannot be widened exactly: "
                                    f"{reasons}{hint}")
        if g.root in stuck and new != g.width:
            raise WidthError(f"group {g.name!r} cannot be widened exactly: {stuck[g.root]} "
                             f"normalises it together with channels that cannot grow (fixed "
                             f"or blocked), so no replication keeps its statistics; "
                             f"approximate=True widens it anyway and reports the error")
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
        gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(g.name.encode()))
                                            % (2 ** 63))
        fresh = init != "replicate" and g.root not in no_fresh
        if g.root in uniform_maps and unit % g.unit == 0:
            m = ReplicationMap.uniform(g.unit, unit, gen, "equal" if fresh else split)
        else:
            m = ReplicationMap.random(g.unit, unit, gen, "equal" if fresh else split)
        if fresh:  # old units keep their whole fan-out, new ones get none
            m = ReplicationMap(m.old, m.new, m.source,
                               (1.0,) * m.old + (0.0,) * (m.new - m.old))
        changes.append(GroupChange(g.name, g.width, unit * g.multiplicity, m,
                                   init if fresh else "replicate"))
    plan = WidenPlan(tuple(changes), seed, split, float(noise), bool(approximate), init)
    if not approximate:
        check_plan(analysis, plan)
    return plan


def _settle_growth(analysis: Analysis, targets: dict, pinned: set[int],
                   stuck: dict[int, str]) -> None:
    """Choose widths that keep every growth tie (the parts of a channel shuffle's interleave,
    equal chunks of it: see ``layout.Zip``).

    Each tie says that some layouts grow by the same number of positions; growth is linear in
    the groups' growths d_r, so the ties are a homogeneous linear system A d = 0.  Within one
    connected set of groups its solutions are d = t k for one integer vector k (ShuffleNet's
    stages): ``factor`` takes the smallest t that gives every group at least its target, and an
    explicit width fixes t.  Groups with k_r = 0, or sets whose only solution is d = 0, keep
    their width.  Anything else is a WidthError that says what to do."""
    sp = analysis.state.spaces
    by_root = {g.root: g for g in analysis.widenable}
    held = {r for r in by_root if r in stuck or r in _uniform_roots(analysis)}
    rows: list[dict[int, Fraction]] = []
    for layouts, _ in sp.ties:
        coefs = [_growth_coefficients(sp, lay, by_root, held) for lay in layouts]
        for c in coefs[1:]:
            row = dict(coefs[0])
            for r, v in c.items():
                row[r] = row.get(r, 0) - v
            row = {r: Fraction(v) for r, v in row.items() if v}
            if row:
                rows.append(row)
    import networkx as nx
    links = nx.Graph()
    for row in rows:
        first, *rest = row
        links.add_node(first)
        links.add_edges_from((first, r) for r in rest)
    for r in set(links) & held:
        targets.pop(r, None)
    for component in nx.connected_components(links):
        roots = sorted(component)
        basis = _nullspace([row for row in rows if next(iter(row)) in component], roots)
        if len(basis) > 1:
            _check_ties(analysis, targets, roots)
            continue
        k = basis[0] if basis else {r: 0 for r in roots}
        if max(k.values()) <= 0:
            k = {r: -v for r, v in k.items()}
        if min(k.values()) < 0:  # mixed signs: no group may grow
            k = {r: 0 for r in roots}
        named = [r for r in roots if r in pinned]
        if named:
            ts = set()
            for r in named:
                d = targets[r][1] - by_root[r].unit if r in targets else 0
                if (k[r] == 0 and d) or (k[r] and d % k[r]):
                    step = f"steps of {k[r]} units" if k[r] else "no steps at all"
                    raise WidthError(
                        f"group {by_root[r].name!r} is interleaved by channel shuffles with "
                        f"{len(roots) - 1} other groups that must grow in proportion; it can "
                        f"grow only in {step} (got +{d})")
                if k[r]:
                    ts.add(d // k[r])
            if len(ts) > 1:
                raise WidthError("groups interleaved by channel shuffles must grow in "
                                 "proportion; the named widths disagree: "
                                 + ", ".join(by_root[r].name for r in named))
            t = ts.pop() if ts else 0
        else:
            need = [math.ceil((targets[r][1] - by_root[r].unit) / k[r])
                    for r in roots if r in targets and k[r] > 0]
            t = max(need, default=0)
        for r in roots:
            d = k[r] * t
            if d:
                targets[r] = (by_root[r], by_root[r].unit + d)
            else:
                targets.pop(r, None)


def _growth_coefficients(sp, layout, by_root: dict, held: set[int]) -> dict[int, int]:
    """How many positions ``layout`` gains per unit a widenable group gains (linear)."""
    out = {}
    for r in sp.roots(layout):
        if r not in by_root or r in held:
            continue
        w = sp.width[r]
        one = sp.new_size(layout, {r: w + 1}) - sp.size(layout)
        two = sp.new_size(layout, {r: w + 2}) - sp.size(layout)
        if two != 2 * one:
            raise WidthError(f"group {by_root[r].name!r} is interleaved by a channel shuffle "
                             f"inside a product layout; fxgrow cannot size it")
        out[r] = one
    return out


def _nullspace(rows: list[dict[int, Fraction]], roots: list[int]) -> list[dict[int, Fraction]]:
    """A basis of {d : row . d = 0 for every row}, by exact Gauss-Jordan elimination; each
    vector is scaled to coprime integers."""
    col = {r: j for j, r in enumerate(roots)}
    m = [[Fraction(0)] * len(roots) for _ in rows]
    for i, row in enumerate(rows):
        for r, v in row.items():
            m[i][col[r]] = v
    pivots: list[int] = []
    i = 0
    for j in range(len(roots)):
        p = next((q for q in range(i, len(m)) if m[q][j] != 0), None)
        if p is None:
            continue
        m[i], m[p] = m[p], m[i]
        m[i] = [v / m[i][j] for v in m[i]]
        for q in range(len(m)):
            if q != i and m[q][j] != 0:
                f = m[q][j]
                m[q] = [a - f * b for a, b in zip(m[q], m[i])]
        pivots.append(j)
        i += 1
    basis = []
    for j in (j for j in range(len(roots)) if j not in pivots):
        v = [Fraction(0)] * len(roots)
        v[j] = Fraction(1)
        for q, pj in enumerate(pivots):
            v[pj] = -m[q][j]
        scale = math.lcm(*(x.denominator for x in v))
        ints = [int(x * scale) for x in v]
        g = math.gcd(*ints) or 1
        basis.append({r: ints[col[r]] // g for r in roots})
    return basis


def _check_ties(analysis: Analysis, targets: dict, roots: list[int]) -> None:
    sp = analysis.state.spaces
    widths = {r: unit for r, (_, unit) in targets.items()}
    for layouts, blocker in sp.ties:
        if len({sp.growth(lay, widths) for lay in layouts}) > 1 and \
                any(r in roots for lay in layouts for r in sp.roots(lay)):
            raise WidthError(f"{blocker.node} ({blocker.reason}) needs the channels it "
                             f"interleaves or chunks to grow alike, and fxgrow cannot choose "
                             f"the widths here; give every group involved an explicit width")


def root_maps(analysis: Analysis, plan: WidenPlan) -> dict[int, ReplicationMap]:
    """Class root -> map, validating the plan against the analysis."""
    by_name = {g.name: g for g in analysis.groups}
    maps = {}
    for c in plan.changes:
        g = by_name.get(c.group)
        if g is None:
            raise InputError(f"the plan names group {c.group!r}, which this model does not have")
        if not g.widenable:
            raise BlockedGroupError(f"group {g.name!r} cannot be widened exactly: "
                                    + "; ".join(str(b) for b in g.blockers))
        if c.map.old != g.unit:
            raise InputError(f"the plan's map for {g.name!r} starts from {c.map.old} units; "
                             f"the group has {g.unit}")
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
            involved = ", ".join(sorted({repr(names.get(r, r)) for lay in layouts
                                         for r in sp.roots(lay) if r in maps}))
            raise WidthError(f"{blocker.node} ({blocker.reason}) needs the channels it "
                             f"interleaves or chunks to grow alike; the plan grows them by "
                             f"{sorted(grown)} (groups {involved})")
    for lay, blocker in analysis.state.uniform:
        roots = [r for r in sp.roots(lay) if r in maps]
        if not roots:
            continue
        counts = expand(sp, lay, maps).count
        if counts.numel() and not bool((counts == counts[0]).all()):
            involved = ", ".join(repr(names.get(r, r)) for r in sp.roots(lay))
            raise WidthError(f"{blocker.node} normalises over groups {involved}: they must all "
                             f"grow by the same whole factor (every unit replicated equally)")
