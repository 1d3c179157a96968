"""An interactive, self-contained HTML view of a drawing: Graphviz's layout as inline SVG plus
a small script (no network, no libraries).

The page holds *views*: an overview of the teacher (modules folded as ``collapse="auto"``
folds them), the same of the student when there is one, and one detailed view per folded
module (every op inside it, the ops around it as stubs).  Every SVG element carries classes
naming the channel groups it carries (``g<i>``) and blocks (``b<i>``), so the script can

* find a group or module by name (the search box),
* highlight a group -- every tensor, op and module box it spans -- and dim the rest when an
  edge, an op or a legend entry is clicked, with its width before → after, its members and,
  for a blocked group, the blocker's node and reason,
* open a folded module (expand) and go back to the overview (collapse),
* switch between teacher and student (inserted layers outlined),
* pan (drag) and zoom (wheel, +/-, fit).

Invariant: group indices are shared by all views (a group keeps its index and colour in the
student), so a highlight survives a change of view."""

from __future__ import annotations

import html
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..analysis import Analysis
from .graph import DGroup, Edge, Item, Scene
from .page import PAGE, SCRIPT
from .render import DrawError, GraphvizNotFoundError, dot_binary, to_dot

# at most this many folded modules get a detailed view of their own (in module order)
MAX_DETAIL_VIEWS = 160


@dataclass(frozen=True)
class View:
    """One drawing in the page: ``key`` names it (``teacher``, ``student``,
    ``teacher/<module>``), ``scene`` is what it shows."""

    key: str
    label: str
    scene: Scene


def module_scene(full: Scene, path: str) -> Scene | None:
    """The part of an unfolded scene inside module ``path``: its items, the edges among them,
    and one stub item for each outside item that feeds it or reads from it."""
    inside = {i.id for i in full.items if path in i.ancestors}
    if len(inside) < 2:
        return None
    by_id = {i.id: i for i in full.items}
    items = [i for i in full.items if i.id in inside]
    stubs: dict[str, Item] = {}
    edges: list[Edge] = []
    for e in full.edges:
        a, b = e.src in inside, e.dst in inside
        if not (a or b):
            continue
        outer = e.dst if a and not b else e.src if b and not a else None
        if outer is not None and outer not in stubs:
            o = by_id[outer]
            stubs[outer] = replace(
                o,
                kind="input" if b else "output",
                ancestors=(),
                subtitle="",
                inner_groups=[],
                blockers=[],
                title=("from " if b else "to ") + o.title,
            )
        edges.append(e)
    clusters = {p: lab for p, lab in full.clusters.items() if p == path or p.startswith(path + ".")}
    return Scene(
        f"{path}", items + list(stubs.values()), edges, full.groups, clusters, full.before_after, []
    )


def views_of(
    analysis: Analysis,
    student: Any = None,
    *,
    name: str | None = None,
    title: str | None = None,
    details: bool = True,
) -> list[View]:
    """The views the page shows for ``analysis`` (and ``student``)."""
    from . import scene

    out: list[View] = []
    pairs = [("teacher", None)] + ([("student", student)] if student is not None else [])
    for key, s in pairs:
        overview = scene(analysis, student=s, collapse="auto", title=title, name=name)
        out.append(View(key, key, overview))
        if not details or not overview.folded:
            continue
        full = scene(analysis, student=s, collapse=None, title=title, name=name)
        for path in overview.folded[:MAX_DETAIL_VIEWS]:
            part = module_scene(full, path)
            if part is not None:
                out.append(View(f"{key}/{path}", path, part))
    return out


def render_svgs(sources: Sequence[str], timeout: float = 600) -> list[str]:
    """Lay out several DOT graphs with one ``dot`` process; one SVG document each."""
    exe = dot_binary()
    if exe is None:
        raise GraphvizNotFoundError(
            "an HTML drawing needs Graphviz's `dot` program to lay out the graph, and it is "
            "not on PATH: install Graphviz (apt-get install graphviz, brew install graphviz "
            "or conda install graphviz), or write the DOT text instead (a .dot file)"
        )
    try:
        done = subprocess.run(
            [exe, "-Tsvg"],
            input="\n".join(sources).encode("utf-8"),
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise DrawError(f"Graphviz took longer than {timeout:.0f} s to lay out the views") from e
    if done.returncode != 0:
        msg = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DrawError(
            "Graphviz `dot` failed laying out the HTML views: "
            + (msg[0] if msg else f"exit code {done.returncode}")
        )
    text = done.stdout.decode("utf-8")
    svgs = [m.group(0) for m in re.finditer(r"<svg\b.*?</svg>", text, re.S)]
    if len(svgs) != len(sources):
        raise DrawError(f"Graphviz returned {len(svgs)} drawings for {len(sources)} views")
    return svgs


def _group_data(groups: list[DGroup], analysis: Analysis) -> list[dict]:
    members = {g.name: g.members for g in analysis.all_groups}
    out = []
    for g in groups:
        out.append(
            {
                "i": g.index,
                "name": g.name,
                "colour": g.colour,
                "width": g.width,
                "old": g.old,
                "status": g.status,
                "widenable": g.widenable,
                "members": [
                    f"{m.target}[{m.axis}] {m.role}"
                    if m.axis is not None
                    else f"{m.target} {m.role}"
                    for m in members.get(g.name, ())
                ][:60],
                "blockers": [
                    {"node": b.node, "kind": b.kind, "reason": b.reason} for b in g.blockers
                ],
            }
        )
    return out


def to_html(views: list[View], analysis: Analysis, *, title: str) -> str:
    """The page: every view laid out by Graphviz, the groups and modules as JSON, the script."""
    sources = [to_dot(v.scene, legend=False, ids=f"v{k}_") for k, v in enumerate(views)]
    svgs = render_svgs(sources)
    groups: dict[int, DGroup] = {}
    for v in views:  # the student's groups (old → new width) come after the teacher's
        for g in v.scene.groups:
            groups[g.index] = g
    data = {
        "title": title,
        "groups": _group_data([groups[i] for i in sorted(groups)], analysis),
        "views": [
            {
                "key": v.key,
                "label": v.label,
                "id": f"v{k}",
                "folded": v.scene.folded,
                "modules": sorted(v.scene.clusters),
            }
            for k, v in enumerate(views)
        ],
    }
    blocks = []
    for k, svg in enumerate(svgs):
        svg = re.sub(
            r'\swidth="[^"]*"\s+height="[^"]*"', ' width="100%" height="100%"', svg, count=1
        )
        blocks.append(f'<div class="view" id="v{k}" hidden>{svg}</div>')
    payload = json.dumps(data).replace("</", "<\\/")
    return (
        PAGE.replace("@@TITLE@@", html.escape(title))
        .replace("@@VIEWS@@", "\n".join(blocks))
        .replace("@@DATA@@", payload)
        .replace("@@SCRIPT@@", SCRIPT)
    )
