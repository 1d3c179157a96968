"""Scene -> DOT text -> SVG/PNG/PDF with Graphviz's ``dot``."""

from __future__ import annotations

import html
import itertools
import math
import os
import shutil
import subprocess
from pathlib import Path

import graphviz

from ..errors import DrawError, GraphvizNotFoundError, InputError
from .graph import PLUMBING, DGroup, Item, Scene
from .palette import BLOCKER, INSERTED, NEUTRAL, tint

PLUMBING_BOX = f"box:{PLUMBING}"

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}
TEXT_FORMATS = (".dot", ".gv")


class _Html(str):
    """A Graphviz HTML-like label (``<...>``), passed to ``dot`` as it is."""


class _Dot(graphviz.Digraph):
    """A ``graphviz.Digraph`` whose edge ends are whole node names: fxgrow's ids may contain
    ``:`` (``box:layer1``), which ``Digraph.edge`` would read as a port."""

    _quote_edge = staticmethod(graphviz.quoting.quote)


def _text(s: object) -> str:
    """Plain text for a DOT attribute: backslashes literal, ``\\n`` ends a line, never HTML."""
    return graphviz.nohtml(str(s).replace("\\", "\\\\").replace("\n", "\\n"))


def _attrs(**kw) -> list[tuple[str, str]]:
    """DOT attributes in order, as strings: None and "" dropped, numbers as numbers, HTML
    labels as they are, every other value as plain text."""
    out: list[tuple[str, str]] = []
    for k, v in kw.items():
        if v is None or v == "":
            continue
        if isinstance(v, _Html):
            out.append((k, v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((k, str(v)))
        else:
            out.append((k, _text(v)))
    return out


def _h(s: str) -> str:
    return html.escape(str(s), quote=True)


def short_name(name: str) -> str:
    """The last two parts of a group's name (``denseblock3.denselayer20.conv1`` ->
    ``denselayer20.conv1``): an edge label that stays short."""
    return ".".join(name.split(".")[-2:])


def _edge_colour(groups: list[DGroup]) -> str:
    if not groups:
        return NEUTRAL
    shown = groups[:4]
    return ":".join(g.colour for g in shown)


def _item_attrs(item: Item) -> dict:
    fill = tint(item.out_groups[0].colour) if item.out_groups else "#f5f5f5"
    attrs: dict = {"tooltip": item.tooltip, "fillcolor": fill}
    lines = [item.title]
    if item.subtitle:
        if len(item.title) + len(item.subtitle) <= 24:
            lines[0] = f"{item.title} · {item.subtitle}"
        else:
            lines.append(item.subtitle)
    if item.shape:
        lines.append(item.shape)
    if item.kind == "input":
        attrs.update(shape="ellipse", style="filled")
    elif item.kind == "output":
        attrs.update(shape="ellipse", style="filled", fillcolor="#eeeeee")
    if item.kind == "box":
        attrs.update(shape="plain", label=_box_label(item), fillcolor=None)
    else:
        attrs["label"] = "\n".join(lines)
    style = attrs.get("style", "rounded,filled")
    if item.inserted:
        attrs.update(color=INSERTED, penwidth=3, fontcolor="#004d40")
        style += ",bold"
        if item.kind != "box":
            attrs["label"] = "+ " + attrs["label"]
    if item.blockers:
        attrs.update(color=BLOCKER, penwidth=3)
        style += ",bold"
    if item.kind != "box":
        attrs["style"] = style
    return attrs


def _box_label(item: Item) -> _Html:
    """An HTML label: the module, its type and op count, its output shape and a strip of the
    groups that live inside it."""
    border = BLOCKER if item.blockers else INSERTED if item.inserted else "#607d8b"
    width = 3 if item.blockers or item.inserted else 1
    fill = "#e0f2f1" if item.inserted else "#eceff1"
    name = item.title if len(item.title) <= 20 else item.title.rpartition(".")[2]
    name = ("+ " if item.inserted else "") + name
    head = f"<B>{_h(name)}</B>"
    sub = _h(" · ".join(x for x in (item.subtitle, f"{len(item.nodes)} ops") if x))
    rows = [
        f'<TR><TD COLSPAN="{{span}}">{head}</TD></TR>',
        f'<TR><TD COLSPAN="{{span}}"><FONT POINT-SIZE="9">{sub}</FONT></TD></TR>',
    ]
    if item.shape:
        rows.append(
            f'<TR><TD COLSPAN="{{span}}"><FONT POINT-SIZE="9">{_h(item.shape)}</FONT></TD></TR>'
        )
    cells, labels = [], []
    for g in item.inner_groups:
        tip = _h(g.describe())
        cells.append(
            f'<TD BGCOLOR="{g.colour}" WIDTH="12" HEIGHT="8" TITLE="{tip}" TOOLTIP="{tip}"></TD>'
        )
        labels.append(
            f'<TD><FONT POINT-SIZE="8" COLOR="{g.colour}">{_h(g.change)}</FONT></TD>'
            if g.changed
            else "<TD></TD>"
        )
    widened = any(g.changed for g in item.inner_groups)  # before/after: swatches get labels
    span = max(1, min(len(cells), 6 if widened else 12))
    if cells:
        for k in range(0, len(cells), span):
            rows.append("<TR>" + "".join(cells[k : k + span]) + "</TR>")
            if widened:
                rows.append("<TR>" + "".join(labels[k : k + span]) + "</TR>")
    body = "".join(r.replace("{span}", str(span)) for r in rows)
    return _Html(
        f'<<TABLE BORDER="{width}" COLOR="{border}" CELLBORDER="0" CELLSPACING="1" '
        f'CELLPADDING="2" BGCOLOR="{fill}" STYLE="rounded">{body}</TABLE>>'
    )


LEGEND_ROWS = 40  # legend="auto" lists every group up to this many


def _legend(scene: Scene, full: bool) -> _Html | None:
    groups = scene.groups
    if not groups:
        return None
    rest = 0
    if not full and len(groups) > LEGEND_ROWS:
        keep = [g for g in groups if not g.widenable or g.old is None][:LEGEND_ROWS]
        rest = len(groups) - len(keep)
        groups = keep
    per_col = 24
    cols = max(1, math.ceil(len(groups) / per_col))
    rows = math.ceil(len(groups) / cols)
    title = "channel groups" + (" (teacher → student)" if scene.before_after else "")
    out = [f'<TR><TD COLSPAN="{4 * cols}" ALIGN="LEFT"><B>{_h(title)}</B></TD></TR>']
    for r in range(rows):
        cells = []
        for c in range(cols):
            k = c * rows + r
            if k >= len(groups):
                cells.append("<TD></TD><TD></TD><TD></TD><TD></TD>")
                continue
            g = groups[k]
            width = g.change if g.changed else str(g.width)
            status = g.status
            if len(status) > 40:
                status = status[:39] + "…"
            colour = "#000000" if g.widenable else "#757575"
            cells.append(
                f'<TD BGCOLOR="{g.colour}" WIDTH="14" HEIGHT="10" FIXEDSIZE="TRUE"></TD>'
                f'<TD ALIGN="LEFT">{_h(g.name)}</TD>'
                f'<TD ALIGN="RIGHT">{_h(width)}</TD>'
                f'<TD ALIGN="LEFT"><FONT COLOR="{colour}" POINT-SIZE="8">{_h(status)}</FONT>'
                f"</TD>"
            )
        out.append("<TR>" + "".join(cells) + "</TR>")
    if rest:
        note = (
            f"+ {rest} more groups, each in its own colour and named where it starts;"
            f'<BR ALIGN="LEFT"/>the .html view finds any of them by name'
            f'<BR ALIGN="LEFT"/>'
        )
        out.append(
            f'<TR><TD COLSPAN="{4 * cols}" ALIGN="LEFT"><FONT POINT-SIZE="9">'
            f"{note}</FONT></TD></TR>"
        )
    return _Html(
        '<<TABLE BORDER="1" COLOR="#9e9e9e" CELLBORDER="0" CELLSPACING="2" '
        'CELLPADDING="1" BGCOLOR="#ffffff">' + "".join(out) + "</TABLE>>"
    )


def to_dot(
    scene: Scene,
    *,
    rankdir: str = "TB",
    legend: bool | str = "auto",
    graph_attr: dict | None = None,
    ids: str | None = None,
) -> str:
    """The scene as Graphviz DOT source.  ``legend``: True lists every group, "auto" every
    group up to 40 and otherwise the blocked and new ones, False none.  ``ids``: a prefix;
    when given, every item, edge and cluster carries an SVG ``id`` (the prefix, then the
    item's id, ``e<k>`` or ``m:<module path>``) and ``class`` names for scripts: ``fxitem``,
    ``fxedge``, ``fxmod``, ``g<i>`` for each group it carries and ``b<i>`` for each group
    it blocks (see ``fxgrow.drawing.html``)."""
    if legend not in (True, False, "auto"):
        raise InputError(f"legend must be True, False or 'auto', got {legend!r}")
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise InputError(f"rankdir must be TB, LR, BT or RL, got {rankdir!r}")
    g_attr = dict(
        rankdir=rankdir,
        fontname="Helvetica",
        fontsize=14,
        labelloc="t",
        label=scene.title,
        nodesep=0.25,
        ranksep=0.32,
        outputorder="edgesfirst",
        tooltip=scene.title,
    )
    g_attr.update(graph_attr or {})
    dot = _Dot(
        "fxgrow",
        graph_attr=_attrs(**g_attr),
        node_attr=_attrs(
            shape="box",
            style="rounded,filled",
            fontname="Helvetica",
            fontsize=10,
            color="#546e7a",
            margin="0.08,0.03",
            height=0.3,
        ),
        edge_attr=_attrs(fontname="Helvetica", fontsize=9, arrowsize=0.6, color="#9e9e9e"),
    )
    if legend and scene.groups:
        dot.node(
            "legend",
            _attributes=_attrs(
                shape="plain", label=_legend(scene, legend is True), tooltip="legend"
            ),
        )

    # clusters: a tree of module paths
    children: dict[str | None, list[str]] = {}
    for p in scene.clusters:
        parent = None
        for a in scene.clusters:
            if p.startswith(a + ".") and (parent is None or len(a) > len(parent)):
                parent = a
        children.setdefault(parent, []).append(p)
    members: dict[str | None, list[Item]] = {}
    for item in scene.items:
        home = next((a for a in reversed(item.ancestors) if a in scene.clusters), None)
        members.setdefault(home, []).append(item)
    counter = itertools.count()
    blocked: dict = {}
    for g in scene.groups:
        for b in g.blockers:
            blocked.setdefault(b, []).append(g.index)

    def item_ids(item: Item) -> dict:
        if ids is None:
            return {}
        classes = ["fxitem", f"fx{item.kind}"]
        classes += [f"g{g.index}" for g in dict.fromkeys(item.out_groups + item.inner_groups)]
        classes += [f"b{i}" for b in item.blockers for i in blocked.get(b, ())]
        return {"id": ids + item.id, "class": " ".join(dict.fromkeys(classes))}

    def emit(path: str | None, into: graphviz.Digraph) -> None:
        for item in members.get(path, ()):
            into.node(item.id, _attributes=_attrs(**_item_attrs(item), **item_ids(item)))
        for child in children.get(path, ()):
            extra = {"id": f"{ids}m:{child}", "class": "fxmod"} if ids is not None else {}
            cluster_attrs = _attrs(
                label=scene.clusters[child],
                style="rounded",
                color="#b0bec5",
                fontsize=10,
                fontcolor="#455a64",
                labeljust="l",
                tooltip=child,
                penwidth=1,
                **extra,
            )
            with into.subgraph(name=f"cluster_{next(counter)}", graph_attr=cluster_attrs) as sub:
                emit(child, sub)

    emit(None, dot)

    for k, e in enumerate(scene.edges):
        if e.src == PLUMBING_BOX:  # masks and flags reach every block: the box's tooltip
            continue  # lists what it feeds
        attrs: dict = {
            "color": _edge_colour(e.groups),
            "tooltip": e.tooltip,
            "penwidth": 2 if e.groups else 1,
        }
        if ids is not None:
            attrs["id"] = f"{ids}e{k}"
            attrs["class"] = " ".join(["fxedge"] + [f"g{g.index}" for g in e.groups])
        if e.groups and all(not g.widenable for g in e.groups):
            attrs["style"] = "dashed"
        if e.labels or e.names:
            texts = [(g, g.change) for g in e.labels] + [(g, short_name(g.name)) for g in e.names]
            attrs["label"] = _Html(
                "<"
                + "<BR/>".join(f'<FONT COLOR="{g.colour}">{_h(text)}</FONT>' for g, text in texts)
                + ">"
            )
            attrs["labeltooltip"] = "\n".join(g.describe() for g in e.labels + e.names)
        dot.edge(e.src, e.dst, _attributes=_attrs(**attrs))
    return dot.source


def dot_binary() -> str | None:
    """The path of Graphviz's ``dot`` program, or None when it is not on PATH."""
    return shutil.which("dot")


def write(source: str, path: str | os.PathLike, *, timeout: float = 600) -> Path:
    """Write DOT ``source`` to ``path``: the text for ``.dot``/``.gv``, otherwise rendered by
    Graphviz in the format the extension names (``.svg``, ``.png``, ``.pdf``)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in TEXT_FORMATS:
        path.write_text(source, encoding="utf-8")
        return path
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise InputError(
            f"cannot tell the drawing format from {path.name!r}: use a name ending "
            f"in .svg, .png, .pdf or .dot"
        )
    exe = dot_binary()
    if exe is None:
        raise GraphvizNotFoundError(
            f"writing {path.name} needs Graphviz's `dot` program, which is not on PATH: install "
            f"Graphviz (apt-get install graphviz, brew install graphviz or conda install "
            f"graphviz), or write the DOT text instead ({path.with_suffix('.dot').name})"
        )
    try:
        done = subprocess.run(
            [exe, f"-T{fmt}", "-o", str(path)],
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise DrawError(
            f"Graphviz took longer than {timeout:.0f} s to lay out the graph; try "
            f"collapse=... to fold modules"
        ) from e
    if done.returncode != 0:
        msg = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DrawError(
            f"Graphviz `dot` failed writing {path.name}: "
            f"{msg[0] if msg else 'exit code ' + str(done.returncode)}"
        )
    return path
