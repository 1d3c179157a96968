"""Grow a model in the middle of training and continue: ``grow_during_training``.

Invariant: the returned student computes the teacher's function (verified in eval mode, where
dropout is off and the comparison is deterministic); it is in the teacher's train/eval mode,
with dropout active in training mode, batch-norm statistics and momentum carried over; the
optimizer holds exactly the parameters the freezing policy trains, with mapped state."""

from __future__ import annotations

from typing import Any, cast

import torch

from ..errors import InputError
from ..growth import update_growth_record
from ..modes import set_training
from ..optional import instance_of
from .freeze import freeze
from .optimizer import transfer_optimizer
from .schedule import transfer_scheduler
from .tied import TiedAttention, TiedDropout, tie_dropout, untie


def _has_dropout(model: torch.nn.Module) -> bool:
    from ..frontend.modal import TrainingOnly

    return any(isinstance(m, (torch.nn.Dropout, TrainingOnly)) and m.p > 0 for m in model.modules())


def grow_during_training(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    example_inputs: Any,
    *,
    scheduler: Any = None,
    schedule: str = "continue",
    warmup_steps: int = 0,
    speed: float = 2.0,
    trainable: str = "all",
    dropout: str = "tied",
    **grow_options: Any,
):
    """Grow ``model`` (``fxgrow.grow`` options: ``width``, ``blocks``, ``split``, ``seed`` ...),
    move ``optimizer`` (any ``torch.optim`` optimizer, or accelerate's/Lightning's wrapper) to
    the student and, if given, ``scheduler`` (``schedule=``: "continue", "warmup", "restart",
    "lemon"; see ``fxgrow.training.schedule``).  ``trainable=``: "all", "new_blocks",
    "new_units" (see ``fxgrow.training.freeze``).  ``split="random"`` is the default here, so
    that replicated units learn apart.  ``dropout="tied"`` (default): dropout on widened
    activations draws the teacher's mask and copies it to the replicas, so that training-mode
    losses match the teacher's under the same seed (``fxgrow.training.tied``);
    ``"independent"`` keeps per-position masks.

    Returns ``(student, optimizer)``, or ``(student, optimizer, scheduler)`` when a scheduler
    is given."""
    from ..api import grow

    grow_options.setdefault("split", "random")
    # the graph by default: its dropout can be tied to the teacher's masks (same-seed losses
    # equal in training mode) and its names match the teacher's optimizer state.
    # as_graph=False gives a Hugging Face model in width as its own class (the Trainer's
    # callback asks for it), carrying its growth record
    if grow_options.get("as_graph") is False and (
        grow_options.get("blocks") or not instance_of(model, "transformers", "PreTrainedModel")
    ):
        raise InputError(
            "as_graph=False is for growing a Hugging Face model in width: "
            "block copies renumber its layers, which the optimizer transfer "
            "cannot follow; grow the graph (as_graph=True)"
        )
    grow_options.setdefault("as_graph", True)
    training = model.training
    if dropout not in ("tied", "independent"):
        raise InputError(f"dropout must be 'tied' or 'independent', got {dropout!r}")
    source: torch.nn.Module = model
    previous: dict[str, list] = {}
    if any(isinstance(m, (TiedDropout, TiedAttention)) for m in model.modules()):
        # grown before (tied modules live only in fxgrow's graphs): the plain graph, the axes
        source, previous = untie(cast(torch.fx.GraphModule, model))
    student = grow(source, example_inputs, **grow_options)
    set_training(student, training)
    if (
        dropout == "tied"
        and (grow_options.get("width") or previous)
        and isinstance(student, torch.fx.GraphModule)
        and _has_dropout(student)
    ):
        tie_dropout(
            source,
            student,
            example_inputs,
            width=grow_options.get("width"),
            seed=grow_options.get("seed", 0),
            split=grow_options["split"],
            frontend=grow_options.get("frontend", "auto"),
            leaf_modules=grow_options.get("leaf_modules", ()),
            previous=previous,
        )
    policy = freeze(model, student, trainable)
    new_opt = transfer_optimizer(optimizer, model, student, trainable=policy.trainable)
    policy.attach(new_opt, student)
    update_growth_record(student, trainable=policy.policy)
    if scheduler is None:
        return student, new_opt
    return (
        student,
        new_opt,
        transfer_scheduler(
            scheduler, new_opt, mode=schedule, warmup_steps=warmup_steps, speed=speed
        ),
    )
