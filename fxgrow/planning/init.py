"""Initialisations of new units, and where each one is exact.

``"replicate"`` (Net2Net): new unit j copies unit g(j) and the copies share its fan-out.

``"zero"`` (MSG / LLaMA-Pro style) and ``"gradmax"``: new units get their own, non-zero fan-in
and a zero fan-out.  In fxgrow's terms this is a replication map whose shares are 1 for the
old units and 0 for the new ones (every consumer column of a new unit is zero, so the
rewrite stays a valid Net2Net split), after which the new units' producer rows are
overwritten (``rewrite/init.py``).  Overwriting them is exact iff the new units' values reach
the output only through consumers (linear/conv columns, now zero) and per-channel ops between
them -- residual adds of the same group, activations, BatchNorm, concatenations, shuffles all
keep channel j apart.  Three things see the values themselves and make it inexact:

* a normalisation over the channel (LayerNorm, RMSNorm, GroupNorm) or a mean over it: the
  statistics would include the new values (``analysis.state.uniform``);
* a max/min reduction over the channel (exact for copies, not for fresh values);
* groups normalised together with channels that cannot grow (``plan._stuck_roots``).

Such groups take ``"replicate"`` instead (exact with whole-multiple widths); the plan records
the initialisation each group actually got (``GroupChange.init``).  A channel-shuffle chain
that no replication grows, named in ``widths=``, takes ``"zero"`` units placed through its
shuffles instead of appended (``placement.py``; ``WidenPlan.placements``).
"""

from __future__ import annotations

from ..analysis import Analysis
from ..analysis.arguments import argument
from ..analysis.rules.registry import has_trait
from ..analysis.values import TensorInfo
from ..errors import InputError

INITS = ("replicate", "zero", "gradmax")


def check_init(init: str) -> str:
    """``init`` itself if it is one of INITS; an InputError naming the choices otherwise."""
    if init not in INITS:
        raise InputError(f"init must be one of {', '.join(repr(i) for i in INITS)}, got {init!r}")
    return init


def fresh_init_blockers(analysis: Analysis) -> dict[int, str]:
    """Class root -> why new units of that class cannot take a fresh fan-in exactly."""
    state = analysis.state
    sp = state.spaces
    out: dict[int, str] = {}
    for lay, blocker in state.uniform:
        for r in sp.roots(lay):
            out.setdefault(
                r,
                f"{blocker.node}: {blocker.reason} (its statistics would see "
                f"the new units' values)",
            )
    for node in state.gm.graph.nodes:
        if node.op not in ("call_function", "call_method") or not has_trait(
            node.target, "extremum"
        ):
            continue
        x = state.values.get(argument(node, 0, None, None))
        if not isinstance(x, TensorInfo):
            continue
        dims = argument(node, 1, "dim", None)
        if dims is None or dims == () or dims == []:
            dims = list(range(x.ndim))
        elif isinstance(dims, int):
            dims = [dims]
        for d in dims:
            if isinstance(d, int):
                for r in sp.roots(x.layouts[d % max(1, x.ndim)]):
                    out.setdefault(
                        r, f"{node.name}: max/min over the channel would see the new units' values"
                    )
    return out
