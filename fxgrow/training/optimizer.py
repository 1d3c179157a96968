"""Optimizer-state transfer from a teacher to its grown student.

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

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..errors import InputError
from ..growth import expansions

_FIRST = ("exp_avg", "momentum_buffer", "grad_avg", "prev", "exp_inf")  # like gradients
_SECOND = ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "acc_delta")  # like squares
_VALUES = ("ax",)  # like the parameter itself (ASGD's average)
_COPIED = ("step_size",)  # per-unit, scale-free (Rprop): copied


def map_tensor(
    student: torch.nn.Module, name: str, tensor: torch.Tensor, kind: str = "grad"
) -> torch.Tensor:
    """``tensor`` (shaped like the teacher's parameter ``name``) mapped onto the student's
    parameter: ``kind="grad"`` (gradients, first moments), ``"square"`` (second moments),
    ``"param"`` (the values themselves, as the rewrite made them) or ``"copy"`` (copied to
    the replicas unscaled)."""
    if kind not in ("grad", "square", "param", "copy"):
        raise InputError(f"kind must be 'grad', 'square', 'param' or 'copy', got {kind!r}")
    record = expansions(student).get(name)
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


def _unwrap(optimizer: Any) -> tuple[torch.optim.Optimizer, Callable | None]:
    """The optimizer that holds the state, and how to wrap a new one like ``optimizer``.

    Known wrappers: accelerate's ``AcceleratedOptimizer`` (``.optimizer``, re-wrapped with its
    device placement and gradient scaler) and Lightning's ``LightningOptimizer``
    (``._optimizer``, returned unwrapped: Lightning wraps the optimizers it is given)."""
    inner = getattr(optimizer, "optimizer", None)
    if (
        isinstance(inner, torch.optim.Optimizer)
        and type(optimizer).__name__ == "AcceleratedOptimizer"
    ):

        def rewrap(new: torch.optim.Optimizer) -> torch.optim.Optimizer:
            return type(optimizer)(
                new, device_placement=optimizer.device_placement, scaler=optimizer.scaler
            )

        return _unwrap(inner)[0], rewrap
    inner = getattr(optimizer, "_optimizer", None)
    if isinstance(inner, torch.optim.Optimizer):
        return _unwrap(inner)[0], None
    if isinstance(optimizer, list):
        raise InputError(
            "transfer_optimizer takes one optimizer, got a list; call it once per optimizer"
        )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputError(
            f"transfer_optimizer takes a torch.optim.Optimizer (or accelerate's or "
            f"Lightning's wrapper of one), got {type(optimizer).__name__}"
        )
    return optimizer, None


def _pattern(name: str) -> str:
    """A parameter name with block indices blanked (``layer2.3.conv1.weight`` ->
    ``layer2.#.conv1.weight``): a new block's parameter finds its template's group."""
    return re.sub(r"(?<=\.)\d+(?=\.)", "#", name)


def transfer_optimizer(
    optimizer: torch.optim.Optimizer,
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    *,
    trainable: Callable[[str, torch.nn.Parameter], bool] | None = None,
) -> torch.optim.Optimizer:
    """A new optimizer of the same type for ``student`` whose state follows the index maps of
    its parameters (see the module docstring).

    Every param group keeps its hyper-parameters; a student parameter that the teacher had is
    in the group of the teacher's, with mapped state; a parameter the teacher did not have (an
    inserted block) joins the group of the teacher parameter whose name matches it up to block
    indices (else the first group), with empty state.  Teacher parameters the optimizer did not
    hold (frozen) stay out.  ``trainable(name, param)`` (see ``fxgrow.training.freeze``) leaves
    out the parameters it rejects.  Wrapped optimizers (accelerate, Lightning) are unwrapped
    and, for accelerate, wrapped again.  ``ZeroRedundancyOptimizer``: use
    ``fxgrow.training.transfer_zero``."""
    if type(optimizer).__name__ == "ZeroRedundancyOptimizer":
        from .zero import transfer_zero

        return transfer_zero(optimizer, teacher, student, trainable=trainable)
    optimizer, rewrap = _unwrap(optimizer)
    groups, state = transfer_groups(
        optimizer.param_groups, optimizer.state, teacher, student, trainable
    )
    new = type(optimizer)(groups)  # type: ignore[call-arg]  # groups carry the hyperparameters
    new.defaults = dict(optimizer.defaults)
    for p, s in state.items():
        new.state[p] = s
    return rewrap(new) if rewrap else new


def transfer_groups(
    param_groups: list[dict],
    old_state: Mapping,
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    trainable: Callable[[str, torch.nn.Parameter], bool] | None = None,
) -> tuple[list[dict], dict]:
    """The student's param groups (hyper-parameters kept) and mapped state for the parameters
    of ``param_groups`` (see ``transfer_optimizer``)."""
    teacher_names = _names(teacher)
    student_params = dict(student.named_parameters(remove_duplicate=False))
    known = set(dict(teacher.named_parameters(remove_duplicate=False)))
    placed: set[int] = set()
    groups = []
    by_pattern: dict[str, int] = {}
    state: dict[torch.nn.Parameter, dict[str, Any]] = {}
    for gi, group in enumerate(param_groups):
        params = []
        for p in group["params"]:
            names = teacher_names.get(id(p))
            if not names:
                raise InputError(
                    "the optimizer holds a parameter that is not the teacher's; "
                    "pass the model the optimizer was built for"
                )
            for n in names:
                by_pattern.setdefault(_pattern(n), gi)
            sname = next((n for n in names if n in student_params), None)
            if sname is None or id(student_params[sname]) in placed:
                continue
            sp = student_params[sname]
            placed.add(id(sp))
            if trainable is not None and not trainable(sname, sp):
                continue
            params.append(sp)
            old = old_state.get(p)
            if old:
                state[sp] = _map_state(student, names[0], p, old)
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    for name, p in student.named_parameters():
        if id(p) in placed or name in known or not p.requires_grad:
            continue
        placed.add(id(p))
        if trainable is None or trainable(name, p):
            groups[by_pattern.get(_pattern(name), 0)]["params"].append(p)
    return groups, state


def _map_state(student, name: str, param: torch.Tensor, old: Mapping[str, Any]) -> dict:
    mapped = {}
    grown = bool(expansions(student).get(name))
    for key, value in old.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or not grown:
            mapped[key] = value.clone() if isinstance(value, torch.Tensor) else value
        elif value.shape != param.shape:
            raise InputError(
                f"optimizer state {key!r} of {name} has shape "
                f"{tuple(value.shape)}, not the parameter's {tuple(param.shape)} "
                f"(factored or flattened state, as Adafactor's or LBFGS's); fxgrow "
                f"cannot map it onto the widened parameter: start that optimizer "
                f"afresh on the student"
            )
        elif key in _FIRST:
            mapped[key] = map_tensor(student, name, value, "grad").clone()
        elif key in _SECOND:
            mapped[key] = map_tensor(student, name, value, "square").clone()
        elif key in _VALUES:
            mapped[key] = map_tensor(student, name, value, "param").clone()
        elif key in _COPIED:
            mapped[key] = map_tensor(student, name, value, "copy").clone()
        else:
            raise InputError(
                f"optimizer state {key!r} of {name} is not one fxgrow knows how "
                f"to map (supported: SGD, Adam, AdamW, NAdam, RAdam, Adamax, "
                f"RMSprop, Adagrad, Adadelta, ASGD, Rprop)"
            )
    return mapped
