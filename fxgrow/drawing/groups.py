"""Channel groups as drawn, read from the analysis: the classes each node's output carries, the
nodes that block a group, and the teacher's groups matched to the student's (by name, then by
shared parameters) so that a widened group keeps its colour -- or, for a widened student,
the teacher's groups at the widths its growth record gives (``recorded_groups``)."""

from __future__ import annotations

import torch
from torch.utils import _pytree as pytree

from ..analysis import Analysis
from ..analysis.layout import Blocker
from ..analysis.values import TensorInfo
from ..growth import frontend, growth_record
from .elements import DGroup
from .palette import palette


def node_roots(analysis: Analysis) -> dict[str, list[int]]:
    """fx node name -> roots of the visible channel groups on its output, in axis order."""
    sp = analysis.state.spaces
    visible = {g.root for g in analysis.groups}
    out: dict[str, list[int]] = {}
    for node, value in analysis.state.values.items():
        roots: list[int] = []
        for leaf in pytree.tree_leaves(value, is_leaf=lambda v: isinstance(v, TensorInfo)):
            if isinstance(leaf, TensorInfo):
                for lay in leaf.layouts:
                    roots.extend(r for r in sp.roots(lay) if r in visible)
        out[node.name] = list(dict.fromkeys(roots))
    # a model input's channel axis is fixed (no class of its own); show the groups it feeds,
    # those blocked by that input (conv1[in])
    for g in analysis.groups:
        for b in g.blockers:
            if b.kind == "boundary" and b.node in out and g.root not in out[b.node]:
                source = next((n for n in analysis.state.values if n.name == b.node), None)
                if source is not None and source.op == "placeholder":
                    out[b.node].append(g.root)
    return out


def blockers_by_node(analysis: Analysis) -> dict[str, list[Blocker]]:
    """fx node name -> the blockers it causes to channel groups (ops fxgrow cannot widen
    through; not the model's boundaries nor spatial axes).  Unknown ops that touch no channel
    group (mask and position arithmetic) are not blockers of anything."""
    found: dict[str, list[Blocker]] = {}
    for g in analysis.groups:
        for b in g.blockers:
            if b.kind not in ("boundary", "structure"):
                found.setdefault(b.node, []).append(b)
    return {k: list(dict.fromkeys(v)) for k, v in found.items()}


def teacher_groups(analysis: Analysis) -> tuple[list[DGroup], dict[int, DGroup]]:
    """The drawn groups of a single model (old width = width), one colour each, and class root
    -> drawn group."""
    colours = palette(len(analysis.groups))
    groups = [
        DGroup(i, g.name, colours[i], g.width, g.width, g.blockers)
        for i, g in enumerate(analysis.groups)
    ]
    return groups, {g.root: d for g, d in zip(analysis.groups, groups)}


def matched_groups(teacher: Analysis, student: Analysis) -> tuple[list[DGroup], dict[int, DGroup]]:
    """The student's groups with the teacher's colours: matched by name, then by a parameter
    axis both share; unmatched groups (inside inserted layers) get colours of their own."""
    t_groups, _ = teacher_groups(teacher)
    by_name = {g.name: d for g, d in zip(teacher.groups, t_groups)}
    by_member: dict[tuple, DGroup] = {}
    for g, d in zip(teacher.groups, t_groups):
        for m in g.members:
            if m.kind in ("parameter", "buffer"):
                by_member.setdefault((m.target, m.axis, m.role), d)
    extra = palette(len(t_groups) + len(student.groups))[len(t_groups) :]
    out: dict[int, DGroup] = {}
    drawn: list[DGroup] = []
    used: set[int] = set()
    for g in student.groups:
        t = by_name.get(g.name)
        if t is None or t.index in used:
            t = next(
                (
                    by_member[(m.target, m.axis, m.role)]
                    for m in g.members
                    if (m.target, m.axis, m.role) in by_member
                    and by_member[(m.target, m.axis, m.role)].index not in used
                ),
                None,
            )
        if t is not None:
            used.add(t.index)
            d = DGroup(t.index, t.name, t.colour, g.width, t.old, t.blockers)
        else:
            d = DGroup(len(t_groups) + len(drawn), g.name, extra.pop(0), g.width, None, g.blockers)
        drawn.append(d)
        out[g.root] = d
    drawn.sort(key=lambda d: d.index)
    return drawn, out


def recorded_groups(
    teacher: Analysis, student: torch.nn.Module
) -> tuple[list[DGroup], dict[int, DGroup]] | None:
    """The teacher's groups at the widths the student's growth record gives them (the
    student's nodes are the teacher's, by name, plus the scales the rewrite inserted).  None
    when the record cannot say: no widths recorded (layers were inserted, or fxgrow did not
    grow it), a group this analysis does not have, or a parameter whose shape in the student
    disagrees with the recorded width -- then the student is analysed and matched instead."""
    record = growth_record(student)
    widths = record.group_widths if record is not None else None
    if widths is None or not set(widths) <= {g.name for g in teacher.groups}:
        return None
    if frontend(student) != frontend(teacher.gm):
        return None
    tensors: dict[str, torch.Tensor] = dict(student.named_parameters(remove_duplicate=False))
    tensors.update(student.named_buffers(remove_duplicate=False))
    groups, _ = teacher_groups(teacher)
    drawn: list[DGroup] = []
    by_root: dict[int, DGroup] = {}
    for g, d in zip(teacher.groups, groups):
        unit = widths.get(g.name, g.unit)
        for m in g.members:  # a member spanning its whole axis spans the student's
            if m.kind not in ("parameter", "buffer") or m.axis is None:
                continue
            full = teacher.state.tensors[teacher.state.canonical.get(m.target, m.target)]
            if m.positions != full.shape[m.axis]:
                continue
            t = tensors.get(m.target)
            if t is None or t.shape[m.axis] != m.positions // g.unit * unit:
                return None
        new = DGroup(d.index, d.name, d.colour, g.width // g.unit * unit, d.old, d.blockers)
        drawn.append(new)
        by_root[g.root] = new
    return drawn, by_root
