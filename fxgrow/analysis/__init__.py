"""Analysis: shapes, then channel spaces united into groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from ..errors import InputError
from . import dependency
from .context import AnalysisState
from .group import ChannelGroup, Member, build_groups, find_group
from .layout import Blocker
from .shapes import GraphRunError, propagate

__all__ = ["Analysis", "Blocker", "ChannelGroup", "Member", "analyze"]


@dataclass
class Analysis:
    """Result of analysing one GraphModule on one set of example inputs.  ``origin``: the
    model and options ``fxgrow.analyze`` captured it from (``fxgrow.planning.request.Origin``;
    None for a graph analysed directly)."""

    gm: torch.fx.GraphModule
    example_inputs: tuple
    state: AnalysisState
    all_groups: list[ChannelGroup]
    origin: Any = field(default=None, compare=False, repr=False)

    @property
    def groups(self) -> list[ChannelGroup]:
        """Channel groups.  Classes tied only to non-channel axes (spatial positions, the fixed
        factor of a reshape or a depthwise multiplier, vocabulary rows) and classes no layer
        produces (kernel axes, unused parts of buffers) are left out; ``all_groups`` has them."""
        return [
            g
            for g in self.all_groups
            if g.produced and not (g.blockers and all(b.kind == "structure" for b in g.blockers))
        ]

    def group(self, name: str) -> ChannelGroup:
        """A group by its name or the name of a module with a member in it."""
        return find_group(self.groups, name)

    @property
    def widenable(self) -> list[ChannelGroup]:
        """The visible groups with no blockers: those a plan may widen."""
        return [g for g in self.groups if g.widenable]


def as_tuple(example_inputs: Any) -> tuple:
    """Positional example inputs as a tuple (a lone tensor wrapped); anything else is an
    InputError."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise InputError(
        "example_inputs must be a tensor or a tuple of positional inputs, got "
        f"{type(example_inputs).__name__}"
    )


def analyze(gm: torch.fx.GraphModule, example_inputs: Sequence, outputs: str = "fixed") -> Analysis:
    """Shapes and channel groups of ``gm`` on ``example_inputs``.  ``outputs="grow"`` lets
    channel axes of the outputs widen (an encoder's hidden states); the teacher's outputs are
    then found in the student's at the positions the replication maps keep.  ``"main"``: the
    first output (a model's logits) keeps its shape, the others may widen (the encoder hidden
    state an encoder-decoder also returns)."""
    if outputs not in ("fixed", "grow", "main"):
        raise InputError(f"outputs must be 'fixed', 'grow' or 'main', got {outputs!r}")
    inputs = as_tuple(example_inputs)
    try:
        vals = propagate(gm, inputs)
    except GraphRunError:  # whose fault: fxgrow.api.analyze tells by running the model
        raise
    except Exception as e:
        shapes = ", ".join(
            str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__ for x in inputs
        )
        raise InputError(
            f"the model does not run on the example inputs ({shapes}): "
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            ". Pass inputs of the shape, dtype and device the model expects."
        ) from e
    state = dependency.run(
        gm, vals, grow_outputs=outputs != "fixed", fixed_outputs=int(outputs == "main")
    )
    return Analysis(gm, inputs, state, build_groups(state))
