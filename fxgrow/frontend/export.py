"""The torch.export front end, for models fx cannot trace symbolically (Hugging Face models,
data-dependent Python control flow on shapes).

``torch.export`` captures an ATen-level graph with parameters lifted to inputs;
``ExportedProgram.module()`` turns it back into a runnable GraphModule whose parameters are
attributes under their original module paths (``model.layers.0.self_attn.q_proj.weight``), read
by ``get_attr`` nodes.  fxgrow analyses and rewrites that GraphModule like any other; the
student it returns is a GraphModule with trainable parameters."""

from __future__ import annotations

import contextlib
import io

import torch
import torch.fx

from ..errors import TraceError
from ..growth import update_growth_record


def export(model: torch.nn.Module, example_inputs: tuple) -> torch.fx.GraphModule:
    """``model`` captured by ``torch.export`` on ``example_inputs`` (static shapes)."""
    noise = io.StringIO()
    try:  # export prints the failing graph on errors: keep it out of the user's terminal
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise), _no_cache(model):
            program = torch.export.export(model, tuple(example_inputs), strict=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ""
        if "Cache" in str(e):
            hint = (
                " (a Hugging Face model returning its key/value cache: build it with "
                "use_cache=False in its config)"
            )
        raise TraceError(
            f"torch.export could not capture {type(model).__name__}: {first}{hint}"
        ) from e
    gm = program.module()
    if not isinstance(gm, torch.fx.GraphModule):
        raise TraceError(f"torch.export returned a {type(gm).__name__}, not a GraphModule")
    update_growth_record(gm, frontend="export")
    from .modal import make_modal  # dropout follows .train()/.eval() again (see modal.py)

    return make_modal(gm, model.training)


@contextlib.contextmanager
def _no_cache(model: torch.nn.Module):
    """A Hugging Face model captured without its key/value cache (``use_cache=False`` while
    exporting, on the model's config and on the copies its submodules hold -- T5's decoder
    stack keeps its own; the user's configs are restored): the graph computes the logits
    only."""
    configs = {
        id(c): (c, c.use_cache)
        for m in model.modules()
        if (c := getattr(m, "config", None)) is not None and getattr(c, "use_cache", None)
    }
    for c, _ in configs.values():
        c.use_cache = False
    try:
        yield
    finally:
        for c, old in configs.values():
            c.use_cache = old
