"""Layer-streamed verification: run a captured graph with each parameter read from its
checkpoint file when a node first needs it and freed after its last use.

``StreamedRun`` is an ``torch.fx.Interpreter`` over the model's graph (captured on the meta
device, so the graph holds no weights): every ``get_attr`` node is moved right before its
first user, reads its tensor from the checkpoint (in ``dtype``), and the interpreter drops it
after its last user.  A decoder then holds about one block's weights at a time (tied weights
used at both ends stay loaded).  ``peak_param_bytes`` says how much was ever loaded at once.

``verify_checkpoints`` runs teacher and student this way on the same inputs and compares the
outputs (the student's outputs at the teacher's positions when they widened).  When they
disagree it replays the plan tensor by tensor (teacher tensor -> recipe -> student tensor) and
names the stored tensors that are not what the plan makes."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.fx
from torch.utils import _pytree as pytree

from ..analysis.rules.registry import has_trait
from ..errors import PreservationError
from ..verify.compare import TOLERANCE
from .checkpoint import Checkpoint
from .plan import StreamPlan, make_tensor
from .threads import streamed_threads


class StreamedRun(torch.fx.Interpreter):
    """Run ``gm`` with its parameters read lazily from ``ckpt``.  ``aliases`` maps a graph
    attribute to the checkpoint name holding it (tied weights stored once)."""

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        ckpt: Checkpoint,
        *,
        dtype: torch.dtype,
        aliases: dict[str, str] | None = None,
    ) -> None:
        graph = gm.graph
        for node in list(graph.nodes):  # each read right before its first user
            if node.op == "get_attr" and node.users:
                first = min(node.users, key=_position(graph))
                first.prepend(node)
        gm.recompile()
        super().__init__(gm)
        self.ckpt, self.dtype, self.aliases = ckpt, dtype, aliases or {}
        self.live = 0
        self.peak_param_bytes = 0
        self.loaded: list[str] = []

    def get_attr(self, target: torch.fx.node.Target, args: Any, kwargs: Any) -> Any:
        """A parameter read from the checkpoint (floats cast to ``dtype``), counted as live
        until freed; a buffer the model computes comes from the module; one found nowhere is a
        PreservationError."""
        path = cast(str, target)  # a get_attr node's target: the tensor's qualified name
        name = self.aliases.get(path, path)
        if name not in self.ckpt.tensors:
            value = super().get_attr(target, args, kwargs)  # a buffer the model computes
            if isinstance(value, torch.Tensor) and value.is_meta:
                raise PreservationError(
                    f"{target!r} is in neither the checkpoint nor the model's computed buffers"
                )
            return value
        t = self.ckpt.read(name)
        if t.is_floating_point():
            t = t.to(self.dtype)
        n = t.numel() * t.element_size()
        self.live += n
        self.peak_param_bytes = max(self.peak_param_bytes, self.live)
        weakref.finalize(t, self._free, n)
        self.loaded.append(name)
        return t

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        """A leaf module of an fx-traced graph: its own tensors read for this call only."""
        module = self.fetch_attr(target)
        state: dict[str, torch.Tensor] = {}
        for kind in ("named_parameters", "named_buffers"):
            for name, value in getattr(module, kind)():
                state[name] = (
                    self.get_attr(f"{target}.{name}", (), {})
                    if self.aliases.get(f"{target}.{name}", f"{target}.{name}") in self.ckpt.tensors
                    or value.is_meta
                    else value
                )
        return torch.func.functional_call(module, state, _off_meta(args), _off_meta(kwargs))

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        """Run the call on CPU (meta devices in its arguments replaced); metadata checks are
        skipped."""
        if has_trait(target, "metadata_check"):  # metadata asserts of a graph captured on meta
            return None
        args, kwargs = _off_meta(args), _off_meta(kwargs)
        return super().call_function(target, args, kwargs)

    def call_method(self, target: Any, args: Any, kwargs: Any) -> Any:
        """Run the method on CPU (meta devices in its arguments replaced)."""
        return super().call_method(target, _off_meta(args), _off_meta(kwargs))

    def _free(self, n: int) -> None:
        self.live -= n


_META = torch.device("meta")
_CPU = torch.device("cpu")


def _off_meta(x: Any) -> Any:
    """Device arguments recorded while capturing on the meta device, made the CPU."""
    return pytree.tree_map(
        lambda v: (
            _CPU
            if isinstance(v, torch.device) and v == _META
            else "cpu"
            if isinstance(v, str) and v == "meta"
            else v
        ),
        x,
    )


def _position(graph: torch.fx.Graph):
    order = {n: i for i, n in enumerate(graph.nodes)}
    return order.__getitem__


@dataclass(frozen=True)
class StreamedCheck:
    """Largest output difference of student and teacher, and the most parameter bytes each
    run held at once."""

    max_abs: float
    max_rel: float
    teacher_peak_bytes: int
    student_peak_bytes: int
    bad_tensors: tuple[str, ...] = ()

    def __str__(self) -> str:
        return (
            f"max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g} (layer-streamed;"
            f" at most {max(self.teacher_peak_bytes, self.student_peak_bytes) / 1e6:.1f} MB "
            f"of weights loaded at once)"
        )


def run_streamed(
    gm: torch.fx.GraphModule,
    ckpt: Checkpoint,
    inputs: tuple,
    *,
    dtype: torch.dtype = torch.float32,
    aliases: dict[str, str] | None = None,
) -> tuple[Any, int]:
    """Outputs of ``gm`` on ``inputs`` with weights from ``ckpt``, and the peak bytes held."""
    run = StreamedRun(gm, ckpt, dtype=dtype, aliases=aliases)
    with torch.no_grad():
        out = run.run(*inputs)
    return out, run.peak_param_bytes


def _leaves(out: Any) -> list[torch.Tensor]:
    return [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]


def compare_outputs(teacher_out: Any, student_out: Any) -> tuple[float, float]:
    """(max absolute difference, the same relative to the teacher's largest magnitude) over the
    outputs' tensors; a PreservationError if their shapes differ."""
    max_abs, scale = 0.0, 0.0
    for t, s in zip(_leaves(teacher_out), _leaves(student_out), strict=True):
        if t.shape != s.shape:
            raise PreservationError(
                f"student output has shape {list(s.shape)}, the teacher's {list(t.shape)}"
            )
        max_abs = max(max_abs, float((s.double() - t.double()).abs().max()))
        scale = max(scale, float(t.double().abs().max()))
    return max_abs, max_abs / scale if scale else max_abs


def replay(plan: StreamPlan, teacher: Checkpoint, student: Checkpoint) -> list[str]:
    """Student tensors whose stored values are not what the plan makes from the teacher's."""
    bad = []
    for src in plan.tensors:
        if src.name not in student.tensors:
            bad.append(src.name)
            continue
        got = student.read(src.name)
        if src.zero:
            ok = not bool(got.any())
        else:
            want = make_tensor(src, teacher.read(src.source))
            ok = (
                want.shape == got.shape and want.dtype == got.dtype and bool(torch.equal(want, got))
            )
        if not ok:
            bad.append(src.name)
    return bad


def verify_checkpoints(
    teacher_gm: torch.fx.GraphModule,
    student_gm: torch.fx.GraphModule,
    teacher: Checkpoint,
    student: Checkpoint,
    inputs: tuple,
    *,
    plan: StreamPlan | None = None,
    dtype: torch.dtype = torch.float32,
    teacher_aliases: dict[str, str] | None = None,
    student_aliases: dict[str, str] | None = None,
    check: bool = True,
    tolerance: torch.dtype | None = None,
) -> StreamedCheck:
    """Run both layer-streamed on ``inputs`` in ``dtype`` and compare.  With ``check``, raise
    ``PreservationError`` above the tolerance of ``tolerance`` (default ``dtype``: the stored
    dtype where the student's shares round in it), naming the tensors that differ from the
    plan (when ``plan`` is given)."""
    with streamed_threads():  # one count for both runs
        t_out, t_peak = run_streamed(
            teacher_gm, teacher, inputs, dtype=dtype, aliases=teacher_aliases
        )
        s_out, s_peak = run_streamed(
            student_gm, student, inputs, dtype=dtype, aliases=student_aliases
        )
    return judge(
        t_out,
        s_out,
        t_peak,
        s_peak,
        teacher,
        student,
        plan=plan,
        dtype=tolerance or dtype,
        check=check,
    )


def judge(
    t_out: Any,
    s_out: Any,
    t_peak: int,
    s_peak: int,
    teacher: Checkpoint,
    student: Checkpoint,
    *,
    plan: StreamPlan | None = None,
    dtype: torch.dtype = torch.float32,
    check: bool = True,
) -> StreamedCheck:
    """Compare the two runs' outputs; with ``check``, raise ``PreservationError`` above the
    tolerance of ``dtype``, naming the tensors that differ from ``plan`` (when given)."""
    max_abs, max_rel = compare_outputs(t_out, s_out)
    result = StreamedCheck(max_abs, max_rel, t_peak, s_peak)
    if check and not max_rel <= TOLERANCE.get(dtype, 1e-5):
        bad = replay(plan, teacher, student) if plan is not None else []
        where = (
            (
                f"; stored tensors that differ from the plan: {', '.join(bad[:8])}"
                + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            )
            if bad
            else (
                "; every stored tensor is what the plan makes (the plan or the config is wrong)"
                if plan is not None
                else ""
            )
        )
        raise PreservationError(
            f"the student checkpoint does not compute the teacher's function: {result}{where}"
        )
    return result
