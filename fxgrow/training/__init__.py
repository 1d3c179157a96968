"""Growing during training: optimizer-state transfer (``optimizer``), the schedule after growth
(``schedule``), what trains after growth (``freeze``), the one-call helper (``grow``), the
expansion record's saved form (``record``), ZeroRedundancyOptimizer (``zero``) and dropout
masks tied across replicas (``tied``)."""

from .freeze import POLICIES, Freeze, freeze
from .grow import grow_during_training
from .optimizer import map_tensor, transfer_groups, transfer_optimizer
from .schedule import MODES, transfer_scheduler
from .tied import TiedAttention, TiedDropout, tie_dropout, untie

__all__ = [
    "MODES",
    "POLICIES",
    "Freeze",
    "TiedAttention",
    "TiedDropout",
    "freeze",
    "grow_during_training",
    "map_tensor",
    "tie_dropout",
    "transfer_groups",
    "transfer_optimizer",
    "transfer_scheduler",
    "untie",
]
