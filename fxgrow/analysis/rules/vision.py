"""Rules for torchvision functions that fx keeps as calls (torchvision wraps them)."""
from __future__ import annotations

from ..context import RuleContext
from .common import same_layouts
from .registry import rule

try:
    from torchvision.ops import stochastic_depth as _stochastic_depth
except Exception:  # torchvision absent
    _stochastic_depth = None

if _stochastic_depth is not None:
    @rule(_stochastic_depth)
    def stochastic_depth(cx: RuleContext):
        """torchvision stochastic_depth: drops whole samples (mode "row") or the whole batch;
        the mask is shared by every channel, so replicas stay equal: pass-through."""
        return same_layouts(cx)
