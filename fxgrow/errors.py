"""fxgrow's errors, all of them: every refusal is a subclass of :class:`FxgrowError` and says
what was wrong and what the user can do about it; the internal ones (the last section) never
leave fxgrow.  Modules that raise them re-export them under their old names."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.fx


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


class SpecialisedGraphError(FxgrowError):
    """A graph traced for its example inputs' sizes ran on inputs that take another branch."""


class GraphRunError(FxgrowError):
    """The graph fails on the example inputs at ``node`` (on meta tensors and for real).

    Whose fault that is -- the inputs, the front end's capture or fxgrow -- is for the caller
    to tell (``fxgrow.api.analyze`` runs the model itself to find out)."""

    def __init__(self, node: torch.fx.Node | None, cause: BaseException) -> None:
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        self.node = node.name if node is not None else None
        self.cause = cause
        where = (
            f"node {node.name!r} ({node.op} {_target_name(node)})"
            if node is not None
            else "the graph's inputs"
        )
        super().__init__(f"{where} fails: {type(cause).__name__}: {first}")


def _target_name(node: torch.fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__qualname__", None) or str(t)


class DeepenError(UnsupportedModelError):
    """An insertion that would not preserve the function (e.g. a non-idempotent activation)."""


class KernelError(InputError):
    """A kernel size that cannot be grown to exactly, or a module that is no convolution."""


class DrawError(FxgrowError):
    """The drawing could not be written (no Graphviz ``dot``, or ``dot`` failed)."""


class GraphvizNotFoundError(DrawError):
    """Graphviz's ``dot`` program is needed for SVG/PNG/PDF and was not found."""


class SpecError(InputError):
    """A model spec or input option that does not name a usable model or input."""


class ResourceError(FxgrowError):
    """The requested growth would not fit in this machine's memory."""


class CheckpointError(InputError):
    """A teacher checkpoint is unusable: a missing or truncated shard, a bad header, a tensor
    whose dtype or shape disagrees with the model's config."""


class WriteError(FxgrowError):
    """The student checkpoint could not be written (disk full, permissions); nothing that looks
    like a finished folder is left behind."""


class GrowthInterrupted(FxgrowError):
    """The run was interrupted (Ctrl-C); the partial output was removed."""


# -- internal: raised and caught inside fxgrow, never shown to the user ----------------------------
class StructureError(Exception):
    """Two layouts cannot be brought to a common structure (internal; turned into a blocker)."""


class RuleError(Exception):
    """A rule met a use it does not handle; the driver turns it into a blocker for the node."""


class NotStatic(Exception):
    """The value depends on tensor data, the device or the dtype (or could not be computed)."""


class RegistrationError(ValueError):
    """A rule registered twice for one target, or for an ATen overload this torch lacks."""


class MissingArgument(LookupError):
    """A call has no such argument and its reader gave no default (internal to the rules:
    ``analysis.arguments``)."""
