"""fxgrow: grow trained PyTorch models (Net2Net) as exact torch.fx graph rewrites.

Importing the package is cheap (torch is not imported): each public name is imported on first
use, so ``fxgrow --help`` starts fast while ``import fxgrow; fxgrow.widen(...)`` works as ever.
The packages follow the pipeline: ``frontend`` (trace) → ``analysis`` (shapes, channel spaces,
rules) → ``planning`` → ``rewrite`` → ``verify``; beside them ``drawing``, ``io``, ``stream``,
``hf``, ``training``, ``within`` and ``cli``."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {  # public name -> the module that defines it ("" : the name is a submodule)
    "Analysis": ".analysis",
    "Blocker": ".analysis",
    "ChannelGroup": ".analysis",
    "Member": ".analysis",
    "analyze": ".api",
    "deepen": ".api",
    "groups": ".api",
    "grow": ".api",
    "plan": ".api",
    "stages": ".api",
    "widen": ".api",
    "BlockedGroupError": ".errors",
    "FxgrowError": ".errors",
    "InputError": ".errors",
    "PreservationError": ".errors",
    "TraceError": ".errors",
    "UnknownGroupError": ".errors",
    "UnsupportedModelError": ".errors",
    "WidthError": ".errors",
    "LoadError": ".errors",
    "SaveError": ".errors",
    "ConfigError": ".errors",
    "trace": ".frontend",
    "DeepenError": ".rewrite.deepen",
    "GroupChange": ".planning",
    "ReplicationMap": ".planning",
    "WidenPlan": ".planning",
    "grow_during_training": ".training",
    "map_tensor": ".training",
    "transfer_optimizer": ".training",
    "transfer_scheduler": ".training",
    "grow_kernel": ".rewrite.kernel",
    "KernelError": ".rewrite.kernel",
    "rank_groups": ".planning.ranking",
    "GroupScore": ".planning.ranking",
    "register_rule": ".analysis.rules.public",
    "Comparison": ".verify",
    "compare": ".verify",
    "draw": ".drawing",
    "GrowthRecord": ".growth",
    "growth_record": ".growth",
    "load": ".io",
    "save": ".io",
    "compile": "",
    "passes": "",
    "hf": "",
    "stream": "",
    "integrations": "",
}

__all__ = [
    "Analysis",
    "BlockedGroupError",
    "Blocker",
    "ChannelGroup",
    "Comparison",
    "ConfigError",
    "DeepenError",
    "FxgrowError",
    "GroupChange",
    "GroupScore",
    "GrowthRecord",
    "InputError",
    "KernelError",
    "LoadError",
    "Member",
    "PreservationError",
    "ReplicationMap",
    "SaveError",
    "TraceError",
    "UnknownGroupError",
    "UnsupportedModelError",
    "WidenPlan",
    "WidthError",
    "analyze",
    "compare",
    "compile",
    "deepen",
    "draw",
    "groups",
    "grow",
    "grow_during_training",
    "grow_kernel",
    "growth_record",
    "hf",
    "load",
    "map_tensor",
    "passes",
    "plan",
    "rank_groups",
    "register_rule",
    "save",
    "stages",
    "stream",
    "trace",
    "transfer_optimizer",
    "transfer_scheduler",
    "widen",
]


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        try:  # a submodule (fxgrow.io, fxgrow.within ...), as the eager package exposed them
            value: Any = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module 'fxgrow' has no attribute {name!r}") from None
    elif where == "":
        value = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
