"""``--within PATH`` for the CLI's inspect, widen and grow: the command runs on the submodule
(its inputs recorded during one forward of the whole model, ``fxgrow.within``), and the grown
submodule, put back into a copy of the whole model, is checked on the whole model's outputs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .models import Loaded

if TYPE_CHECKING:  # torch is imported only once a command runs (the CLI's start time)
    from ..within import Call

HELP = (
    "grow only this submodule (a dotted path, e.g. backbone): its inputs are recorded in one "
    "forward of the whole model, its outputs stay fixed, and the whole model's outputs are "
    "checked too; -o saves the grown submodule"
)


def add_flag(p: argparse.ArgumentParser) -> None:
    """Add ``--within PATH`` to a subcommand's parser."""
    p.add_argument("--within", metavar="PATH", help=HELP)


def narrow(loaded: Loaded, args: argparse.Namespace, ui: Any) -> tuple[Loaded, Call | None]:
    """The submodule named by ``--within`` as the model to work on (unchanged without it)."""
    path = getattr(args, "within", None)
    if path is None:
        return loaded, None
    from ..within import record_call

    with ui.step(f"recording the inputs of {path}") as s:
        call = record_call(loaded.model, path, loaded.inputs)
        s["done"] = f"{type(call.module).__name__}, input " + ", ".join(
            "x".join(map(str, x.shape)) for x in call.inputs
        )
    return Loaded(call.module, call.inputs, f"{loaded.label} [within {path}]", loaded.source), call


def check_whole(
    whole: Loaded, call: Call | None, student: Any, args: argparse.Namespace, ui: Any
) -> None:
    """With ``--within``: the grown submodule in a copy of the whole model, its outputs
    against the teacher's (``fxgrow.within.detections.verify_whole``; skipped with --no-verify)."""
    if call is None or not getattr(args, "verify", True):
        return
    from ..within import rebuild
    from ..within.detections import verify_whole

    with ui.step("verifying the whole model") as s:
        result = verify_whole(whole.model, rebuild(whole.model, call, student), whole.inputs)
        s["done"] = str(result)
