"""Errors of streamed growth: every one says which file or tensor and what to do."""

from __future__ import annotations

from ..errors import FxgrowError, InputError


class CheckpointError(InputError):
    """A teacher checkpoint is unusable: a missing or truncated shard, a bad header, a tensor
    whose dtype or shape disagrees with the model's config."""


class WriteError(FxgrowError):
    """The student checkpoint could not be written (disk full, permissions); nothing that looks
    like a finished folder is left behind."""


class GrowthInterrupted(FxgrowError):
    """The run was interrupted (Ctrl-C); the partial output was removed."""
