"""``GrowCallback``: grow the model of a ``transformers.Trainer`` run in the middle of training.

    cb = GrowCallback(at_step=1000, width=2, blocks={"layers": 8})   # as for fxgrow.grow
    trainer = Trainer(model, args, train_dataset=..., callbacks=[cb])
    cb.attach(trainer)
    trainer.train()

At the end of optimizer step ``at_step`` (or when ``monitor=`` plateaus), the model is grown
(``fxgrow.training.grow_during_training``: state-transferred optimizer, the schedule carried on
as ``schedule=`` says, ``trainable=`` policy), and the Trainer continues with the student: the
Trainer's training loop holds the model in a local variable, so the model object itself takes
the student's identity (``common.become``); ``trainer.optimizer`` (re-wrapped by accelerate),
``trainer.lr_scheduler`` and the callback handler's references are replaced.  ``events``
records each growth with the loss on the example batch right before and right after (equal).

Single-process runs (CPU or one accelerator); for DistributedDataParallel see
``tools/examples/grow_ddp.py``.  The model must run on positional example inputs taken from the
first training batch (ordered by ``forward``'s parameters) or given as ``example_inputs=``.
Hugging Face models grown today become a ``torch.export`` graph that runs at the example shape
only; a Trainer run on them needs the transformers-class student (``fxgrow.grow`` will return
it when that lands; this callback calls ``fxgrow.grow`` and needs no change)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - transformers is a dependency of the test suite
    raise ImportError("fxgrow.integrations.hf needs transformers (pip install transformers)") from e

from ..errors import InputError
from ..hf.student import is_pretrained
from ..training import grow_during_training
from .common import GrowthEvent, Trigger, as_inputs, become, count, measure


class GrowCallback(TrainerCallback):
    """Grow the Trainer's model once, at ``at_step`` or when ``monitor`` plateaus (see the
    module docstring).  ``grow_options`` are ``fxgrow.grow``'s (``width``, ``blocks``,
    ``split`` ...); ``schedule``, ``warmup_steps``, ``speed``, ``trainable`` are
    ``grow_during_training``'s."""

    def __init__(
        self,
        trainer: Any = None,
        *,
        at_step: int | None = None,
        monitor: str | None = None,
        patience: int = 3,
        min_delta: float = 0.0,
        mode: str = "min",
        example_inputs: Any = None,
        schedule: str = "continue",
        warmup_steps: int = 0,
        speed: float = 2.0,
        trainable: str = "all",
        seed: int = 0,
        **grow_options: Any,
    ) -> None:
        if not any(grow_options.get(k) for k in ("width", "blocks", "to_config")):
            raise InputError(
                "GrowCallback grows nothing: give width= and/or blocks= as for "
                "fxgrow.grow, or to_config= for a Hugging Face model"
            )
        self.trigger = Trigger(at_step, monitor, patience, min_delta, mode)
        self.trainer, self.example_inputs, self.seed = trainer, example_inputs, seed
        self.options = dict(
            schedule=schedule,
            warmup_steps=warmup_steps,
            speed=speed,
            trainable=trainable,
            seed=seed,
            **grow_options,
        )
        self.events: list[GrowthEvent] = []

    def attach(self, trainer: Any) -> GrowCallback:
        """Give the callback its Trainer (callbacks are not handed the Trainer itself)."""
        self.trainer = trainer
        return self

    def on_train_begin(self, args, state, control, **kwargs):
        """Refuse to train without the Trainer attached: growing replaces the Trainer's model."""
        if self.trainer is None:
            raise InputError(
                "GrowCallback needs its Trainer: call callback.attach(trainer) "
                "(or pass GrowCallback(trainer, ...)) before trainer.train()"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Feed the logged metrics to the trigger."""
        self.trigger.observe(logs)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """Feed the evaluation metrics to the trigger."""
        self.trigger.observe(metrics)

    def on_step_end(self, args, state, control, train_dataloader=None, **kwargs):
        """Grow once, when the trigger says it is due (the step reached, or the monitored metric
        stalled)."""
        reason = self.trigger.due(state.global_step)
        if reason is not None:
            self.trigger.fired = True
            self.grow(state.global_step, reason, train_dataloader)

    def grow(self, step: int, reason: str, dataloader: Any = None) -> GrowthEvent:
        """Grow now (the callback calls this; usable by hand between steps)."""
        trainer = self.trainer
        model = trainer.model
        if trainer.model_wrapped is not model:
            wrapper = type(trainer.model_wrapped).__name__
            raise InputError(
                f"the Trainer's model is wrapped ({wrapper}): GrowCallback supports single-process runs; grow "
                f"under DistributedDataParallel in your own loop (see "
                f"tools/examples/grow_ddp.py)"
            )
        device = next(model.parameters()).device
        batch = self.example_inputs
        if batch is None:
            loader = dataloader if dataloader is not None else trainer.get_train_dataloader()
            with torch.random.fork_rng(devices=[]):  # the run's random stream stays as it was
                batch = next(iter(loader))
        if is_pretrained(model) and isinstance(batch, Mapping) and "input_ids" in batch:
            # a Hugging Face batch: grow on its token ids, measure the loss on all of it
            kwargs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            inputs = (kwargs["input_ids"],)

            def run(m: torch.nn.Module) -> Any:  # eval mode: attention dropout is inside
                m.eval()  # the attention call (modes are restored)
                return m(**kwargs)
        else:
            inputs = as_inputs(model, batch, device)

            def run(m: torch.nn.Module) -> Any:
                return m(*inputs)

        before = measure(lambda: run(model), model, self.seed)
        n_before = count(model)
        options = dict(self.options)
        if is_pretrained(model) and not options.get("blocks"):
            options.setdefault("as_graph", False)  # the Trainer calls the model's own class
        student, optimizer, scheduler = grow_during_training(
            model, trainer.optimizer, inputs, scheduler=trainer.lr_scheduler, **options
        )
        after = measure(lambda: run(student), student, self.seed)
        old_optimizer, old_scheduler = trainer.optimizer, trainer.lr_scheduler
        become(model, student)
        trainer.optimizer, trainer.lr_scheduler = optimizer, scheduler
        handler = trainer.callback_handler
        handler.model, handler.optimizer, handler.lr_scheduler = model, optimizer, scheduler
        acc = trainer.accelerator
        acc._optimizers = [optimizer if o is old_optimizer else o for o in acc._optimizers]
        acc._schedulers = [scheduler if s is old_scheduler else s for s in acc._schedulers]
        event = GrowthEvent(step, reason, before, after, n_before, count(model))
        self.events.append(event)
        return event
