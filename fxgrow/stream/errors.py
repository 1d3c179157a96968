"""Errors of streamed growth: every one says which file or tensor and what to do (defined in
:mod:`fxgrow.errors`, importable from here)."""

from __future__ import annotations

from ..errors import CheckpointError, GrowthInterrupted, WriteError

__all__ = ["CheckpointError", "GrowthInterrupted", "WriteError"]
