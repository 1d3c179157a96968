"""The growth-tie solver: widths that keep every tie of a channel shuffle's interleave (the
parts of a ``layout.Zip`` grow by the same number of positions), by exact rational nullspaces.

Invariant: the chosen growths solve the homogeneous system of the ties exactly, or the plan is
refused with a WidthError that says which widths would do."""

from __future__ import annotations

import math
from fractions import Fraction

from ..analysis import Analysis
from ..errors import WidthError
from .widths import _uniform_roots


def _settle_growth(
    analysis: Analysis, targets: dict, pinned: set[int], stuck: dict[int, str]
) -> None:
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
            diff = dict(coefs[0])
            for r, v in c.items():
                diff[r] = diff.get(r, 0) - v
            row = {r: Fraction(v) for r, v in diff.items() if v}
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
        k = basis[0] if basis else dict.fromkeys(roots, 0)
        if max(k.values()) <= 0:
            k = {r: -v for r, v in k.items()}
        if min(k.values()) < 0:  # mixed signs: no group may grow
            k = dict.fromkeys(roots, 0)
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
                        f"grow only in {step} (got +{d})"
                    )
                if k[r]:
                    ts.add(d // k[r])
            if len(ts) > 1:
                raise WidthError(
                    "groups interleaved by channel shuffles must grow in "
                    "proportion; the named widths disagree: "
                    + ", ".join(by_root[r].name for r in named)
                )
            t = ts.pop() if ts else 0
        else:
            need = [
                math.ceil((targets[r][1] - by_root[r].unit) / k[r])
                for r in roots
                if r in targets and k[r] > 0
            ]
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
            raise WidthError(
                f"group {by_root[r].name!r} is interleaved by a channel shuffle "
                f"inside a product layout; fxgrow cannot size it"
            )
        out[r] = one
    return out


def _nullspace(rows: list[dict[int, Fraction]], roots: list[int]) -> list[dict[int, int]]:
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
        vec = [Fraction(0)] * len(roots)
        vec[j] = Fraction(1)
        for q, pj in enumerate(pivots):
            vec[pj] = -m[q][j]
        scale = math.lcm(*(x.denominator for x in vec))
        ints = [int(x * scale) for x in vec]
        g = math.gcd(*ints) or 1
        basis.append({r: ints[col[r]] // g for r in roots})
    return basis


def _check_ties(analysis: Analysis, targets: dict, roots: list[int]) -> None:
    sp = analysis.state.spaces
    widths = {r: unit for r, (_, unit) in targets.items()}
    for layouts, blocker in sp.ties:
        if len({sp.growth(lay, widths) for lay in layouts}) > 1 and any(
            r in roots for lay in layouts for r in sp.roots(lay)
        ):
            raise WidthError(
                f"{blocker.node} ({blocker.reason}) needs the channels it "
                f"interleaves or chunks to grow alike, and fxgrow cannot choose "
                f"the widths here; give every group involved an explicit width"
            )
