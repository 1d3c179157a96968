"""Rules for timm's no-trace modules that fxgrow keeps whole (when timm is installed)."""
from __future__ import annotations

from ..context import RuleContext, RuleError
from . import elementwise
from .norm import per_channel
from .registry import lookup, rule

try:
    from timm.layers import norm_act as _norm_act
except Exception:  # timm absent
    _norm_act = None


def _pointwise(module) -> bool:
    """A submodule that acts unit by unit (activation, dropout, identity)."""
    import torch.fx
    node = torch.fx.Graph().create_node("call_module", "m")
    entry = lookup(node, module)
    return entry is not None and entry.fn is elementwise.unary


if _norm_act is not None:
    _NORM_ACT = tuple(getattr(_norm_act, n) for n in
                      ("BatchNormAct2d", "SyncBatchNormAct", "FrozenBatchNormAct2d")
                      if hasattr(_norm_act, n))

    @rule(*_NORM_ACT)
    def batchnorm_act(cx: RuleContext):
        """timm BatchNormAct2d: batch norm per channel (axis 1), then its dropout and activation,
        which must act unit by unit."""
        m = cx.module
        for part in ("drop", "act"):
            sub = getattr(m, part, None)
            if sub is not None and not _pointwise(sub):
                raise RuleError(f"its {part} ({type(sub).__name__}) is not a known pointwise op")
        x = cx.tensor(cx.arg(0))
        per_channel(cx, x.layouts[1])
        return cx.out(x.layouts)
