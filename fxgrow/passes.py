"""fxgrow as torch.fx passes: ``WidenPass``, ``DeepenPass``, ``GrowPass`` and ``VerifyPass``.

Each is a :class:`torch.fx.passes.infra.pass_base.PassBase` returning a ``PassResult``, so it
composes with other fx passes in :class:`torch.fx.passes.infra.pass_manager.PassManager`::

    from torch.fx.passes.infra.pass_manager import PassManager, pass_result_wrapper
    from torch.fx.experimental.optimization import fuse

    pm = PassManager([pass_result_wrapper(lambda gm: fuse(gm)),   # conv-BN fusion
                      fxgrow.passes.WidenPass(x, factor=1.5),
                      fxgrow.passes.VerifyPass(teacher, x)])
    student = pm(fxgrow.trace(teacher)).graph_module

torch marks the pass infrastructure as not backward compatible; these classes only implement
``call`` (the fxgrow function) and keep nothing else of it.  A pass returns a *new*
GraphModule (fxgrow never modifies its input), which the PassManager hands to the next pass.
Example inputs are needed because fxgrow's analysis runs shapes through the graph."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from .analysis import as_tuple
from .params import count_parameters

if TYPE_CHECKING:
    from .verify.compare import Comparison

__all__ = ["DeepenPass", "GrowPass", "VerifyPass", "WidenPass"]


class _FxgrowPass(PassBase):
    """Common part: example inputs, and whether to verify each step against its input."""

    def __init__(self, example_inputs: Any, *, verify: bool = True) -> None:
        self.example_inputs = as_tuple(example_inputs)
        self.verify = verify


class WidenPass(_FxgrowPass):
    """Net2WiderNet as a pass: ``fxgrow.widen(gm, example_inputs, widths=..., factor=...)``."""

    def __init__(
        self,
        example_inputs: Any,
        *,
        widths: Mapping[str, int] | None = None,
        factor: float | None = None,
        seed: int = 0,
        verify: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(example_inputs, verify=verify)
        self.widths, self.factor, self.seed, self.options = widths, factor, seed, options

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        """Widen ``graph_module``; ``modified`` when its parameter count changed."""
        from .api import widen

        student = widen(
            graph_module,
            self.example_inputs,
            widths=self.widths,
            factor=self.factor,
            seed=self.seed,
            verify=self.verify,
            **self.options,
        )
        changed = count_parameters(student) != count_parameters(graph_module)
        return PassResult(student, changed)


class DeepenPass(_FxgrowPass):
    """Net2DeeperNet as a pass: ``fxgrow.deepen(gm, example_inputs, after=..., kind=...)``."""

    def __init__(
        self,
        example_inputs: Any,
        *,
        after: str | Iterable[str],
        kind: str = "identity",
        verify: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(example_inputs, verify=verify)
        self.after, self.kind, self.options = after, kind, options

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        """Insert identity layers after the named modules; always ``modified``."""
        from .api import deepen

        student = deepen(
            graph_module,
            self.example_inputs,
            after=self.after,
            kind=self.kind,
            verify=self.verify,
            **self.options,
        )
        return PassResult(student, True)


class GrowPass(_FxgrowPass):
    """Widen and deepen in one pass: ``fxgrow.grow(gm, example_inputs, blocks=..., width=...)``."""

    def __init__(
        self,
        example_inputs: Any,
        *,
        blocks: Mapping[str, int] | None = None,
        width: float | Mapping[str, int] | None = None,
        seed: int = 0,
        verify: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(example_inputs, verify=verify)
        self.blocks, self.width, self.seed, self.options = blocks, width, seed, options

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        """Add blocks and/or widen; ``modified`` when any growth was asked for."""
        from .api import grow

        student = grow(
            graph_module,
            self.example_inputs,
            blocks=self.blocks,
            width=self.width,
            seed=self.seed,
            verify=self.verify,
            **self.options,
        )
        return PassResult(student, bool(self.blocks) or self.width is not None)


class VerifyPass(_FxgrowPass):
    """Check that the graph still computes ``reference``'s function on the example inputs
    (``fxgrow.PreservationError`` beyond ``tol`` on the max relative error; default: the
    dtype's tolerance).  Leaves the graph unchanged; ``self.last`` holds the comparison.

    The reference is copied when the pass is made (parameters and buffers included), so a pass
    that changes tensors in place -- of a traced model that shares them with ``reference`` --
    cannot change what the graph is checked against.  A failure names the passes before this
    check, not fxgrow's rules: fxgrow's own passes verify their own step."""

    def __init__(
        self,
        reference: torch.nn.Module,
        example_inputs: Any,
        *,
        tol: float | None = None,
        mode: str = "eval",
    ) -> None:
        super().__init__(example_inputs)
        self.reference = _independent_copy(reference)
        self.tol, self.mode = tol, mode
        self.last: Comparison | None = None

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        """Check that ``graph_module`` still computes the reference's function (within the
        tolerance); a PreservationError if not.  Never modifies the graph."""
        from .errors import PreservationError
        from .verify import compare
        from .verify.compare import tolerance

        self.last = compare(self.reference, graph_module, self.example_inputs, mode=self.mode)
        tol = tolerance(self.example_inputs, self.reference) if self.tol is None else self.tol
        if not self.last.max_rel <= tol:
            raise PreservationError(
                f"VerifyPass: the graph no longer computes the reference's function: "
                f"{self.last} exceeds the tolerance {tol:g}. A pass that ran before this check "
                f"changed what the graph computes; fxgrow's own passes (WidenPass, DeepenPass, "
                f"GrowPass with verify=True) check their own step, so look at the others (a "
                f"VerifyPass after each pass finds the first that breaks it)"
            )
        return PassResult(graph_module, False)


def _independent_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` that shares no tensor or module with it."""
    import copy

    with torch.no_grad():
        return copy.deepcopy(model)
