"""The whole model's outputs after growing a submodule in place (``within=``).

Detectors return, per image, a dict of per-detection tensors (``boxes``, ``scores``,
``labels``, and ``masks`` / ``keypoints`` where the model has them) in score order, after a
score threshold, non-maximum suppression and a top-k.  Rounding in the grown submodule (about
1e-7 relative in float32) can swap two detections of near-equal score, so the outputs are not
compared position by position: each teacher detection (in the teacher's score order) is
matched to the unused student detection of the same label whose box and score are closest,
and the relative error is taken per field over the matched pairs (``max|s - t| / max|t|``
per field, so scores in [0, 1] are not judged on the scale of pixel boxes).  Masks and
keypoints move in steps (``DISCRETE``): a few detections whose mask or keypoints jumped are
counted, not measured.

The bound is calibrated as in :mod:`fxgrow.verify.compare`: beyond the dtype's floor, a float64
copy of the teacher is run and the teacher's own deviation from it (``teacher_rel``: the
rounding its dtype causes through proposals, RoI pooling and box decoding -- about 5e-5 in
float32 for a ResNet-50 Faster R-CNN) bounds the student's: at most ``CALIBRATION`` times that,
and at most twice as many detections without a partner (one model keeps a detection at the
score threshold or the top-k cut and the other does not) as the teacher has against its
float64 copy.  Where no float64 copy runs, the fixed bound ``AMPLIFICATION`` x the floor
applies and no detection may lack a partner.

Other outputs are checked by the calibrated verifier (:func:`fxgrow.verify.verify`)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import PreservationError
from ..modes import preserved, set_training, untouched
from ..verify.compare import CALIBRATION, TOLERANCE, model_dtype

AMPLIFICATION = 100.0
"""Without a float64 reference, whole detector outputs may differ by this many times the
dtype's floor (1e-3 in float32); a wrongly grown submodule moves them by O(1)."""


DISCRETE = ("masks", "keypoints")
"""Fields that move in steps: a mask is pasted at its box's integer pixel coordinates, a
keypoint sits at its heatmap's argmax, so rounding can move one by a pixel or to a near-tied
maximum.  Per detection, a difference beyond ``JUMP`` of the field's largest value is counted
as a jump (up to ``max(2, detections / 20)`` may jump; a wrong submodule moves nearly all)
and left out of ``max_rel``; the continuous fields (boxes, scores) stay strict."""
JUMP = 1e-2

ILL_CONDITIONED = 1e-2
"""A teacher whose float32 detections differ from its float64 copy's by more than this
(near-tied proposals, a keypoint heatmap's argmax) is said to make the whole-model check
weak: the bound it calibrates is then loose."""


@dataclass(frozen=True)
class WholeComparison:
    """The whole model's outputs, student against teacher: ``max_rel`` the largest relative
    difference; for detectors, ``detections`` the teacher detections matched to the
    student's, ``unmatched`` those of either model without a partner, ``jumps`` the matched
    detections whose mask or keypoints jumped (see ``DISCRETE``; left out of ``max_rel``)."""

    max_rel: float
    detections: int | None = None
    unmatched: int = 0
    teacher_rel: float | None = None
    teacher_unmatched: int = 0
    jumps: int = 0

    def __str__(self) -> str:
        if self.detections is None:
            return f"whole model: max rel err {self.max_rel:.3g}"
        text = (
            f"whole model: {self.detections} detections matched, {self.unmatched} "
            f"unmatched, max rel err {self.max_rel:.3g} (per field, matched by label, box "
            f"and score)"
        )
        if self.jumps:
            text += f", {self.jumps} with a mask or keypoints moved by a pixel or a near tie"
        if self.teacher_rel is not None:
            text += (
                f"; teacher against its float64 copy: {self.teacher_rel:.3g}, "
                f"{self.teacher_unmatched} unmatched"
            )
            if self.teacher_rel > ILL_CONDITIONED:
                text += (
                    " (the teacher's own detections move this much under rounding, so "
                    "this check has little power here; the submodule's check stands)"
                )
        return text


def is_detections(out: Any) -> bool:
    """A list or tuple of dicts that each hold ``boxes`` and ``scores`` tensors."""
    return (
        isinstance(out, (list, tuple))
        and len(out) > 0
        and all(
            isinstance(d, dict)
            and isinstance(d.get("boxes"), torch.Tensor)
            and isinstance(d.get("scores"), torch.Tensor)
            for d in out
        )
    )


def match(t: dict, s: dict) -> tuple[list[tuple[int, int]], int]:
    """Pairs (teacher index, student index) and the number of detections left unpaired.
    Greedy in the teacher's score order: the nearest unused student detection of the same
    label (box distance relative to the boxes' scale, plus the score difference)."""
    n, m = len(t["scores"]), len(s["scores"])
    if n == 0 or m == 0:
        return [], n + m
    tb, sb = t["boxes"].detach().double(), s["boxes"].detach().double()
    scale = max(float(tb.abs().max()), 1.0)
    dist = (tb[:, None, :] - sb[None, :, :]).abs().amax(-1) / scale + (
        t["scores"].detach().double()[:, None] - s["scores"].detach().double()[None, :]
    ).abs()
    if "labels" in t and "labels" in s:
        dist = dist.masked_fill(t["labels"][:, None] != s["labels"][None, :], float("inf"))
    pairs, used = [], torch.zeros(m, dtype=torch.bool)
    for i in torch.argsort(t["scores"], descending=True, stable=True).tolist():
        row = dist[i].masked_fill(used, float("inf"))
        j = int(row.argmin())
        if row[j] == float("inf"):
            continue
        used[j] = True
        pairs.append((i, j))
    return pairs, n + m - 2 * len(pairs)


def _field_error(t: torch.Tensor, s: torch.Tensor) -> float:
    if t.numel() == 0:
        return 0.0
    t64, s64 = t.detach().double(), s.detach().double()
    diff = float((t64 - s64).abs().max())
    if math.isnan(diff):
        return float("inf")
    top = float(t64.abs().max())
    return diff / top if top > 0 else diff


def compare_detections(t_out: list, s_out: list) -> WholeComparison:
    """Match each image's detections (see :func:`match`) and measure every per-detection
    field over the matched pairs."""
    if len(t_out) != len(s_out):
        raise PreservationError(
            f"the teacher returns detections for {len(t_out)} images, the student for {len(s_out)}"
        )
    worst, matched, unmatched, jumps = 0.0, 0, 0, 0
    for t, s in zip(t_out, s_out):
        pairs, left = match(t, s)
        matched, unmatched = matched + len(pairs), unmatched + left
        if not pairs:
            continue
        ti = torch.tensor([i for i, _ in pairs])
        si = torch.tensor([j for _, j in pairs])
        n = len(t["scores"])
        for key, tv in t.items():
            sv = s.get(key)
            if (
                not isinstance(tv, torch.Tensor)
                or tv.dim() == 0
                or tv.shape[0] != n
                or not isinstance(sv, torch.Tensor)
            ):
                continue
            a, b = tv.index_select(0, ti), sv.index_select(0, si)
            if a.shape != b.shape:
                raise PreservationError(
                    f"detection field {key!r}: teacher {tuple(a.shape)}, student {tuple(b.shape)}"
                )
            if key in DISCRETE:
                error, moved = _jumps(a, b)
                worst, jumps = max(worst, error), jumps + moved
            else:
                worst = max(worst, _field_error(a, b))
    return WholeComparison(worst, matched, unmatched, jumps=jumps)


def _jumps(t: torch.Tensor, s: torch.Tensor) -> tuple[float, int]:
    """A discrete field's largest relative error over the detections that did not jump, and
    how many jumped (differ by more than ``JUMP`` of the field's largest value)."""
    if t.numel() == 0:
        return 0.0, 0
    t64, s64 = t.detach().double(), s.detach().double()
    per = (t64 - s64).abs().flatten(1).amax(1).nan_to_num(float("inf"))
    top = float(t64.abs().max())
    per = per / top if top > 0 else per
    jumped = per > JUMP
    return float(per[~jumped].max()) if bool((~jumped).any()) else 0.0, int(jumped.sum())


def _run(model: torch.nn.Module, inputs: tuple) -> Any:
    with preserved(model), torch.no_grad():
        set_training(model, False)
        return model(*inputs)


def verify_whole(
    teacher: torch.nn.Module, student: torch.nn.Module, inputs: tuple
) -> WholeComparison:
    """The whole student against the whole teacher in eval mode; a
    :class:`PreservationError` when they differ beyond rounding."""
    with untouched(teacher):
        t_out = _run(teacher, inputs)
    if not is_detections(t_out):
        from ..verify.compare import verify

        return WholeComparison(verify(teacher, student, inputs).max_rel)
    try:
        s_out = _run(student, inputs)
    except Exception as e:
        raise PreservationError(
            f"the whole student does not run on the example inputs: {type(e).__name__}: {e}"
        ) from e
    if not is_detections(s_out):
        raise PreservationError("the teacher returns detections, the whole student does not")
    result = compare_detections(t_out, s_out)
    dtype = model_dtype(inputs, teacher)
    floor = TOLERANCE.get(dtype, 1e-5)
    if not result.unmatched and not result.jumps and result.max_rel <= floor:
        return result
    reference = None if dtype == torch.float64 else _reference(teacher, inputs, t_out)
    if reference is None:
        bound, allowed = AMPLIFICATION * floor, 0
    else:
        result = replace(
            result, teacher_rel=reference.max_rel, teacher_unmatched=reference.unmatched
        )
        bound, allowed = max(floor, CALIBRATION * reference.max_rel), 2 * reference.unmatched
    jumps = max(2, (result.detections or 0) // 20)
    if result.unmatched > allowed or not result.max_rel <= bound or result.jumps > jumps:
        raise PreservationError(
            f"the grown submodule changes the whole model's detections: "
            f"{result} (bound {bound:.3g}, {allowed} unmatched, {jumps} "
            f"jumps)"
        )
    return result


def _reference(teacher: torch.nn.Module, inputs: tuple, t_out: list) -> WholeComparison | None:
    """The teacher against a float64 copy of itself (None where that copy does not run)."""
    try:
        with untouched(teacher):
            copy64 = copy.deepcopy(teacher).double()
        out = _run(
            copy64,
            tuple(
                x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                for x in inputs
            ),
        )
        return compare_detections(out, t_out) if is_detections(out) else None
    except Exception:
        return None
