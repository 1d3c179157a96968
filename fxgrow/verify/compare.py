"""Verification: does the student compute the teacher's function?"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch.utils import _pytree as pytree

from ..errors import InputError, PreservationError
from ..modes import preserved, set_training, untouched

_DROPOUT = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
            torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout)

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2,
             torch.float16: 5e-3}


@dataclass(frozen=True)
class Comparison:
    """Largest absolute difference of any output element, and that difference relative to the
    largest absolute teacher output (``max_rel = max|s - t| / max|t|``)."""

    max_abs: float
    max_rel: float
    mode: str = "eval"

    def __str__(self) -> str:
        return f"max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g} ({self.mode} mode)"


@contextlib.contextmanager
def _mode(model: torch.nn.Module, mode: str) -> Iterator[None]:
    """Put ``model`` in eval or train mode (dropout off) and restore modes and buffers after."""
    with preserved(model):
        set_training(model, mode == "train")
        if mode == "train":
            for m in model.modules():
                if isinstance(m, _DROPOUT):
                    m.training = False
        yield


def outputs(model: torch.nn.Module, example_inputs: tuple, mode: str = "eval") -> Any:
    with _mode(model, mode), torch.no_grad():
        return model(*example_inputs)


def compare(teacher: torch.nn.Module, student: torch.nn.Module, example_inputs: Any, *,
            mode: str = "eval") -> Comparison:
    """Run both on ``example_inputs`` in ``mode`` ("eval", or "train" with dropout off; batch
    norm then uses batch statistics) and measure the largest difference.  Neither model's
    modes or buffers change."""
    with untouched(teacher):
        return _compare(teacher, student, example_inputs, mode)


def _compare(teacher: torch.nn.Module, student: torch.nn.Module, example_inputs: Any,
             mode: str) -> Comparison:
    if mode not in ("eval", "train"):
        raise InputError(f"mode must be 'eval' or 'train', got {mode!r}")
    inputs = example_inputs if isinstance(example_inputs, tuple) else \
        tuple(example_inputs) if isinstance(example_inputs, list) else (example_inputs,)
    try:
        t_out = pytree.tree_leaves(outputs(teacher, inputs, mode))
    except Exception as e:  # the user's model on the user's inputs: an input problem
        described = ", ".join(f"{tuple(x.shape)} {x.dtype} on {x.device}"
                              if isinstance(x, torch.Tensor) else type(x).__name__
                              for x in inputs)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InputError(f"the teacher does not run on the example inputs ({described}): "
                         f"{type(e).__name__}: {first}. Pass inputs of the number, shape, "
                         f"dtype and device the model expects.") from e
    s_out = pytree.tree_leaves(outputs(student, inputs, mode))
    t_out = [t for t in t_out if isinstance(t, torch.Tensor)]
    s_out = [s for s in s_out if isinstance(s, torch.Tensor)]
    positions = getattr(student, "meta", {}).get("fxgrow_output_positions")
    if positions is not None and len(positions) == len(s_out):
        s_out = [_teacher_positions(s, p) for s, p in zip(s_out, positions)]
    if len(t_out) != len(s_out):
        raise PreservationError(f"teacher returns {len(t_out)} tensors, student {len(s_out)}")
    max_abs, scale = 0.0, 0.0
    for t, s in zip(t_out, s_out):
        if t.shape != s.shape:
            raise PreservationError(f"output shapes differ: teacher {tuple(t.shape)}, student "
                                    f"{tuple(s.shape)}")
        if t.numel() == 0:
            continue
        t64, s64 = t.detach().double(), s.detach().double()
        max_abs = max(max_abs, float((t64 - s64).abs().max()))
        scale = max(scale, float(t64.abs().max()))
    return Comparison(max_abs, max_abs / scale if scale > 0 else max_abs, mode)


def _teacher_positions(out: torch.Tensor, per_axis: list) -> torch.Tensor:
    """A widened output read at the positions that copy the teacher's (see outputs="grow")."""
    for axis, pos in enumerate(per_axis):
        if pos is not None:
            out = out.index_select(axis, pos.to(out.device))
    return out


def tolerance(example_inputs: tuple, model: torch.nn.Module) -> float:
    """Default tolerance on max_rel for the model's floating dtype."""
    for p in model.parameters():
        if p.is_floating_point():
            return TOLERANCE.get(p.dtype, 1e-5)
    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return TOLERANCE.get(x.dtype, 1e-5)
    return 1e-5


def verify(teacher: torch.nn.Module, student: torch.nn.Module, example_inputs: tuple, *,
           mode: str = "eval", tol: float | None = None) -> Comparison:
    """``compare`` and raise :class:`PreservationError` beyond the dtype's tolerance."""
    result = compare(teacher, student, example_inputs, mode=mode)
    tol = tolerance(example_inputs, teacher) if tol is None else tol
    if not result.max_rel <= tol:
        raise PreservationError(
            f"the student does not compute the teacher's function: {result} exceeds the "
            f"tolerance {tol:g}. This is a bug in fxgrow's rules for this model; please report "
            f"it with the model (pass verify=False to get the student anyway).")
    return result
