"""Verification of grown students against their teachers."""
from .compare import Comparison, compare, verify  # noqa: F401
