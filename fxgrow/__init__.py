"""fxgrow: grow trained PyTorch models (Net2Net) as exact torch.fx graph rewrites."""
from .analysis import Analysis, Blocker, ChannelGroup, Member
from .api import analyze, deepen, groups, grow, plan, stages, widen
from .errors import (BlockedGroupError, ConfigError, FxgrowError, InputError, PreservationError, TraceError,
                     UnknownGroupError, UnsupportedModelError, WidthError)
from .frontend import trace
from .rewrite.deepen import DeepenError
from .plan import GroupChange, ReplicationMap, WidenPlan
from .training import grow_during_training, map_tensor, transfer_optimizer, transfer_scheduler
from .verify import Comparison, compare
from .draw import draw  # noqa: E402  (the function; the package is fxgrow.draw's module)
from .io import load, save  # noqa: E402
from . import compile, hf, passes  # noqa: E402,F401

__version__ = "0.1.0"

__all__ = [
    "Analysis", "Blocker", "ChannelGroup", "Member", "analyze", "groups", "plan", "widen",
    "deepen", "grow", "stages", "DeepenError", "transfer_optimizer", "grow_during_training",
    "map_tensor", "transfer_scheduler",
    "trace", "compare", "Comparison", "WidenPlan", "GroupChange", "ReplicationMap",
    "FxgrowError", "TraceError", "InputError", "UnknownGroupError", "WidthError",
    "BlockedGroupError", "UnsupportedModelError", "PreservationError", "ConfigError", "hf",
    "draw", "save", "load", "passes", "compile",
]
from .rewrite.kernel import KernelError, grow_kernel  # noqa: E402
from .ranking import GroupScore, rank_groups  # noqa: E402

__all__ += ["grow_kernel", "KernelError", "rank_groups", "GroupScore"]
