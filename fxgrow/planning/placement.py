"""Fresh units placed through a channel-shuffle chain (``init="zero"`` only).

Replication grows a channel space by appending copies of its units, so the parts of every
interleave must grow alike; a ShuffleNet stage's trunk admits no such student
(tests/test_rules.py).  Fresh units (own fan-in, zero fan-out) need no copy: a student exists
as soon as every teacher unit can keep one student position that travels the chain as the
teacher's unit does, every other position fresh (tests/test_shuffle_fresh.py: the closed form).

A label run (``labels.py``) at the student's widths says which trunk tensors each student
position reaches: its *destiny*.  Each teacher unit takes the first free student position of
its producer with its own destiny.  The student is then described per producer by a
:class:`Placement`, and every parameter axis of the chain by the student's label vector of
the tensor it reads or writes.

Invariant (checked by :func:`placed_student` for any plan): every trunk tensor of the student
carries exactly the teacher's units, each once, plus fresh positions; consumer columns of fresh
positions are zero, so the student computes what the teacher did."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..analysis import Analysis
from ..analysis.context import CONSUME, PRODUCE
from ..analysis.layout import Layout, SpaceTable
from ..analysis.values import TensorInfo
from ..errors import InputError, WidthError
from .index_map import Expansion
from .labels import FRESH, LabelRun, code, component, run, signature, unit_of


def _integer(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Placement:
    """One producer of the chain (fx node ``node``, ``old`` units) in the student: ``source[j]``
    is the teacher unit at student position j, or -1 for a fresh unit."""

    node: str
    old: int
    new: int
    source: tuple[int, ...]

    def __post_init__(self) -> None:
        if not all(_integer(v) for v in (self.old, self.new, *self.source)):
            raise InputError(f"the placement of {self.node!r} holds a value that is not an integer")
        kept = sorted(s for s in self.source if s >= 0)
        if len(self.source) != self.new or kept != list(range(self.old)):
            raise InputError(
                f"the placement of {self.node!r} must list {self.new} positions holding "
                f"each of its {self.old} units once (-1 for a fresh unit)"
            )
        if any(s < -1 for s in self.source):
            raise InputError(f"the placement of {self.node!r} has a source below -1")


class PlacedStudent(NamedTuple):
    """The chain's student: its class roots, each parameter axis's expansion (fresh
    positions: index 0, share 0), the fresh positions of each axis, and the student's size
    of every channel layout of the chain (by signature)."""

    roots: frozenset[int]
    axes: dict[tuple[str, int], Expansion]
    fresh: dict[tuple[str, int], torch.Tensor]
    sizes: dict[tuple, int]

    def touches(self, sp: SpaceTable, layout: Layout) -> bool:
        """Whether ``layout`` holds a class of the chain."""
        return bool(self.roots.intersection(sp.roots(layout)))

    def size(self, sp, layout) -> int:
        """The student's size of a layout of the chain."""
        n = self.sizes.get(signature(sp, layout))
        if n is None:
            raise WidthError(
                "a size along a channel shuffle chain that fxgrow placed fresh units in "
                "is not one of the chain's tensors; this chain cannot be widened by placement"
            )
        return n


def interleave_only(analysis: Analysis, root: int) -> frozenset[int]:
    """The chain of ``root`` if every class in it is held only by the growth ties of its
    interleaves (so fresh units may lift them), else the empty set."""
    comp = component(analysis, root)
    sp = analysis.state.spaces
    if not comp or any(b not in sp.tie_causes for r in comp for b in sp.blockers_of(r)):
        return frozenset()
    return comp


def place(analysis: Analysis, root: int, growth: int, limit: int = 4) -> tuple[Placement, ...]:
    """The narrowest student of ``root``'s chain in which every producer grows by the same
    number of units, at least ``growth``, with every teacher unit kept and the rest fresh.
    Growths from ``growth`` to ``growth`` plus ``limit - 1`` times the widest producer are
    tried.  A chain that reaches a model output the analysis lets grow is refused: the
    student's output positions are recorded for replicated units only."""
    comp = interleave_only(analysis, root)
    state = analysis.state
    if state.grow_outputs and any(
        r in comp for info in state.outputs for lay in info.layouts for r in state.spaces.roots(lay)
    ):
        raise WidthError(
            "this channel shuffle chain reaches a model output, and fresh units placed through "
            "it would move the teacher's outputs: keep the outputs fixed (outputs='fixed')"
        )
    try:
        teacher = run(analysis, comp, lambda name, k, w: code(k, torch.arange(w)))
    except RuntimeError as e:  # e.g. a view with constant spatial sizes
        raise WidthError(
            f"fxgrow cannot follow this channel shuffle chain's data movement to place "
            f"fresh units in it ({e})"
        ) from e
    if not teacher.producers:
        raise WidthError("this channel shuffle chain has no producer to place fresh units in")
    top = max(teacher.producers.values())
    first, last = max(1, growth), max(1, growth) + (limit - 1) * top
    for delta in range(first, last + 1):
        try:
            student = run(analysis, comp, functools.partial(_wider_labels, delta))
        except (WidthError, RuntimeError):  # these widths do not fit the chain's ops
            continue
        placements = _match(teacher, student)
        if placements is not None:
            placed_student(analysis, placements)  # the rewrite's checks, at plan time
            return placements
    raise WidthError(
        f"no student of this channel shuffle chain {first} to {last} units wider per producer "
        f"keeps every teacher unit on its path (the shuffles send fresh positions elsewhere)"
    )


def _destinies(r: LabelRun) -> dict[float, frozenset[str]]:
    where: dict[float, set[str]] = {}
    for name, labels in r.members.items():
        for label in labels:
            where.setdefault(label, set()).add(name)
    return {label: frozenset(names) for label, names in where.items()}


def _match(teacher: LabelRun, student: LabelRun) -> tuple[Placement, ...] | None:
    """Each teacher unit at the first free student position of its producer that reaches
    exactly the tensors the unit reaches; None if some unit finds none."""
    t, s = _destinies(teacher), _destinies(student)
    out = []
    for k, (name, old) in enumerate(teacher.producers.items()):
        new = student.producers[name]
        free: dict[frozenset, list[int]] = {}
        for j in range(new):
            free.setdefault(s[float(code(k, torch.tensor([j]))[0])], []).append(j)
        source = [-1] * new
        for i in range(old):
            spots = free.get(t[float(code(k, torch.tensor([i]))[0])])
            if not spots:
                return None
            source[spots.pop(0)] = i
        out.append(Placement(name, old, new, tuple(source)))
    return tuple(out)


def _wider_labels(delta: int, name: str, k: int, w: int) -> torch.Tensor:
    """Labels of a producer ``delta`` units wider than the teacher's ``w``."""
    return code(k, torch.arange(w + delta))


def placed_student(analysis: Analysis, placements: tuple[Placement, ...]) -> PlacedStudent | None:
    """The student the placements describe (None without placements), checked: every
    tensor of the chain carries the teacher's units, each once."""
    if not placements:
        return None
    state = analysis.state
    sp = state.spaces
    linked: set[int] = set()
    for p in placements:
        node = next((n for n in state.gm.graph.nodes if n.name == p.node), None)
        info = state.values.get(node) if node is not None else None
        if not isinstance(info, TensorInfo):
            raise InputError(f"the plan places units of {p.node!r}, not a tensor of this model")
        for lay in info.layouts:
            for r in sp.roots(lay):
                linked |= interleave_only(analysis, r)
    comp = frozenset(linked)
    by_node = {p.node: p for p in placements}

    def placed(name: str, k: int, w: int) -> torch.Tensor:
        p = by_node.get(name)
        if p is None or p.old != w:
            raise WidthError(
                f"the plan does not place the {w} units of {name!r}, a producer of the "
                f"channel shuffle chain it widens"
            )
        return code(k, torch.tensor(p.source))

    teacher = run(analysis, comp, lambda name, k, w: code(k, torch.arange(w)))
    student = run(analysis, comp, placed)
    if set(student.producers) != set(by_node):
        raise WidthError(
            f"the plan places units of {sorted(set(by_node) - set(student.producers))}, "
            f"which make no channel shuffle chain that fresh units may be placed in"
        )
    _check(teacher, student)
    named: dict[tuple, str] = {}
    for name, sig in student.signatures.items():
        named.setdefault(sig, name)
    written = {signature(sp, pa.layout) for pa in state.params.values() if PRODUCE in pa.roles}
    for name in student.producers:
        if student.signatures.get(name) not in written:
            raise WidthError(
                f"{name} makes channels of a channel shuffle chain without a parameter "
                f"that writes them: fresh units there would have no fan-in"
            )
    axes, fresh = {}, {}
    for pa in state.params.values():
        roots = set(sp.roots(pa.layout))
        if not roots & comp:
            continue
        chain_node = named.get(signature(sp, pa.layout))
        if chain_node is None or not roots <= comp:
            raise WidthError(
                f"{pa.target} (axis {pa.axis}) reads or writes a channel shuffle chain in a "
                f"layout fxgrow cannot follow; the chain cannot be widened by placement"
            )
        where = {float(u): i for i, u in enumerate(teacher.vectors[chain_node].tolist())}
        labels = student.vectors[chain_node].tolist()
        is_fresh = torch.tensor([u == FRESH for u in labels])
        index = torch.tensor([where.get(float(u), 0) for u in labels], dtype=torch.long)
        share = (~is_fresh).to(torch.float64)
        if CONSUME not in pa.roles:
            share = torch.ones_like(share)
        axes[(pa.target, pa.axis)] = Expansion(index, share, torch.ones_like(index))
        fresh[(pa.target, pa.axis)] = is_fresh
    return PlacedStudent(comp, axes, fresh, student.sizes)


def _check(teacher: LabelRun, student: LabelRun) -> None:
    for name, units in teacher.members.items():
        got = student.vectors.get(name)
        kept = student.members.get(name, frozenset()) - {FRESH}
        if kept != units or (
            got is not None and int((got != FRESH).sum()) != len(teacher.vectors[name])
        ):
            missing = sorted(unit_of(u) for u in units - kept)[:3]
            raise WidthError(
                f"the plan's placement does not keep the teacher's units in {name} "
                f"(missing or misplaced: {missing}); it would not compute what the teacher did"
            )
