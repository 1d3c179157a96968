"""Guards of a graph specialised to its example inputs' sizes.

Where fx meets Python control flow on sizes (``if H != self.size:``, ``int(x.shape[-1])``,
``max(pad, 0)``), fxgrow's tracer takes the branch the example inputs take and records the
decision as a call of :func:`traced_as`: the condition (or number) is still computed by the
graph, and a run on inputs of other sizes that would take another branch raises instead of
silently following the traced one.  The analysis treats the sizes a guard reads like any
other use of a size: one read from a channel axis blocks that channel group (a wider student
would take another branch); spatial and batch sizes are fixed anyway."""

from __future__ import annotations

from typing import Any

from ..errors import SpecialisedGraphError


def traced_as(value: Any, expected: Any, where: str) -> None:
    """Raise unless ``value``, converted as at trace time (``bool``, ``int``, ``float``: the
    type of ``expected``), is ``expected``.  Computes nothing."""
    now = type(expected)(value)
    if now != expected:
        raise SpecialisedGraphError(
            f"{where}: the graph was traced for inputs where this is {expected!r}, now it is "
            f"{now!r}; capture the model again with inputs of these sizes"
        )
