"""Rewrites: turn a plan into a student GraphModule."""

from .widen import apply  # noqa: F401
