"""fxgrow's errors: every refusal is a subclass of :class:`FxgrowError` and says what was wrong
and what the user can do about it."""

from __future__ import annotations


class FxgrowError(Exception):
    """Base class of every error fxgrow raises on purpose."""


class TraceError(FxgrowError):
    """The model could not be turned into a graph (fx symbolic tracing or torch.export failed)."""


class InputError(FxgrowError):
    """Example inputs, widths, names or options given by the user are not usable as given."""


class UnknownGroupError(InputError):
    """A width was requested for a name that is neither a group nor a module of any group."""


class WidthError(InputError):
    """A requested width is not an integer, shrinks a group, or cannot be met exactly."""


class BlockedGroupError(FxgrowError):
    """A group that cannot be widened exactly was asked to widen; the message names its blockers."""


class UnsupportedModelError(FxgrowError):
    """The model uses a construct fxgrow refuses to rewrite (the message names the node)."""


class PreservationError(FxgrowError):
    """Verification found that the student does not compute the teacher's function."""


class SaveError(FxgrowError):
    """The model cannot be saved in fxgrow's format (the message says what to do instead)."""


class LoadError(FxgrowError):
    """A file cannot be loaded as an fxgrow model: not one, damaged, lying about its contents,
    or naming code outside what fxgrow trusts (the message names it and how to trust it)."""


class ConfigError(UnsupportedModelError):
    """A grown Hugging Face model has no config of its class (or a target config cannot be
    reached exactly); the message names the tensors and what would have one."""
