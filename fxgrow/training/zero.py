"""``ZeroRedundancyOptimizer``: its state is sharded (each rank's local optimizer ``.optim``
holds the state of its own partition), and the student's partition differs from the
teacher's.  Every rank maps the state it holds, the mapped states are gathered on every rank
(``all_gather_object`` over the optimizer's process group), and each rank keeps the state of
its new partition.  Invariant: as ``transfer_optimizer``, on every rank; a collective call, so
every rank of the group must call it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from .optimizer import _map_state, _names, transfer_groups


def transfer_zero(
    zero: Any,
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    *,
    trainable: Callable[[str, torch.nn.Parameter], bool] | None = None,
) -> Any:
    """A ``ZeroRedundancyOptimizer`` for ``student`` with the teacher's mapped state."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    teacher_names = _names(teacher)
    mine: dict[str, dict] = {}
    for p, s in zero.optim.state.items():
        if s and id(p) in teacher_names:
            name = teacher_names[id(p)][0]
            mine[name] = {
                k: v.cpu() if isinstance(v, torch.Tensor) else v
                for k, v in _map_state(student, name, p, s).items()
            }
    gathered: list = [None] * dist.get_world_size(zero.process_group)
    dist.all_gather_object(gathered, mine, group=zero.process_group)
    states = {k: v for part in gathered for k, v in part.items()}
    groups, _ = transfer_groups(zero.param_groups, {}, teacher, student, trainable)
    new = ZeroRedundancyOptimizer(
        groups,
        optimizer_class=zero._optim_constructor,
        process_group=zero.process_group,
        parameters_as_bucket_view=zero.parameters_as_bucket_view,
        **zero._optim_defaults,
    )
    names = {id(p): n for n, p in student.named_parameters()}
    for group in new.optim.param_groups:
        for p in group["params"]:
            s = states.get(names.get(id(p), ""))
            if s:
                new.optim.state[p] = {
                    k: v.to(p.device) if isinstance(v, torch.Tensor) else v for k, v in s.items()
                }
    return new
