"""Drawing models and their channel groups with Graphviz.

``fxgrow.draw(model, example_inputs, "model.svg")`` traces and analyses the model and draws its
graph: every channel group has its own colour on the edges (tensors) it spans and as a pale fill
of the nodes that produce it, nodes that block a group have a red outline (their tooltip says
why), each node shows its op and output shape, and modules are drawn as clusters.  With
``student=`` the drawn graph is the student's, in the teacher's colours: widened groups are
labelled ``64 → 96`` where they start, and nodes fxgrow inserted are outlined in teal and
marked ``+``.  ``collapse=`` folds modules into one box each (a depth, module path patterns, or
``"auto"``).  ``.dot`` files need nothing but Python; ``.svg``/``.png``/``.pdf`` need Graphviz's
``dot`` program."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.fx

from ..analysis import Analysis, as_tuple
from ..errors import InputError
from ..params import count_parameters
from .graph import (
    DGroup,
    Scene,
    blockers_by_node,
    build,
    matched_groups,
    node_roots,
    recorded_groups,
    teacher_groups,
)
from .render import DrawError, GraphvizNotFoundError, to_dot, write

__all__ = ["DGroup", "DrawError", "GraphvizNotFoundError", "Scene", "draw", "scene", "to_dot"]


def _analysis(model: Any, example_inputs: Any, trace_options: dict) -> Analysis:
    if isinstance(model, Analysis):
        return model
    if example_inputs is None:
        raise InputError("draw needs example inputs to trace and analyse the model")
    from ..api import analyze

    return analyze(model, example_inputs, **trace_options)


def _student_graph(student: Any, analysis: Analysis) -> Any:
    """A Hugging Face student (the teacher's class) captured as the teacher was; any other
    student as it is."""
    from ..hf.student import is_pretrained

    if isinstance(student, torch.fx.GraphModule) or not is_pretrained(student):
        return student
    from ..api import capture
    from ..growth import frontend, growth_record, update_growth_record

    graph = capture(
        student,
        analysis.example_inputs,
        frontend="export" if frontend(analysis.gm) == "export" else "auto",
    )
    record = growth_record(student)  # the widths it was grown to, for the captured graph
    if record is not None and record.group_widths is not None:
        update_growth_record(graph, group_widths=record.group_widths)
    return graph


def scene(
    model: Any,
    example_inputs: Any = None,
    *,
    student: torch.nn.Module | None = None,
    collapse: Any = None,
    title: str | None = None,
    sizes: bool = False,
    name: str | None = None,
    **trace_options: Any,
) -> Scene:
    """What ``draw`` shows (items, edges, groups, clusters), without Graphviz.  ``name``: the
    model's name in the default title (its class name)."""
    analysis = _analysis(model, example_inputs, trace_options)
    if name is None:
        name = (
            type(model).__name__ if not isinstance(model, Analysis) else type(analysis.gm).__name__
        )
    blockers = blockers_by_node(analysis)
    if student is None:
        groups, by_root = teacher_groups(analysis)
        widenable = sum(1 for g in groups if g.widenable)
        default = f"{name}: {len(groups)} channel groups, {widenable} widenable"
        return build(
            analysis.gm,
            analysis.state.vals,
            node_roots(analysis),
            by_root,
            groups,
            blockers,
            collapse=collapse,
            title=title or default,
            sizes=sizes,
        )
    student = _student_graph(student, analysis)
    if not isinstance(student, torch.fx.GraphModule):
        raise InputError(
            "student= must be what fxgrow.widen/deepen/grow returned (a "
            f"GraphModule or the teacher's Hugging Face class), got "
            f"{type(student).__name__}"
        )
    from ..analysis import analyze as analyze_graph

    inputs = analysis.example_inputs
    teacher_names = {n.name for n in analysis.gm.graph.nodes}
    recorded = recorded_groups(analysis, student)
    try:
        if recorded is None:  # no usable growth record: analyse the student, match groups
            s_analysis = analyze_graph(student, inputs)
            groups, by_root = matched_groups(analysis, s_analysis)
            roots, vals = node_roots(s_analysis), s_analysis.state.vals
        else:  # the teacher's groups at the recorded widths, on the nodes the student kept
            from ..analysis.shapes import propagate

            groups, by_root = recorded
            roots, vals = node_roots(analysis), propagate(student, inputs)
    except Exception:  # colour what the teacher knows, by node name
        from ..analysis.shapes import propagate

        groups, t_by_root = teacher_groups(analysis)
        by_root = t_by_root
        roots = {k: v for k, v in node_roots(analysis).items()}
        vals = propagate(student, inputs)
    widened = sum(1 for g in groups if g.changed)
    inserted = sum(
        1 for n in student.graph.nodes if n.name not in teacher_names and n.op != "get_attr"
    )
    default = (
        f"{name}: teacher → student · {widened} groups widened · {inserted} ops inserted · "
        f"parameters {count_parameters(analysis.gm):,} → {count_parameters(student):,}"
    )
    return build(
        student,
        vals,
        roots,
        by_root,
        groups,
        blockers,
        teacher_names=teacher_names,
        collapse=collapse,
        title=title or default,
        sizes=sizes,
    )


def draw(
    model: Any,
    example_inputs: Any = None,
    path: str | os.PathLike | None = None,
    *,
    student: torch.nn.Module | None = None,
    collapse: Any = None,
    legend: bool | str = "auto",
    rankdir: str = "TB",
    title: str | None = None,
    sizes: bool = False,
    dpi: float | None = None,
    graph_attr: dict | None = None,
    **trace_options: Any,
) -> str:
    """Draw ``model`` (a module, a GraphModule or an ``fxgrow.analyze`` result) and its channel
    groups; return the DOT source and, with ``path``, write it (``.dot``/``.gv``: the text;
    ``.svg``/``.png``/``.pdf``: rendered by Graphviz's ``dot``).

    ``student``: the GraphModule that ``fxgrow.widen``/``deepen``/``grow`` made from ``model``;
    draws it in the teacher's group colours with ``old → new`` widths and inserted nodes marked.
    ``collapse``: ``None`` draws every node; an int folds every module at that depth of the
    module tree (``2``: ``layer1.0``) into one box; a list of module paths or glob patterns
    (``["layer*.*"]``) folds those; ``"auto"`` picks the deepest depth that leaves at most
    120 boxes (and folds nothing in graphs of up to 120 nodes).  Folded boxes show the colours of the
    groups inside them.  ``legend``: a table of the groups (``"auto"``: all of them up to 40,
    else the blocked and new ones); ``rankdir``: ``TB`` or ``LR``; ``sizes``: also draw the
    nodes that compute sizes and other non-tensor values (hidden by default);
    ``dpi``: resolution of PNG output.  ``trace_options`` go to ``fxgrow.analyze``
    (``frontend=``, ``leaf_modules=`` ...).

    A ``.html`` path writes an interactive page instead (``fxgrow.drawing.html``): an overview
    folded as ``collapse="auto"``, one detailed view per folded module, the student beside
    the teacher, a search box, groups highlighted on click, pan and zoom; one self-contained
    file.  It returns the teacher overview's DOT source."""
    if example_inputs is not None:
        example_inputs = as_tuple(example_inputs)
    if path is not None and str(path).lower().endswith((".html", ".htm")):
        from .html import to_html, views_of

        analysis = _analysis(model, example_inputs, trace_options)
        name = type(model).__name__ if not isinstance(model, Analysis) else "model"
        views = views_of(analysis, student, name=name, title=title)
        page = to_html(views, analysis, title=title or views[0].scene.title)
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
        return to_dot(views[0].scene, rankdir=rankdir, legend=legend)
    s = scene(
        model,
        example_inputs,
        student=student,
        collapse=collapse,
        title=title,
        sizes=sizes,
        **trace_options,
    )
    attrs = dict(graph_attr or {})
    if dpi is not None:
        attrs["dpi"] = dpi
    source = to_dot(s, rankdir=rankdir, legend=legend, graph_attr=attrs)
    if path is not None:
        write(source, path)
    return source
