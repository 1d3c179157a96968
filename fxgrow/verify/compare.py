"""Verification: does the student compute the teacher's function?

A fixed tolerance is wrong both ways: float32 models whose own rounding is above 1e-5 raised
false alarms, and a bf16 model's rounding is not a bug.  ``verify`` therefore calibrates:

1. the student's outputs against the teacher's (``max_rel``); at most the dtype's floor
   (``TOLERANCE``: 1e-10 float64, 1e-5 float32, 5e-3 float16, 2e-2 bfloat16) passes at once;
2. otherwise both models are copied and run in float64 (float32 when float64 copies do not fit
   in memory; the *reference*): the teacher's own deviation from the reference
   (``teacher_rel``) is the rounding its dtype causes on these inputs, and the student passes
   when its deviation (``student_rel``) is at most ``CALIBRATION`` times the teacher's (and
   at least the floor), or when the two copies run in the reference dtype agree within that
   bound (``reference_rel``; a student's weights carry its dtype's rounding -- a split share
   of 1/3 is not exact in float32 -- so even in float64 the copies need not agree to 1e-15).

Only a student beyond the bound in both is called a bug in fxgrow's rules: its difference is
not rounding."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch.utils import _pytree as pytree

from ..analysis.rules.registry import has_trait
from ..errors import InputError, PreservationError
from ..growth import output_positions
from ..modes import preserved, set_training, untouched

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}
CALIBRATION = 8.0  # a student may round up to this many times as much as its teacher
_MEMORY_SHARE = 0.5  # reference copies may take this share of the free memory


@dataclass(frozen=True)
class Comparison:
    """Largest absolute difference of any output element, and that difference relative to the
    largest absolute teacher output (``max_rel = max|s - t| / max|t|``).

    With a reference run (``reference`` names its dtype, e.g. "float64"): ``teacher_rel`` and
    ``student_rel`` are each model's largest deviation from the teacher run in the reference
    dtype, relative to that run's largest output, and ``reference_rel`` the student's
    deviation when both run in the reference dtype (the rules' error without rounding)."""

    max_abs: float
    max_rel: float
    mode: str = "eval"
    reference: str | None = None
    teacher_rel: float | None = None
    student_rel: float | None = None
    reference_rel: float | None = None

    def __str__(self) -> str:
        text = f"max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g} ({self.mode} mode)"
        if self.reference is not None:
            text += (
                f"; against the teacher in {self.reference}: teacher {self.teacher_rel:.3g}, "
                f"student {self.student_rel:.3g}; both in {self.reference}: "
                f"{self.reference_rel:.3g}"
            )
        return text


@contextlib.contextmanager
def _mode(model: torch.nn.Module, mode: str) -> Iterator[None]:
    """Put ``model`` in eval or train mode (dropout off) and restore modes and buffers after."""
    with preserved(model):
        set_training(model, mode == "train")
        if mode == "train":
            for m in model.modules():
                if has_trait(m, "dropout"):
                    m.training = False
        yield


def outputs(model: torch.nn.Module, example_inputs: tuple, mode: str = "eval") -> Any:
    """``model(*example_inputs)`` without gradients in ``mode`` ("eval", or "train" with dropout
    off); the model's modes and buffers are restored after."""
    with _mode(model, mode), torch.no_grad():
        return model(*example_inputs)


def _as_tuple(example_inputs: Any) -> tuple:
    return (
        example_inputs
        if isinstance(example_inputs, tuple)
        else tuple(example_inputs)
        if isinstance(example_inputs, list)
        else (example_inputs,)
    )


def _tensors(out: Any) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def compare(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    example_inputs: Any,
    *,
    mode: str = "eval",
    reference: bool = False,
) -> Comparison:
    """Run both on ``example_inputs`` in ``mode`` ("eval", or "train" with dropout off; batch
    norm then uses batch statistics) and measure the largest difference.  With ``reference``
    also run float64 copies of both (float32 where those do not fit in memory) and fill in
    the reference figures.  Neither model changes (modes, buffers, attributes)."""
    if mode not in ("eval", "train"):
        raise InputError(f"mode must be 'eval' or 'train', got {mode!r}")
    inputs = _as_tuple(example_inputs)
    with untouched(teacher):
        t_out, s_out = _run_both(teacher, student, inputs, mode)
        max_abs, scale = _difference(t_out, s_out)
        result = Comparison(max_abs, max_abs / scale if scale > 0 else max_abs, mode)
        if reference:
            result = _with_reference(result, teacher, student, inputs, t_out, s_out)
    return result


def _run_both(
    teacher: torch.nn.Module, student: torch.nn.Module, inputs: tuple, mode: str
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    try:
        t_out = _tensors(outputs(teacher, inputs, mode))
    except Exception as e:  # the user's model on the user's inputs: an input problem
        described = ", ".join(
            f"{tuple(x.shape)} {x.dtype} on {x.device}"
            if isinstance(x, torch.Tensor)
            else type(x).__name__
            for x in inputs
        )
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InputError(
            f"the teacher does not run on the example inputs ({described}): "
            f"{type(e).__name__}: {first}. Pass inputs of the number, shape, "
            f"dtype and device the model expects."
        ) from e
    try:
        s_out = _tensors(outputs(student, inputs, mode))
    except Exception as e:
        from .runs import student_failure

        raise student_failure(student, inputs, e) from e
    positions = output_positions(student)
    if positions is not None and len(positions) == len(s_out):
        s_out = [_teacher_positions(s, p) for s, p in zip(s_out, positions)]
    if len(t_out) != len(s_out):
        raise PreservationError(f"teacher returns {len(t_out)} tensors, student {len(s_out)}")
    for t, s in zip(t_out, s_out):
        if t.shape != s.shape:
            raise PreservationError(
                f"output shapes differ: teacher {tuple(t.shape)}, student {tuple(s.shape)}"
            )
    return t_out, s_out


def _difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """Largest |a - b| over all elements, and the largest |a| (computed in float64).  Where
    ``a`` is not finite (a teacher that overflows), ``b`` must hold the same inf or NaN (else
    the difference is inf); those positions are left out of both figures.  A NaN in ``b``
    where ``a`` is finite is an infinite difference (``max`` alone would skip it)."""
    max_abs, scale = 0.0, 0.0
    for x, y in zip(a, b):
        if x.numel() == 0:
            continue
        x64, y64 = x.detach().double(), y.detach().double()
        finite = torch.isfinite(x64)
        if not bool(finite.all()):
            same = (x64 == y64) | (torch.isnan(x64) & torch.isnan(y64))
            if not bool(same[~finite].all()):
                max_abs = float("inf")
            x64, y64 = torch.where(finite, x64, 0.0), torch.where(finite, y64, 0.0)
        diff = float((x64 - y64).abs().max())
        max_abs = float("inf") if diff != diff else max(max_abs, diff)  # NaN: as far as can be
        scale = max(scale, float(x64.abs().max()))
    return max_abs, scale


def _teacher_positions(out: torch.Tensor, per_axis: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """A widened output read at the positions that copy the teacher's (see outputs="grow")."""
    for axis, pos in enumerate(per_axis):
        if pos is not None:
            out = out.index_select(axis, pos.to(out.device))
    return out


def model_dtype(example_inputs: tuple, model: torch.nn.Module) -> torch.dtype:
    """The model's floating dtype (its first floating parameter's, else the inputs')."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.dtype
    return torch.float32


def tolerance(example_inputs: tuple, model: torch.nn.Module) -> float:
    """The floor of the tolerance on max_rel for the model's floating dtype."""
    return TOLERANCE.get(model_dtype(example_inputs, model), 1e-5)


def _bytes(model: torch.nn.Module, dtype: torch.dtype) -> int:
    n = sum(t.numel() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())
    return n * torch.empty((), dtype=dtype).element_size()


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        import psutil

        return psutil.virtual_memory().available
    except Exception:  # without psutil: assume a few GiB
        return 4 << 30


def _reference_dtypes(
    teacher: torch.nn.Module, student: torch.nn.Module, dtype: torch.dtype
) -> list[torch.dtype]:
    """Dtypes more precise than ``dtype`` whose copies of both models fit in memory."""
    device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
    if device.type == "meta":
        return []
    free = _free_memory(device) * _MEMORY_SHARE
    order = [torch.float64, torch.float32]
    better = (
        [d for d in order if torch.finfo(d).eps < torch.finfo(dtype).eps]
        if dtype.is_floating_point
        else []
    )
    return [d for d in better if _bytes(teacher, d) + _bytes(student, d) <= free]


def _cast(x: Any, dtype: torch.dtype) -> Any:
    return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _retarget(model: torch.nn.Module, old: torch.dtype, new: torch.dtype) -> torch.nn.Module:
    """A GraphModule's graph constants naming the model's dtype (exported graphs bake in
    casts and dtype assertions) made to name ``new`` instead."""
    if not isinstance(model, torch.fx.GraphModule):
        return model
    hits = 0

    def swap(a: Any) -> Any:
        nonlocal hits
        if a is old:
            hits += 1
            return new
        return a

    changed = False
    for node in model.graph.nodes:
        hits = 0
        args, kwargs = pytree.tree_map(swap, node.args), pytree.tree_map(swap, dict(node.kwargs))
        if hits:
            node.args, node.kwargs = args, kwargs
            changed = True
    if changed:
        model.recompile()
    return model


def _reference_run(
    teacher: torch.nn.Module, student: torch.nn.Module, inputs: tuple, mode: str, dtype: torch.dtype
) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """Outputs of copies of both models cast to ``dtype``; None if either does not run so."""
    own = model_dtype(inputs, teacher)
    try:
        with untouched(teacher):
            t_copy = _retarget(copy.deepcopy(teacher).to(dtype), own, dtype)
        s_copy = _retarget(copy.deepcopy(student).to(dtype), own, dtype)
        cast = tuple(pytree.tree_map(lambda x: _cast(x, dtype), inputs))
        t_ref = _tensors(outputs(t_copy, cast, mode))
        del t_copy
        s_ref = _tensors(outputs(s_copy, cast, mode))
    except Exception:  # a model that only runs in its own dtype: no reference
        return None
    positions = output_positions(student)
    if positions is not None and len(positions) == len(s_ref):
        s_ref = [_teacher_positions(s, p) for s, p in zip(s_ref, positions)]
    if len(t_ref) != len(s_ref) or any(t.shape != s.shape for t, s in zip(t_ref, s_ref)):
        return None
    return t_ref, s_ref


def _with_reference(
    result: Comparison,
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    inputs: tuple,
    t_out: list,
    s_out: list,
) -> Comparison:
    for dtype in _reference_dtypes(teacher, student, model_dtype(inputs, teacher)):
        run = _reference_run(teacher, student, inputs, result.mode, dtype)
        if run is None:
            continue
        t_ref, s_ref = run
        _, scale = _difference(t_ref, t_ref)
        scale = scale or 1.0
        return Comparison(
            result.max_abs,
            result.max_rel,
            result.mode,
            str(dtype).split(".")[-1],
            _difference(t_ref, t_out)[0] / scale,
            _difference(t_ref, s_out)[0] / scale,
            _difference(t_ref, s_ref)[0] / scale,
        )
    if model_dtype(inputs, teacher) == torch.float64:  # the teacher is its own reference
        return Comparison(
            result.max_abs,
            result.max_rel,
            result.mode,
            "float64",
            0.0,
            result.max_rel,
            result.max_rel,
        )
    return result


def verify(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    example_inputs: tuple,
    *,
    mode: str = "eval",
    tol: float | None = None,
) -> Comparison:
    """``compare`` and raise :class:`PreservationError` unless the student is exact up to
    rounding: within the dtype's floor, or calibrated against a float64 reference (see the
    module's docstring).  An explicit ``tol`` is a plain bound on max_rel instead."""
    inputs = _as_tuple(example_inputs)
    result = compare(teacher, student, inputs, mode=mode)
    if tol is not None:
        if not result.max_rel <= tol:
            raise PreservationError(
                f"the student does not compute the teacher's function: {result} exceeds the "
                f"tolerance {tol:g} given."
            )
        return result
    dtype = model_dtype(inputs, teacher)
    floor = TOLERANCE.get(dtype, 1e-5)
    if result.max_rel <= floor:
        return result
    result = compare(teacher, student, inputs, mode=mode, reference=True)
    name = str(dtype).split(".")[-1]
    if result.reference is None:
        raise PreservationError(
            f"the student does not compute the teacher's function: {result} exceeds the "
            f"{name} tolerance {floor:g}, and no more precise copy of the models could be run "
            f"to tell rounding from a wrong student (too little memory, or a model that only "
            f"runs in {name}). If the difference is not rounding it is a bug in fxgrow's "
            f"rules for this model; please report it (pass verify=False to get the student "
            f"anyway)."
        )
    assert (
        result.teacher_rel is not None
        and result.student_rel is not None
        and result.reference_rel is not None
    )
    bound = max(floor, CALIBRATION * result.teacher_rel)
    exact = TOLERANCE.get(getattr(torch, result.reference), 1e-5)
    if result.student_rel <= bound or result.reference_rel <= max(exact, bound):
        return result
    raise PreservationError(
        f"the student does not compute the teacher's function: it deviates from the teacher "
        f"run in {result.reference} by {result.student_rel:.3g} (relative), while the teacher's "
        f"own {name} rounding is {result.teacher_rel:.3g}: beyond the calibrated bound "
        f"{bound:.3g} ({CALIBRATION:g} x the teacher's, at least {floor:g}), and run in "
        f"{result.reference} both still differ by {result.reference_rel:.3g}: not "
        f"rounding. This is a bug in fxgrow's rules for this model; please report it with the "
        f"model (pass verify=False to get the student anyway). [{result}]"
    )
