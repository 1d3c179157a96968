"""``GrowCallback``: grow a network inside a Lightning ``LightningModule`` mid-training.

    class Task(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Net()                   # the grown module: an attribute of the task
        def training_step(self, batch, i):
            x, y = batch
            return F.cross_entropy(self.net(x), y)
        def configure_optimizers(self): ...

    trainer = L.Trainer(max_steps=20, callbacks=[GrowCallback("net", at_step=10, width=2)])

After optimizer step ``at_step`` (or when the logged metric ``monitor`` plateaus), the attribute
is replaced by its grown student (``fxgrow.training.grow_during_training``), the Trainer's
optimizer by the state-transferred one and each LR scheduler by its carried-on form
(``schedule=``).  ``events`` records each growth with ``training_step``'s loss on the batch of
that step right before and right after (dropout off; equal).  Example inputs for the network
are ``inputs(batch)`` (default: the first element of a tuple/list batch, or the batch).
Lightning is an optional dependency (``pip install fxgrow[lightning]``); single-device runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as e:
        raise ImportError(
            "fxgrow.integrations.lightning needs Lightning: pip install "
            "'fxgrow[lightning]' (or lightning)"
        ) from e

from ..errors import InputError
from ..training import grow_during_training
from .common import GrowthEvent, Trigger, as_inputs, count, measure


def _first(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class GrowCallback(pl.Callback):
    """Grow ``pl_module.<attr>`` once (see the module docstring); ``grow_options`` as for
    ``fxgrow.grow``, ``schedule`` / ``warmup_steps`` / ``speed`` / ``trainable`` as for
    ``grow_during_training``."""

    def __init__(
        self,
        attr: str,
        *,
        at_step: int | None = None,
        monitor: str | None = None,
        patience: int = 3,
        min_delta: float = 0.0,
        mode: str = "min",
        inputs: Callable[[Any], Any] = _first,
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
        self.attr, self.inputs, self.seed = attr, inputs, seed
        self.trigger = Trigger(at_step, monitor, patience, min_delta, mode)
        self.options = dict(
            schedule=schedule,
            warmup_steps=warmup_steps,
            speed=speed,
            trainable=trainable,
            seed=seed,
            **grow_options,
        )
        self.events: list[GrowthEvent] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Feed the logged metrics to the trigger; grow once, when it says it is due."""
        self.trigger.observe({k: v for k, v in trainer.callback_metrics.items()})
        reason = self.trigger.due(trainer.global_step)
        if reason is not None:
            self.trigger.fired = True
            self.grow(trainer, pl_module, batch, batch_idx, reason)

    def grow(self, trainer, pl_module, batch, batch_idx: int, reason: str) -> GrowthEvent:
        """Grow now, on ``batch`` as the example (the callback calls this)."""
        net = getattr(pl_module, self.attr, None)
        if not isinstance(net, torch.nn.Module):
            raise InputError(
                f"{type(pl_module).__name__}.{self.attr} is not a module; name "
                f"the attribute holding the network to grow"
            )
        if len(trainer.optimizers) != 1:
            raise InputError(
                f"GrowCallback handles one optimizer, the Trainer has {len(trainer.optimizers)}"
            )
        inputs = as_inputs(net, self.inputs(batch), next(net.parameters()).device)

        def step_loss():
            out = pl_module.training_step(batch, batch_idx)
            return out["loss"] if isinstance(out, dict) else out

        before, n_before = measure(step_loss, pl_module, self.seed), count(net)
        configs = trainer.lr_scheduler_configs
        if len(configs) > 1:
            raise InputError(
                f"GrowCallback carries on one LR scheduler; the Trainer has {len(configs)}"
            )
        scheduler = configs[0].scheduler if configs else None
        grown = grow_during_training(
            net, trainer.optimizers[0], inputs, scheduler=scheduler, **self.options
        )
        student, optimizer = grown[0], grown[1]
        setattr(pl_module, self.attr, student)
        trainer.optimizers = [optimizer]  # Lightning re-wraps it (LightningOptimizer)
        if configs:
            configs[0].scheduler = grown[2]
        after = measure(step_loss, pl_module, self.seed)
        event = GrowthEvent(trainer.global_step, reason, before, after, n_before, count(student))
        self.events.append(event)
        return event
