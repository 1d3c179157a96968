"""Channel groups: the user-facing view of the analysis's classes of channel spaces."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UnknownGroupError
from ..suggest import did_you_mean
from ..unique import unique_name
from .context import CONSUME, PRODUCE, AnalysisState
from .layout import Atom, Blocker, Fixed, Layout, Prod, SpaceTable, Zip


@dataclass(frozen=True)
class Member:
    """One place a group lives: a parameter/buffer axis, a module attribute or a graph
    constant.  ``offset`` is the group's first position on that axis, ``positions`` how many
    positions of the axis belong to it."""

    kind: str  # "parameter" | "buffer" | "attribute" | "constant"
    target: str
    axis: int | None
    role: str  # "produce" | "scale" | "consume" | "size"
    offset: int = 0
    positions: int = 0

    @property
    def module(self) -> str:
        """The module owning the parameter, buffer or attribute; "" for a graph constant."""
        if self.kind in ("parameter", "buffer", "attribute"):
            return self.target.rpartition(".")[0]
        return ""


@dataclass(frozen=True)
class ChannelGroup:
    """Channel spaces that share one replication map.

    ``width`` counts the group's positions on its naming member (the first producer), ``unit``
    is the width of the replicated space itself (they differ for grouped convs, heads, ...:
    ``width`` is always a multiple of ``unit``).  A group is widenable iff it has no blockers."""

    name: str
    width: int
    unit: int
    members: tuple[Member, ...]
    blockers: tuple[Blocker, ...]
    root: int = field(repr=False, compare=False, default=-1)
    produced: bool = field(repr=False, compare=False, default=True)  # some layer writes it

    @property
    def widenable(self) -> bool:
        """True iff nothing blocks the group."""
        return not self.blockers

    @property
    def boundary(self) -> bool:
        """Blocked only because it reaches the model's inputs or outputs."""
        return bool(self.blockers) and all(b.boundary for b in self.blockers)

    @property
    def fixed(self) -> bool:
        """Blocked only by the model's boundaries or by being tied to non-channel axes
        (spatial, batch): nothing about it is unknown to fxgrow."""
        return bool(self.blockers) and all(
            b.kind in ("boundary", "structure") for b in self.blockers
        )

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules with a member in the group, in member order, without repeats."""
        return tuple(dict.fromkeys(m.module for m in self.members if m.module))

    @property
    def multiplicity(self) -> int:
        """How many times the replicated space repeats on the naming member (``width // unit``)."""
        return self.width // self.unit


def _positions(sp: SpaceTable, layout: Layout) -> dict[int, list[int]]:
    """root -> [first offset, number of positions] over a layout."""
    found: dict[int, list[int]] = {}
    off = 0
    for seg in sp.resolve(layout):
        if isinstance(seg, Fixed):
            off += seg.size
        elif isinstance(seg, Atom):
            w = sp.width[seg.id]
            found.setdefault(sp.find(seg.id), [off, 0])[1] += w
            off += w
        elif isinstance(seg, Zip):
            g = len(seg.parts)
            for k, part in enumerate(seg.parts):
                for r, (first, count) in _positions(sp, part).items():
                    found.setdefault(r, [off + first * g + k, 0])[1] += count
            off += sp.size((seg,))
        else:
            assert isinstance(seg, Prod), seg
            so, si = sp.size(seg.outer), sp.size(seg.inner)
            for part, scale, mult in ((seg.outer, si, si), (seg.inner, 1, so)):
                for r, (first, count) in _positions(sp, part).items():
                    found.setdefault(r, [off + first * scale, 0])[1] += count * mult
            off += so * si
    return found


def build_groups(state: AnalysisState) -> list[ChannelGroup]:
    """One ChannelGroup per class of channel spaces with a parameter or buffer member (in the
    order members were found); a class no layer produces or reads is blocked as structure."""
    sp = state.spaces
    members: dict[int, list[Member]] = {}
    for pa in state.params.values():
        role = PRODUCE if PRODUCE in pa.roles else CONSUME if CONSUME in pa.roles else "scale"
        kind = "buffer" if pa.is_buffer else "parameter"
        for r, (off, count) in _positions(sp, pa.layout).items():
            members.setdefault(r, []).append(Member(kind, pa.target, pa.axis, role, off, count))
    for rule in state.attrs:
        for r in dict.fromkeys(r for lay in rule.layouts for r in sp.roots(lay)):
            if r in members:
                members[r].append(Member("attribute", f"{rule.module}.{rule.attr}", None, "size"))
    for arg_rule in state.args.values():
        for r in dict.fromkeys(r for lay in arg_rule.layouts for r in sp.roots(lay)):
            if r in members:
                members[r].append(Member("constant", arg_rule.node, None, "size"))
    unproduced = set()
    for r, ms in members.items():
        produced = any(m.role == PRODUCE for m in ms)
        read = any(m.role == CONSUME for m in ms)  # e.g. the model input read by a conv
        if not (produced or read):
            unproduced.add(r)
            if not sp.blockers[r]:
                sp.blockers[r].append(
                    Blocker(
                        ms[0].target,
                        "no layer produces this space (a "
                        "kernel axis, or an unused part of a tensor)",
                        "structure",
                    )
                )
    groups: list[ChannelGroup] = []
    used: set[str] = set()

    def structural(r: int) -> bool:
        b = sp.blockers[r]
        return r in unproduced or bool(b) and all(x.kind == "structure" for x in b)

    order = sorted(members, key=structural)  # stable: visible groups take plain names first
    for r in order:
        ms = members[r]
        name, width = _name(ms, state)
        name = unique_name(name, used, start=2, sep="#", bare=True)
        used.add(name)
        blockers = tuple(dict.fromkeys(sp.blockers[r]))
        groups.append(
            ChannelGroup(name, width, sp.width[r], tuple(ms), blockers, r, r not in unproduced)
        )
    position = {r: i for i, r in enumerate(members)}
    return sorted(groups, key=lambda g: position[g.root])


def _name(ms: list[Member], state: AnalysisState) -> tuple[str, int]:
    tensors = [m for m in ms if m.kind in ("parameter", "buffer")]
    producers = [m for m in tensors if m.role == PRODUCE]
    m = (producers or tensors)[0]
    assert m.axis is not None  # parameter and buffer members name their axis
    full = state.tensors[m.target].shape[m.axis]
    module = m.module or m.target
    name = module if producers else f"{module}[in]" if m.role == CONSUME else module
    if m.positions != full and producers:
        name = f"{module}[{m.offset}:{m.offset + m.positions}]"
    return name, m.positions


def find_group(groups: list[ChannelGroup], name: str) -> ChannelGroup:
    """A group by its name or by the name of a module with a member in it."""
    for g in groups:
        if g.name == name:
            return g
    owning = [g for g in groups if name in g.modules]
    producing = [
        g for g in owning if any(m.module == name and m.role == PRODUCE for m in g.members)
    ]
    for candidates in (owning, producing):
        if len(candidates) == 1:
            return candidates[0]
    if len(producing) > 1 or len(owning) > 1:
        options = ", ".join(g.name for g in (producing or owning))
        raise UnknownGroupError(
            f"module {name!r} belongs to several channel groups ({options}); name the group instead"
        )
    known = list(dict.fromkeys([g.name for g in groups] + [m for g in groups for m in g.modules]))
    hint = did_you_mean(name, known, otherwise="; `fxgrow.groups(model, inputs)` lists them")
    raise UnknownGroupError(f"no channel group or module named {name!r}{hint}")
