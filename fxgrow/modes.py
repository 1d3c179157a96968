"""Train/eval flags set directly on every submodule.

Graph modules from ``torch.export`` refuse ``.train()`` / ``.eval()``; assigning the
``training`` flags works for every model."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def set_training(model: torch.nn.Module, training: bool) -> None:
    for m in model.modules():
        m.training = training


@contextlib.contextmanager
def preserved(model: torch.nn.Module, buffers: bool = True) -> Iterator[None]:
    """Restore every module's training flag (and, by default, every buffer) on exit."""
    flags = {m: m.training for m in model.modules()}
    saved = {k: v.detach().clone() for k, v in model.named_buffers()} if buffers else {}
    try:
        yield
    finally:
        for m, f in flags.items():
            m.training = f
        if saved:
            with torch.no_grad():
                for k, v in model.named_buffers():
                    if k in saved and v.shape == saved[k].shape:
                        v.copy_(saved[k])
