"""Growing during training: optimizer-state transfer and a one-call grow-and-continue helper.

The gradient relation.  At the moment of growth the student computes the teacher's function,
L'(W') = L(W).  A *copied* axis (producer rows, per-channel parameters) of unit i with share
a_j (1/c(i) for an equal split) feeds consumers that take a_j of it, so dL'/dW'_j = a_j dL/dW_i.
A *consumed* axis (consumer columns) reads an activation equal to the original one, so its
gradient is the original column's.  Hence for every tensor

    grad' = index_select(grad) * prod over copied axes of a_j

and optimizer state follows: first moments (momentum, Adam's exp_avg) like gradients, second
moments (exp_avg_sq) like their squares, step counts unchanged.

The relation is exact when the replicas' activations reach the loss only through the split
consumers (BatchNorm networks, any split; LayerNorm/RMSNorm networks with ``split="equal"``).
With ``split="random"``, a normalisation over channels mixes the replicas in its backward pass
(its mean and variance see every copy), so for tensors that write into a normalised stream the
mapped gradient is an approximation (measured on a ViT: cosine similarity >= 0.9997).  Parameters that did not exist
in the teacher (inserted layers) start with empty state, as a fresh optimizer would give them.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .errors import InputError

_FIRST = ("exp_avg", "momentum_buffer", "grad_avg", "prev")
_SECOND = ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "acc_delta")


def map_tensor(student: torch.nn.Module, name: str, tensor: torch.Tensor,
               kind: str = "grad") -> torch.Tensor:
    """``tensor`` (shaped like the teacher's parameter ``name``) mapped onto the student's
    parameter: ``kind="grad"`` (gradients, first moments), ``"square"`` (second moments) or
    ``"param"`` (the values themselves, as the rewrite made them)."""
    if kind not in ("grad", "square", "param"):
        raise InputError(f"kind must be 'grad', 'square' or 'param', got {kind!r}")
    record = getattr(student, "meta", {}).get("fxgrow_expansions", {}).get(name)
    out = tensor
    for axis, index, fraction, consumed in record or ():
        out = out.index_select(axis, index.to(out.device))
        shape = [1] * out.dim()
        shape[axis] = -1
        f = fraction.to(device=out.device, dtype=out.dtype).view(shape)
        if kind == "param" and consumed or kind == "grad" and not consumed:
            out = out * f
        elif kind == "square" and not consumed:
            out = out * f * f
    return out


def _names(model: torch.nn.Module) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(n)
    return names


def transfer_optimizer(optimizer: torch.optim.Optimizer, teacher: torch.nn.Module,
                       student: torch.nn.Module) -> torch.optim.Optimizer:
    """A new optimizer of the same type for ``student`` whose state follows the index maps of
    its parameters (see the module docstring); hyperparameters and param-group settings are
    kept, new parameters join the first group with empty state."""
    teacher_names = _names(teacher)
    student_params = dict(student.named_parameters(remove_duplicate=False))
    placed: set[int] = set()
    groups = []
    state: dict[torch.nn.Parameter, dict[str, Any]] = {}
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            names = teacher_names.get(id(p))
            if not names:
                raise InputError("the optimizer holds a parameter that is not the teacher's; "
                                 "pass the model the optimizer was built for")
            sp = next((student_params[n] for n in names if n in student_params), None)
            if sp is None or id(sp) in placed:
                continue
            placed.add(id(sp))
            params.append(sp)
            old = optimizer.state.get(p)
            if old:
                state[sp] = _map_state(student, names[0], p, old)
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    fresh = [p for p in student.parameters() if id(p) not in placed and p.requires_grad]
    if fresh:
        groups[0]["params"].extend(fresh)
    new = type(optimizer)(groups)  # every group carries its own hyperparameters
    new.defaults = dict(optimizer.defaults)
    for p, s in state.items():
        new.state[p] = s
    return new


def _map_state(student, name: str, param: torch.Tensor, old: Mapping[str, Any]) -> dict:
    mapped = {}
    for key, value in old.items():
        if not isinstance(value, torch.Tensor) or value.shape != param.shape or value.dim() == 0:
            mapped[key] = value.clone() if isinstance(value, torch.Tensor) else value
        elif key in _FIRST:
            mapped[key] = map_tensor(student, name, value, "grad").clone()
        elif key in _SECOND:
            mapped[key] = map_tensor(student, name, value, "square").clone()
        else:
            raise InputError(f"optimizer state {key!r} is not one fxgrow knows how to map "
                             f"(supported: SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta)")
    return mapped


def grow_during_training(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         example_inputs: Any, **grow_options: Any):
    """Grow ``model`` (``fxgrow.grow`` options: ``width``, ``blocks``, ``split`` ...) and move
    ``optimizer`` to the student.  Returns ``(student, optimizer)``; the student is in the
    teacher's train/eval mode.  ``split="random"`` is the default here, so that replicated
    units learn apart."""
    from .api import grow
    from .modes import set_training
    grow_options.setdefault("split", "random")
    grow_options.setdefault("as_graph", True)  # the graph records the expansions transferred
    training = model.training
    student = grow(model, example_inputs, **grow_options)
    set_training(student, training)
    return student, transfer_optimizer(optimizer, model, student)
