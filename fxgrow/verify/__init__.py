"""Verification of grown students against their teachers."""

from .compare import Comparison, compare, verify  # noqa: F401
from .runs import check_runs  # noqa: F401
