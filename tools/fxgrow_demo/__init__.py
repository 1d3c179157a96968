"""The fxgrow demo (an example, not part of the library): accelerated learning by exact growth
on scikit-learn's digits.  ``bash tools/demo.sh`` runs it (``python -m fxgrow_demo`` with
``tools/`` on the path); ``tools/reproduce.py`` reuses its building blocks."""

from .data import Batches, Data, digits, shift  # noqa: F401
from .demo import DEFAULT_OUT, Config, run  # noqa: F401
from .model import BasicBlock, SmallResNet, seeded  # noqa: F401
from .report import DemoResult, plot, report, spike_stats  # noqa: F401
from .training import (  # noqa: F401
    History,
    Progress,
    cosine,
    evaluate,
    forward_macs,
    make_optimizer,
    train,
    train_flops_per_sample,
)
