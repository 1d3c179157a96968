"""Guards of control flow the tracer specialised to the example inputs (``traced_as``).

A guard computes nothing; it checks that a condition or number computed from sizes is what it
was at trace time.  The branch taken after it is exact for the student only if the condition
keeps its value: a size read from a channel axis could change it when that group grows, so
each such axis is blocked (naming the traced line).  Sizes of fixed axes (batch, spatial)
need nothing: the student reads the same sizes as the teacher there."""

from __future__ import annotations

from ...frontend.guards import traced_as
from ..context import RuleContext
from .common import sizes_in
from .registry import rule


@rule(traced_as)
def guard(cx: RuleContext):
    """traced_as(value, expected, where): blocks every channel axis ``value`` was read from."""
    where = cx.concrete(cx.arg(2, "where", "traced code"))
    for size in sizes_in(cx, cx.arg(0, "value")):
        for lay in size.layouts:
            cx.block(
                lay,
                f"its size decides control flow at {where}, which fxgrow traced for "
                f"the example inputs' sizes",
            )
        cx.sizes_handled(size)
    return None
