"""Channel spaces and axis layouts.

Every tensor axis the analysis sees has a *layout*: a tuple of segments laid end to end.

* ``Fixed(size, cause)`` -- positions that never change (batch, spatial, a model input's channels).
* ``Atom(id)`` -- the units of one channel space.  Atoms are united (union-find) when they must
  share one replication map, and *refined* when an op looks inside them:
  split at an offset (cat, split, slice) or factored as a row-major product ``a x b``
  (reshape into heads, flatten of channel x spatial).  Refining an atom refines every atom of its
  class the same way, and the corresponding pieces are united, so the invariant holds:
  **all atoms of one class have the same width and the same structure, and share one map**.
* ``Prod(outer, inner)`` -- index ``o * size(inner) + i``: a merged axis.  Resolved layouts are
  normalised so that ``outer`` is a single Atom or Fixed segment.
* ``Zip(parts)`` -- parts interleaved round-robin, as a channel shuffle lays out the rows it
  transposes: position ``p g + k`` is unit ``p`` of part ``k`` (g parts).  Unlike a product, the
  parts keep *their own* maps.  Part sizes are balanced (non-increasing, the first at most one
  longer than the last); a cut may leave the parts of a piece one unit apart.  A Zip stays a
  Zip in the student only if all its parts grow by the same number of units: every Zip records
  that as a *growth tie* (``SpaceTable.ties``), which the plan honours.
* ``Stack(rows)`` -- transient: the rows of an axis that a channel shuffle's first reshape
  splits off, kept apart (``merge`` turns them into a Zip, or back into the plain layout).

A class that meets a Fixed segment, or that an op cannot handle, is *blocked*: it keeps its width.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from math import prod
from typing import NamedTuple

from ..errors import StructureError


@dataclass(frozen=True)
class Blocker:
    """Why a channel group cannot change width: the fx node and the reason; a boundary
    blocker's ``side`` says which one ("input" or "output" of the model)."""

    node: str
    reason: str
    kind: str = "op"  # "boundary" (model input/output), "structure" (not a channel axis), "op"
    side: str | None = None  # "input" | "output" for a boundary, else None

    @property
    def boundary(self) -> bool:
        """True when the blocker is the model's input or output."""
        return self.kind == "boundary"

    @property
    def label(self) -> str:
        """What fixes the group, in one word: the boundary's side, else the kind."""
        return self.side or self.kind

    def __str__(self) -> str:
        return f"{self.node}: {self.reason}"


@dataclass(frozen=True)
class Fixed:
    """``size`` positions that never change, fixed by ``cause``."""

    size: int
    cause: Blocker


@dataclass(frozen=True)
class Atom:
    """The units of one leaf channel space (an index into the SpaceTable)."""

    id: int


@dataclass(frozen=True)
class Prod:
    """A merged axis: position ``o * size(inner) + i``."""

    outer: Layout
    inner: Layout


@dataclass(frozen=True)
class Zip:
    """Parts interleaved round-robin (a channel shuffle); each part keeps its own map."""

    parts: tuple  # tuple[Layout, ...], balanced sizes


@dataclass(frozen=True)
class Stack:
    """Transient: rows a channel shuffle's first reshape splits off, kept apart until ``merge``."""

    rows: tuple  # tuple[Layout, ...], equal sizes


Segment = Fixed | Atom | Prod | Zip | Stack
Layout = tuple  # tuple[Segment, ...]


# -- walking segments -----------------------------------------------------------------------------
def children(seg: Segment) -> tuple[Layout, ...]:
    """The layouts a segment is made of: a product's outer and inner, a Zip's parts, a Stack's
    rows; none for Fixed and Atom (the leaves)."""
    if isinstance(seg, Prod):
        return (seg.outer, seg.inner)
    if isinstance(seg, Zip):
        return seg.parts
    if isinstance(seg, Stack):
        return seg.rows
    return ()


def iter_segments(layout: Layout) -> Iterator[Segment]:
    """Every segment of ``layout`` and, depth first, every segment inside it (pre-order)."""
    for seg in layout:
        yield seg
        for child in children(seg):
            yield from iter_segments(child)


def atom_ids(layout: Layout) -> Iterator[int]:
    """The ids of every atom in ``layout``, nested ones included, in order."""
    return (seg.id for seg in iter_segments(layout) if type(seg) is Atom)


def compound_size(seg: Segment, size: Callable[[Layout], int]) -> int:
    """The size of a Prod, Zip or Stack from ``size`` of the layouts it is made of (a product
    multiplies, an interleave adds, the rows of a Stack are equal)."""
    if isinstance(seg, Prod):
        return size(seg.outer) * size(seg.inner)
    if isinstance(seg, Zip):
        return sum(size(p) for p in seg.parts)
    assert isinstance(seg, Stack), seg
    return size(seg.rows[0])


class GrowthTie(NamedTuple):
    """Layouts that must grow by the same number of positions, and the op that needs it."""

    layouts: tuple[Layout, ...]
    blocker: Blocker


class SpaceTable:
    """Union-find over atoms with refinement; the state behind every layout of one analysis."""

    def __init__(self) -> None:
        self.width: list[int] = []
        self.parent: list[int] = []
        self.members: dict[int, list[int]] = {}
        self.blockers: dict[int, list[Blocker]] = {}
        self.refined: dict[int, Layout] = {}
        self.ties: list[GrowthTie] = []  # growth ties: equal growth (see Zip)
        self.tie_causes: set[Blocker] = set()  # the blockers settle_ties added
        self._why: Blocker = Blocker("", "channel layout")  # the op a refinement serves
        self._sizes: dict = {}  # compound segment -> size
        self._resolved: dict | None = None  # cache, once the analysis is finished (freeze)

    def freeze(self) -> None:
        """No more refinements: resolved layouts can be cached (unions and blockers may still
        be added; they do not change how a layout resolves)."""
        self._resolved = {}

    # -- atoms and classes -------------------------------------------------------------------
    def new(self, width: int) -> Layout:
        """A fresh leaf atom of ``width`` units, as a one-segment layout."""
        i = len(self.width)
        self.width.append(width)
        self.parent.append(i)
        self.members[i] = [i]
        self.blockers[i] = []
        return (Atom(i),)

    def find(self, a: int) -> int:
        """The root of atom ``a``'s class (with path compression)."""
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        assert self.width[ra] == self.width[rb], (self.width[ra], self.width[rb])
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members.pop(rb))
        self.blockers[ra].extend(self.blockers.pop(rb))

    def blockers_of(self, a: int) -> list[Blocker]:
        """The blockers of atom ``a``'s class."""
        return self.blockers[self.find(a)]

    def _refine(self, atom: int, make) -> None:
        """Refine the class of ``atom``: ``make(member)`` builds each member's structure from fresh
        atoms and returns them; pieces at the same position are united."""
        assert self._resolved is None, "refinement after the analysis was frozen"
        root = self.find(atom)
        inherited = list(self.blockers[root])
        pieces: list[list[int]] = []
        for m in list(self.members[root]):
            if m in self.refined:
                continue
            layout, fresh = make(m)
            self.refined[m] = layout
            pieces.append(fresh)
        for column in zip(*pieces):
            for a in column[1:]:
                self._union(column[0], a)
            self.blockers[self.find(column[0])].extend(inherited)

    def _split_atom(self, atom: int, at: int) -> None:
        w = self.width[atom]
        assert 0 < at < w

        def make(m):
            (a,), (b,) = self.new(at), self.new(w - at)
            return (a, b), [a.id, b.id]

        self._refine(atom, make)

    def _factor_atom(self, atom: int, outer: int, inner: int) -> None:
        assert outer * inner == self.width[atom] and outer >= 1 and inner >= 1

        def make(m):
            (a,), (b,) = self.new(outer), self.new(inner)
            return (Prod((a,), (b,)),), [a.id, b.id]

        self._refine(atom, make)

    # -- reading layouts -----------------------------------------------------------------------
    def size(self, layout: Layout) -> int:
        """The number of positions ``layout`` spans (refinement never changes it)."""
        total = 0
        for s in layout:
            if isinstance(s, Fixed):
                total += s.size
            elif isinstance(s, Atom):
                total += self.width[s.id]
            else:  # sizes never change (refinement keeps them): memoised
                n = self._sizes.get(s)
                if n is None:
                    n = self._sizes[s] = compound_size(s, self.size)
                total += n
        return total

    def resolve(self, layout: Layout) -> Layout:
        """The layout in terms of leaf atoms, normalised (see module docstring)."""
        cache = self._resolved
        if cache is not None:
            hit = cache.get(layout)
            if hit is None:
                hit = cache[layout] = self._resolve(layout)
            return hit
        return self._resolve(layout)

    def _resolve(self, layout: Layout) -> Layout:
        refined = self.refined
        previous_fixed = False
        for s in layout:  # fast path: plain atoms and separated fixed runs resolve to themselves
            t = type(s)
            if t is Atom and s.id not in refined:
                previous_fixed = False
            elif t is Fixed and s.size and not previous_fixed:
                previous_fixed = True
            else:
                break
        else:
            return tuple(layout)
        out: list = []
        for s in layout:
            if isinstance(s, Atom):
                r = self.refined.get(s.id)
                out.extend((s,) if r is None else self.resolve(r))
            elif isinstance(s, Fixed):
                if s.size:
                    out.append(s)
            elif isinstance(s, Prod):
                out.extend(self._prod(self.resolve(s.outer), self.resolve(s.inner)))
            elif isinstance(s, Zip):
                out.extend(self._zip([self.resolve(p) for p in s.parts]))
            else:
                out.append(Stack(tuple(self.resolve(r) for r in s.rows)))
        return _merge_fixed(out)

    def _zip(self, parts: list[Layout]) -> list:
        """A resolved Zip: empty parts dropped, one part unwrapped, all-fixed parts merged."""
        parts = [p for p in parts if p]
        if len(parts) == 1:
            return list(parts[0])
        if not parts:
            return []
        if all(isinstance(seg, Fixed) for p in parts for seg in p):
            first = parts[0][0]
            return [Fixed(sum(self.size(p) for p in parts), first.cause)]
        return [Zip(tuple(parts))]

    def _prod(self, outer: Layout, inner: Layout) -> list:
        si = self.size(inner)
        if si == 1 and all(isinstance(s, Fixed) for s in inner):
            return list(outer)
        out: list[Segment] = []
        for o in outer:
            if isinstance(o, Fixed) and o.size == 1:
                out.extend(inner)
            elif isinstance(o, Prod):  # associativity: (a x b) x c = a x (b x c)
                out.extend(self._prod(o.outer, tuple(self._prod(o.inner, inner))))
            elif isinstance(o, Fixed) and all(isinstance(s, Fixed) for s in inner):
                out.append(Fixed(o.size * si, o.cause))
            else:
                out.append(Prod((o,), tuple(inner)))
        return out

    def roots(self, layout: Layout) -> list[int]:
        """Class roots of every atom in the layout, in order, without repeats."""
        return list(dict.fromkeys(self.find(a) for a in atom_ids(self.resolve(layout))))

    def is_fixed(self, layout: Layout) -> bool:
        """True when every segment of the resolved layout is Fixed (no channel space in it)."""
        return all(isinstance(s, Fixed) for s in self.resolve(layout))

    # -- constraints ---------------------------------------------------------------------------
    def block(self, layout: Layout, blocker: Blocker) -> None:
        """Add ``blocker`` to the class of every atom in ``layout`` (once per class)."""
        for r in self.roots(layout):
            if blocker not in self.blockers[r]:
                self.blockers[r].append(blocker)

    def unify(self, a: Layout, b: Layout, blocker: Blocker) -> None:
        """Make two layouts of one size share channel spaces position by position.
        Where their structures cannot be reconciled, both are blocked with ``blocker``."""
        self._why = blocker
        if self._alias(a, b) or self._alias(b, a):
            return
        try:
            self._unify(a, b)
        except StructureError:
            self.block(a, blocker)
            self.block(b, blocker)

    def _alias(self, a: Layout, b: Layout) -> bool:
        """Shortcut: ``a`` is one fresh atom (unrefined, alone in its class, unblocked) and
        ``b`` resolves to several plain atoms: ``a`` is refined into ``b`` itself.  Equivalent
        to cutting ``a`` into pieces and uniting them with ``b``'s, without the pieces (a
        parameter read along a long concatenation, as in DenseNet)."""
        if len(a) != 1 or type(a[0]) is not Atom or self._resolved is not None:
            return False
        i = a[0].id
        if (
            i in self.refined
            or self.parent[i] != i
            or len(self.members[i]) != 1
            or self.blockers[i]
        ):
            return False
        rb = self.resolve(b)
        if (
            len(rb) < 2
            or any(type(seg) is not Atom for seg in rb)
            or self.size(rb) != self.width[i]
            or any(seg.id == i for seg in rb)
        ):
            return False
        self.refined[i] = rb
        return True

    def _unify(self, a: Layout, b: Layout) -> None:
        if a == b:  # a layout shares its spaces with itself
            return
        if self.size(a) != self.size(b):
            raise StructureError("sizes differ")
        left, right = list(self.resolve(a)), list(self.resolve(b))
        left.reverse()
        right.reverse()
        while left and right:
            x, y = self._head(left), self._head(right)
            sx, sy = self.size((x,)), self.size((y,))
            if sx == sy:
                left.pop()
                right.pop()
                self._unify_segment(x, y)
            elif sx > sy:
                left.pop()
                p, q = self._cut(x, sy)
                left.extend(reversed(q))
                left.extend(reversed(p))
            else:
                right.pop()
                p, q = self._cut(y, sx)
                right.extend(reversed(q))
                right.extend(reversed(p))

    def _head(self, stack: list) -> Segment:
        """Top of a reversed segment stack, re-resolved (a refinement may have happened)."""
        top = stack[-1]
        t = type(top)
        if (t is Atom and top.id not in self.refined) or (t is Fixed and top.size):
            return top
        r = self.resolve((top,))
        if r != (top,):
            stack.pop()
            stack.extend(reversed(r))
            return self._head(stack)
        return top

    def _unify_segment(self, x: Segment, y: Segment) -> None:
        if isinstance(x, Fixed) and isinstance(y, Fixed):
            return
        if isinstance(x, Fixed):
            self.block((y,), x.cause)
            return
        if isinstance(y, Fixed):
            self.block((x,), y.cause)
            return
        if isinstance(x, Atom) and isinstance(y, Atom):
            self._union(x.id, y.id)
            return
        if isinstance(x, Stack) or isinstance(y, Stack):
            raise StructureError("rows of a channel shuffle")
        if isinstance(x, Zip) or isinstance(y, Zip):
            self._unify_zip(x, y)
            return
        if isinstance(x, Atom) or isinstance(y, Atom):
            atom, p = (x, y) if isinstance(x, Atom) else (y, x)
            assert isinstance(atom, Atom) and isinstance(p, Prod)  # the other pairs returned
            self._factor_atom(atom.id, self.size(p.outer), self.size(p.inner))
            self._unify((atom,), (p,))
            return
        si, sj = self.size(x.inner), self.size(y.inner)
        if si == sj:
            self._unify(x.outer, y.outer)
            self._unify(x.inner, y.inner)
            return
        if si > sj:
            x, y, si, sj = y, x, sj, si
        # x.inner is the smaller one: factor y.inner as (sj/si, si)
        if sj % si:
            raise StructureError("incompatible products")
        ya, yb = self._split(y.inner, si)
        self._unify(x.outer, tuple(self._prod(y.outer, ya)))
        self._unify(x.inner, yb)

    def _unify_zip(self, x: Segment, y: Segment) -> None:
        """Zip against Zip part by part; an atom against a Zip is refined into one."""
        if isinstance(x, Atom) or isinstance(y, Atom):
            atom, z = (x, y) if isinstance(x, Atom) else (y, x)
            assert isinstance(atom, Atom) and isinstance(z, Zip)  # two atoms never get here
            self._zip_atom(atom.id, [self.size(p) for p in z.parts])
            self._unify((atom,), (z,))
            return
        if not (isinstance(x, Zip) and isinstance(y, Zip)) or [self.size(p) for p in x.parts] != [
            self.size(p) for p in y.parts
        ]:
            raise StructureError("interleaved layouts that do not line up")
        for p, q in zip(x.parts, y.parts):
            self._unify(p, q)

    def _zip_atom(self, atom: int, sizes: list[int]) -> None:
        """Refine the class of ``atom`` into interleaved parts of ``sizes`` (balanced).  Its
        parts are about to be united with those of a Zip, which is already tied."""

        def make(m):
            fresh = [self.new(n) for n in sizes]
            return (Zip(tuple(fresh)),), [a.id for (a,) in fresh]

        self._refine(atom, make)

    def _cut_zip(self, z: Zip, at: int) -> tuple[Layout, Layout]:
        """Round-robin: ``at = r g + e`` leaves parts 0..e-1 with r + 1 units and the rest
        with r in the first piece; the second piece starts at part e.  Each piece stays a
        Zip only if its parts grow alike: both are tied."""
        g = len(z.parts)
        r, e = divmod(at, g)
        heads, tails = [], []
        for k, part in enumerate(z.parts):
            n = r + (1 if k < e else 0)
            size = self.size(part)
            if n == 0:
                heads.append(())
                tails.append(part)
            elif n == size:
                heads.append(part)
                tails.append(())
            else:
                p, q = self._cut_layout(part, [n])
                heads.append(p)
                tails.append(q)
        tails = tails[e:] + tails[:e]
        self.tie(heads, self._why)
        self.tie(tails, self._why)
        return tuple(self._zip(heads)), tuple(self._zip(tails))

    def _cut(self, seg: Segment, at: int) -> tuple[Layout, Layout]:
        """Cut one resolved segment into [0, at) and [at, size)."""
        if isinstance(seg, Fixed):
            return (Fixed(at, seg.cause),), (Fixed(seg.size - at, seg.cause),)
        if isinstance(seg, Atom):
            self._split_atom(seg.id, at)
            p, q = self.resolve((seg,))
            return (p,), (q,)
        if isinstance(seg, Zip):
            return self._cut_zip(seg, at)
        if isinstance(seg, Stack):
            raise StructureError("rows of a channel shuffle")
        si = self.size(seg.inner)
        if at % si:
            raise StructureError("cut inside a product")
        (o,) = seg.outer
        p, q = self._cut(o, at // si)
        return tuple(self._prod(p, seg.inner)), tuple(self._prod(q, seg.inner))

    def cut(self, layout: Layout, positions: Iterable[int], blocker: Blocker) -> list[Layout]:
        """Pieces of ``layout`` between the given cut positions (refining atoms as needed).
        Where a cut would fall inside a product, the layout is blocked and cut as fixed."""
        positions = sorted({p for p in positions if 0 < p < self.size(layout)})
        self._why = blocker
        try:
            return self._cut_layout(layout, positions)
        except StructureError:
            blocker = _misfit(blocker)
            self.block(layout, blocker)
            bounds = [0, *positions, self.size(layout)]
            return [(Fixed(b - a, blocker),) for a, b in itertools.pairwise(bounds)]

    def _cut_layout(self, layout: Layout, positions: list[int]) -> list[Layout]:
        stack = list(reversed(self.resolve(layout)))
        pieces: list[Layout] = []
        current: list = []
        pos = 0
        for cut_at in [*positions, None]:
            while stack and (cut_at is None or pos < cut_at):
                seg = self._head(stack)
                s = self.size((seg,))
                if cut_at is not None and pos + s > cut_at:
                    stack.pop()
                    p, q = self._cut(seg, cut_at - pos)
                    stack.extend(reversed(q))
                    stack.extend(reversed(p))
                    continue
                stack.pop()
                current.append(seg)
                pos += s
            pieces.append(tuple(current))
            current = []
        return pieces

    def split(self, layout: Layout, inner: int, blocker: Blocker) -> tuple[Layout, Layout]:
        """Factor an axis of size n into (n // inner, inner), row-major, as a reshape does."""
        n = self.size(layout)
        assert n % inner == 0
        if inner == 1:
            return layout, (Fixed(1, blocker),)
        if inner == n:
            return (Fixed(1, blocker),), layout
        self._why = blocker
        try:
            return self._split(layout, inner)
        except StructureError:
            blocker = _misfit(blocker)
            self.block(layout, blocker)
            return (Fixed(n // inner, blocker),), (Fixed(inner, blocker),)

    def _split(self, layout: Layout, b: int) -> tuple[Layout, Layout]:
        stack = list(reversed(self.resolve(layout)))
        outer: list = []
        rows: list[Layout] = []
        row: list = []
        row_size = 0
        while stack:
            seg = self._head(stack)
            s = self.size((seg,))
            if row_size == 0 and s % b == 0:
                stack.pop()
                o, i = self._split_segment(seg, b)
                outer.extend(o)
                rows.append(i)
            elif row_size + s <= b:
                stack.pop()
                row.append(seg)
                row_size += s
                if row_size == b:
                    outer.append(Fixed(1, Blocker("", "row of a reshape", "structure")))
                    rows.append(tuple(row))
                    row, row_size = [], 0
            else:
                stack.pop()
                p, q = self._cut(seg, b - row_size)
                stack.extend(reversed(q))
                stack.extend(reversed(p))
        for other in rows[1:]:
            self._unify(rows[0], other)
        return _merge_fixed(outer), self.resolve(rows[0])

    def _split_segment(self, seg: Segment, b: int) -> tuple[Layout, Layout]:
        s = self.size((seg,))
        if isinstance(seg, Fixed):
            return (Fixed(s // b, seg.cause),), (Fixed(b, seg.cause),)
        if s == b:
            return (Fixed(1, Blocker("", "row of a reshape", "structure")),), (seg,)
        if isinstance(seg, (Zip, Stack)):
            raise StructureError("reshape inside an interleaved layout")
        if isinstance(seg, Atom):
            self._factor_atom(seg.id, s // b, b)
            (p,) = self.resolve((seg,))
            return p.outer, p.inner
        si = self.size(seg.inner)
        if si == b:
            return seg.outer, seg.inner
        if si > b:
            if si % b:
                raise StructureError("reshape does not align with a product")
            ia, ib = self._split(seg.inner, b)
            return tuple(self._prod(seg.outer, ia)), ib
        if b % si:
            raise StructureError("reshape does not align with a product")
        oa, ob = self._split(seg.outer, b // si)
        return oa, tuple(self._prod(ob, seg.inner))

    def merge(self, outer: Layout, inner: Layout) -> Layout:
        """The layout of two adjacent axes flattened into one (row-major).  The rows of a
        channel shuffle (``stack``) merge with their row axis into a Zip when the row axis is
        inner (the shuffle), back into the rows laid end to end when it is outer."""
        outer, inner = self.resolve(outer), self.resolve(inner)
        for stacked, rows_axis, shuffled in ((outer, inner, True), (inner, outer, False)):
            if len(stacked) == 1 and isinstance(stacked[0], Stack):
                rows = stacked[0].rows
                if not (
                    all(isinstance(f, Fixed) for f in rows_axis)
                    and self.size(rows_axis) == len(rows)
                ):  # not the shuffle's merge
                    cause = _misfit(self._why)
                    self.block(stacked, cause)
                    return (Fixed(self.size(outer) * self.size(inner), cause),)
                if shuffled:
                    return _merge_fixed(self._zip(list(rows)))
                return _merge_fixed([seg for r in rows for seg in r])
        return _merge_fixed(self._prod(outer, inner))

    def stack(self, layout: Layout, rows: int, blocker: Blocker) -> Layout:
        """The axis of ``layout`` cut into ``rows`` equal rows that keep their own maps (the
        first reshape of a channel shuffle).  The rows must grow alike: they are tied."""
        pieces = self.cut_equal(layout, rows, blocker)
        self.tie(pieces, blocker)
        return (Stack(tuple(pieces)),)

    def cut_equal(self, layout: Layout, count: int, blocker: Blocker) -> list[Layout]:
        """``layout`` cut into ``count`` equal pieces (its size is a multiple of ``count``)."""
        n = self.size(layout)
        step = n // count
        return self.cut(layout, range(step, n, step), blocker)

    def equal_blocks(
        self, layout: Layout, count: int, blocker: Blocker, alike: Blocker
    ) -> list[Layout]:
        """``layout`` cut into ``count`` equal blocks that share one map (united position by
        position, ``alike`` blocking them where they cannot): a grouped conv's groups, a
        GroupNorm's groups.  Every block grows the same way as the first."""
        pieces = self.cut_equal(layout, count, blocker)
        for p in pieces[1:]:
            self.unify(pieces[0], p, alike)
        return pieces

    # -- growth ties ---------------------------------------------------------------------------
    def tie(self, layouts: Iterable[Layout], blocker: Blocker) -> None:
        """These layouts must grow by the same number of positions."""
        layouts = tuple(tuple(lay) for lay in layouts)
        if len(layouts) > 1:
            self.ties.append(GrowthTie(layouts, blocker))

    def settle_ties(self) -> None:
        """A tied layout that cannot grow (no unblocked channel space) holds every layout of
        its tie to its width: their spaces are blocked, until nothing changes."""
        changed = True
        while changed:
            changed = False
            for layouts, blocker in self.ties:
                roots = [self.roots(lay) for lay in layouts]
                stuck = [rs for rs in roots if all(self.blockers[r] for r in rs)]
                if not stuck:
                    continue
                if any(not self.size(lay) for lay in layouts):
                    why = (
                        "this piece of a channel shuffle's interleave has one unit more "
                        "than its partner, which is empty here; a replica would land on "
                        "the wrong side of the cut"
                    )
                else:
                    why = (
                        "a channel shuffle interleaves it with channels that cannot grow, "
                        "and the parts of an interleave must grow alike (a replica would "
                        "land on the wrong side of a later chunk or split)"
                    )
                cause = Blocker(blocker.node, f"{blocker.reason}: {why}")
                self.tie_causes.add(cause)
                for rs in roots:
                    for r in rs:
                        if not self.blockers[r]:
                            self.blockers[r].append(cause)
                            changed = True

    def growth(self, layout: Layout, widths: dict[int, int]) -> int:
        """How many positions ``layout`` gains when class root r has width ``widths[r]``."""
        return self.new_size(layout, widths) - self.size(layout)

    # -- sizes under a plan --------------------------------------------------------------------
    def new_size(self, layout: Layout, widths: dict[int, int]) -> int:
        """Size of ``layout`` when class root r has width ``widths.get(r, old)``."""
        total = 0
        for s in self.resolve(layout):
            total += self._new_size_seg(s, widths)
        return total

    def _new_size_seg(self, s: Segment, widths: dict[int, int]) -> int:
        if isinstance(s, Fixed):
            return s.size
        if isinstance(s, Atom):
            r = self.find(s.id)
            return widths.get(r, self.width[r])
        return compound_size(s, lambda part: self.new_size(part, widths))


def _misfit(blocker: Blocker) -> Blocker:
    return replace(
        blocker,
        reason=f"{blocker.reason} would cut inside a unit of a merged "
        f"channel layout (a product such as channel x spatial, heads x "
        f"head dim, or the result of repeated channel shuffles)",
    )


def _merge_fixed(segs: list) -> Layout:
    out: list = []
    for s in segs:
        if isinstance(s, Fixed) and out and isinstance(out[-1], Fixed):
            out[-1] = Fixed(out[-1].size + s.size, out[-1].cause)
        else:
            out.append(s)
    return tuple(out)


def fixed(shape: Iterable[int], cause: Blocker) -> tuple[Layout, ...]:
    """Layouts for a tensor whose every axis is fixed."""
    return tuple((Fixed(int(n), cause),) for n in shape)


def numel(shape) -> int:
    """The number of elements of a tensor of ``shape``."""
    return prod(int(n) for n in shape)
