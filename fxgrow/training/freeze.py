"""What trains after growth: ``trainable=`` policies.

* ``"all"``: every parameter that was trainable in the teacher, and every new one;
* ``"new_blocks"`` (LLaMA-Pro): only parameters the teacher did not have (inserted blocks and
  layers); the rest gets ``requires_grad=False`` and stays out of the optimizer;
* ``"new_units"``: new parameters and the new positions of widened ones (a student position
  that lies beyond the teacher's size on some widened axis); positions that copy the teacher's
  are held fixed after every optimizer step (weight decay included).

Invariant: a frozen parameter or position keeps its value at growth for as long as the
:class:`Freeze` handle is attached."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..growth import AxisExpansion, expansions

POLICIES = ("all", "new_blocks", "new_units")


@dataclass(frozen=True)
class Freeze:
    """A policy applied to a student: which parameters the optimizer gets (``trainable``),
    and the fixed positions of partly trainable ones (``masks``: True where it trains)."""

    policy: str
    trainable: Callable[[str, torch.nn.Parameter], bool]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    fixed: dict[str, torch.Tensor] = field(default_factory=dict)

    def attach(self, optimizer: torch.optim.Optimizer, student: torch.nn.Module):
        """Hold the fixed positions after every ``optimizer.step()``; returns the hook handle."""
        if not self.masks:
            return None
        params = dict(student.named_parameters())
        pairs = [(params[n], m, self.fixed[n]) for n, m in self.masks.items()]

        def restore(*_):
            with torch.no_grad():
                for p, m, v in pairs:
                    p.copy_(torch.where(m, p, v))

        inner = getattr(optimizer, "optimizer", optimizer)
        return inner.register_step_post_hook(restore)


def _new_positions(
    record: Sequence[AxisExpansion], shape: torch.Size, teacher_shape: torch.Size
) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for axis, _index, _fraction, _consumed in record:
        view = [1] * len(shape)
        view[axis] = -1
        mask |= (torch.arange(shape[axis]) >= teacher_shape[axis]).view(view)
    return mask


def freeze(teacher: torch.nn.Module, student: torch.nn.Module, policy: str = "all") -> Freeze:
    """Apply ``policy`` to ``student`` (``requires_grad`` set) and describe it."""
    if policy not in POLICIES:
        raise InputError(f"trainable must be one of {', '.join(POLICIES)}, got {policy!r}")
    old = dict(teacher.named_parameters(remove_duplicate=False))
    for name, p in student.named_parameters(remove_duplicate=False):  # the teacher's flags
        if name in old:
            p.requires_grad_(old[name].requires_grad)
    if policy == "all":
        return Freeze(policy, lambda name, p: p.requires_grad)
    record = expansions(student)
    masks, fixed, keep = {}, {}, set()
    for name, p in student.named_parameters():
        if name not in old:
            keep.add(name)
        elif (
            policy == "new_units"
            and record.get(name)
            and p.shape != old[name].shape
            and old[name].requires_grad
        ):
            masks[name] = _new_positions(record[name], p.shape, old[name].shape).to(p.device)
            fixed[name] = p.detach().clone()
            keep.add(name)
        else:
            p.requires_grad_(False)
    if not keep:
        raise InputError(
            f"trainable={policy!r} leaves nothing to train: the student has no "
            f"new parameters"
            + (
                " or widened ones"
                if policy == "new_units"
                else "; grow with blocks= or use 'new_units'/'all'"
            )
        )
    for name, mask in masks.items():
        dict(student.named_parameters())[name].register_hook(lambda g, m=mask: g * m.to(g.dtype))
    return Freeze(policy, lambda name, p: name in keep and p.requires_grad, masks, fixed)
