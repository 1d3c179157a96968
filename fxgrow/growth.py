"""The growth record: what fxgrow knows about a graph it traced or a student it grew.

One frozen :class:`GrowthRecord` per model, read with :func:`growth_record` and written with
:func:`set_growth_record` / :func:`update_growth_record`.  It lives in the model's ``meta``
dict (a GraphModule's own, or one fxgrow gives a Hugging Face student) under :data:`KEY`, so
``copy.deepcopy`` of a GraphModule carries it.  ``fxgrow.save`` writes it whole and
``fxgrow.load`` gives it back (``fxgrow.io.growth_codec``).

Invariant: a record is never mutated; every writer replaces it with a new one
(``dataclasses.replace``), so a record a caller holds keeps what it said."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

if TYPE_CHECKING:
    from .verify.compare import Comparison
    from .within.detections import WholeComparison

KEY = "fxgrow"


class AxisExpansion(NamedTuple):
    """One axis of a widened tensor: student position j copies teacher position
    ``source[j]`` and carries the share ``fraction[j]`` of it; ``consumed`` when the axis
    reads a channel space (consumer columns) rather than writes it."""

    axis: int
    source: torch.Tensor  # long
    fraction: torch.Tensor  # float64 shares (or the model's dtype)
    consumed: bool


Expansions = Mapping[str, tuple[AxisExpansion, ...]]  # tensor name -> its channel axes


@dataclass(frozen=True)
class GrowthRecord:
    """How a graph was captured and how a student was grown from its teacher.

    ``expansions``: per tensor name (every alias of a tied tensor), its axes along channel
    spaces -- what ``transfer_optimizer``, ``map_tensor`` and freezing read.
    ``output_positions``: with ``outputs="grow"``, per output and axis the student positions
    that hold the teacher's (None: the axis did not grow).  ``layer_sources``: the teacher
    layer each layer of a deepened Hugging Face stack copies.  ``renumbered``: a Hugging Face
    student whose inserted layers were renumbered (its names are not the graph's).
    ``inexact``: the rewrite is approximate by request (no preservation check).  ``error`` /
    ``whole``: the measured preservation of the student / of the whole model around it
    (``within=``); ``fresh_error``: a Hugging Face student's largest relative deviation on
    fresh inputs (its config rebuilt the graph's widths).  ``gradmax``: the GradMax
    objective reached.  ``trainable``: the freezing policy ``grow_during_training`` applied.
    ``config_fields``: the config fields a Hugging Face student changed.  ``weights``: False
    for a model loaded without its tensor data.  ``group_widths``: the width of each widened
    group's replicated space in the student (``ChannelGroup.unit``), by group name: the
    teacher -> student map drawing reads; None once layers are inserted (the graph no
    longer matches the teacher's node for node)."""

    frontend: str | None = None  # "fx" or "export": how the graph was captured
    captured_training: bool | None = None  # the mode the graph was captured in
    expansions: Expansions = field(default_factory=dict)
    output_positions: tuple[tuple[torch.Tensor | None, ...], ...] | None = None
    layer_sources: tuple[int, ...] | None = None
    renumbered: bool = False
    inexact: bool = False
    error: Comparison | None = None
    whole: WholeComparison | None = None
    fresh_error: float | None = None
    gradmax: float | None = None
    trainable: str | None = None
    config_fields: Mapping[str, Any] | None = None
    weights: bool = True
    group_widths: Mapping[str, int] | None = None


def growth_record(model: Any) -> GrowthRecord | None:
    """The record of ``model`` (a GraphModule, a Hugging Face student ...), or None when
    fxgrow neither traced nor grew it."""
    meta = getattr(model, "meta", None)
    record = meta.get(KEY) if isinstance(meta, dict) else None
    return record if isinstance(record, GrowthRecord) else None


def set_growth_record(model: Any, record: GrowthRecord) -> None:
    """Make ``record`` the record of ``model`` (a ``meta`` dict is given to a model that has
    none, as a Hugging Face model)."""
    if not isinstance(record, GrowthRecord):
        raise TypeError(f"expected a GrowthRecord, got {type(record).__name__}")
    meta = getattr(model, "meta", None)
    if not isinstance(meta, dict):
        meta = {}
        model.meta = meta
    meta[KEY] = record


def update_growth_record(model: Any, **changes: Any) -> GrowthRecord:
    """``model``'s record (an empty one if it has none) with ``changes``, made its record."""
    record = replace(growth_record(model) or GrowthRecord(), **changes)
    set_growth_record(model, record)
    return record


def expansions(model: Any) -> Expansions:
    """The expansion record of ``model`` (empty when it was not widened)."""
    record = growth_record(model)
    return record.expansions if record is not None else {}


def frontend(model: Any) -> str:
    """``"export"`` when torch.export captured ``model``'s graph, else ``"fx"``."""
    record = growth_record(model)
    return "export" if record is not None and record.frontend == "export" else "fx"


def output_positions(model: Any) -> tuple[tuple[torch.Tensor | None, ...], ...] | None:
    """With ``outputs="grow"``, per output and axis the student positions holding the
    teacher's; None for a student whose outputs keep their shape."""
    record = growth_record(model)
    return record.output_positions if record is not None else None


def layers_inserted(model: Any) -> None:
    """Layers were inserted into ``model``'s graph: its nodes no longer match the teacher's
    one for one, so the recorded group widths are dropped (drawing matches groups instead)."""
    record = growth_record(model)
    if record is not None and record.group_widths is not None:
        set_growth_record(model, replace(record, group_widths=None))
