"""Does the student run at all?  Failures become :class:`PreservationError` naming the node.

``check_runs`` is what ``widen``/``deepen``/``grow`` do with ``verify=False``: one run of the
student on meta tensors (no arithmetic, no memory; the real inputs only where an op has no
meta kernel), so that a student that would crash is never returned.  ``student_failure``
turns an exception from running the student into an error that names the failing node."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
import torch.fx

from ..analysis.shapes import GraphRunError, propagate
from ..errors import PreservationError
from ..modes import set_training, untouched

_REPORT = "This is a bug in fxgrow's rewrite for this model; please report it with the model."


def check_runs(student: torch.nn.Module, example_inputs: tuple) -> None:
    """Raise :class:`PreservationError` naming the node if ``student`` does not run on
    (meta copies of) ``example_inputs``."""
    if not isinstance(student, torch.fx.GraphModule):
        return
    try:
        propagate(student, tuple(example_inputs))
    except GraphRunError as e:
        raise PreservationError(
            f"the student does not run on the example inputs: {e}. {_REPORT}"
        ) from e


def _failing_node(student: torch.fx.GraphModule, inputs: tuple) -> GraphRunError | None:
    """Run ``student`` node by node on the real inputs; the failure, naming its node."""

    class Naming(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            try:
                return super().run_node(n)
            except Exception as e:
                raise GraphRunError(n, e) from e

    interpreter = Naming(student)
    interpreter.extra_traceback = False
    try:
        with untouched(student), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            set_training(student, False)
            interpreter.run(*inputs)
    except GraphRunError as e:
        return e
    except Exception:
        return None
    return None


def student_failure(
    student: torch.nn.Module, inputs: tuple, error: BaseException
) -> PreservationError:
    """The error to raise for ``error``, raised by running ``student`` on ``inputs``."""
    failure = _failing_node(student, inputs) if isinstance(student, torch.fx.GraphModule) else None
    if failure is not None:
        return PreservationError(
            f"the student does not run on the example inputs: {failure}. {_REPORT}"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return PreservationError(
        f"the student does not run on the example inputs: "
        f"{type(error).__name__}: {first}. {_REPORT}"
    )
