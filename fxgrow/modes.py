"""Train/eval flags set directly on every submodule.

Graph modules from ``torch.export`` refuse ``.train()`` / ``.eval()``; assigning the
``training`` flags works for every model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def set_training(model: torch.nn.Module, training: bool) -> None:
    """Set the ``training`` flag of every submodule (works where ``.train()`` is refused)."""
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


_MISSING = object()
_CONTAINERS = (dict, list, set)


def _contents(v: Any) -> Any:
    """A shallow copy of a container's items (the container itself is restored in place)."""
    if isinstance(v, dict):
        return list(v.items())
    if isinstance(v, (list, set)):
        return list(v)
    return None


def _same(a: list, b: list) -> bool:
    """Item lists equal by identity (never by ``==``: tensors compare element-wise)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, tuple):  # a dict's (key, value)
            if x[0] is not y[0] and x[0] != y[0] or x[1] is not y[1]:
                return False
        elif x is not y:
            return False
    return True


def _restore_contents(v: Any, saved: list) -> None:
    if _same(saved, _contents(v)):
        return
    if isinstance(v, dict):
        v.clear()
        v.update(saved)
    elif isinstance(v, list):
        v[:] = saved
    else:
        v.clear()
        v.update(saved)


@contextlib.contextmanager
def untouched(model: Any) -> Iterator[None]:
    """Leave ``model`` as it was: on exit every module's attributes are the objects they were
    (attributes added since are removed), the dicts, lists and sets among them hold what they
    held (a cache a traced forward filled, the ``_parameters`` / ``_buffers`` / ``_modules``
    tables), and every buffer holds its values.

    fxgrow's calls trace and run the teacher; models keep state in Python attributes (timm's
    attention-bias caches are filled with fx proxies by tracing, which then break the next
    trace).  Every public call runs inside this."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    saved = []
    for m in model.modules():
        entries = {
            k: (v, _contents(v) if isinstance(v, _CONTAINERS) else None)
            for k, v in m.__dict__.items()
        }
        saved.append((m, entries))
    buffers = {
        id(b): (b, b.detach().clone()) for _, b in model.named_buffers(remove_duplicate=False)
    }
    try:
        yield
    finally:
        for m, entries in saved:
            d = m.__dict__
            for k in [k for k in d if k not in entries]:
                del d[k]
            for k, (v, contents) in entries.items():
                if d.get(k, _MISSING) is not v:
                    d[k] = v
                if contents is not None:
                    _restore_contents(v, contents)
        with torch.no_grad():
            for b, before in buffers.values():
                if (
                    b.device.type != "meta"
                    and b.shape == before.shape
                    and not torch.equal(b, before)
                ):
                    b.copy_(before)
