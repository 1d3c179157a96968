"""Growing during training: optimizer-state transfer (``optimizer``), the schedule after growth
(``schedule``), what trains after growth (``freeze``), the one-call helper (``grow``), the
expansion record's saved form (``record``) and ZeroRedundancyOptimizer (``zero``)."""
from .freeze import POLICIES, Freeze, freeze
from .grow import grow_during_training
from .optimizer import map_tensor, transfer_groups, transfer_optimizer
from .schedule import MODES, transfer_scheduler

__all__ = [
           "MODES",
           "POLICIES",
           "Freeze",
           "freeze",
           "grow_during_training",
           "map_tensor",
           "transfer_groups",
           "transfer_optimizer",
           "transfer_scheduler",
]
