"""Reductions and normalisations along an axis.

A sum, mean, max, softmax or norm over a channel axis changes when units are replicated (a
replicated unit counts more than once): such an axis is blocked.  Over fixed axes (spatial
mean, token softmax) they are exact and the remaining axes pass through.  Each behaviour is a
rule of its own (which reductions stay exact, where an op takes its ``dim``), so no rule asks
which op it was called for.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import RuleContext, RuleError
from ..values import TensorInfo
from . import attention_pattern
from .binary import binary
from .common import norm_dims
from .registry import rule


def _shown(target: Any) -> str:
    """The op's name as a user writes it, for messages: 'mean' for torch.mean, Tensor.mean
    and aten.mean.dim alike."""
    name = getattr(target, "__name__", target)
    return name.split(".")[0].lstrip("_") if isinstance(name, str) else str(name)


def _reduce(cx: RuleContext, exact: str | None, dim_at: int = 1):
    """Reduce over ``dim`` (argument ``dim_at``; all axes by default), optionally keeping
    size-1 axes.  ``exact`` says how the result stays exact over replicated units: "any"
    (max/min of a multiset with duplicates), "uniform" (a mean, or a population variance,
    equals the original when every unit is replicated the same number of times) or None (the
    axis is blocked)."""
    x = cx.tensor(cx.arg(0))
    name = _shown(cx.node.target)
    dims = cx.concrete(cx.arg(dim_at, "dim", None))
    dims = norm_dims(dims, x.ndim) if x.ndim else []
    keep = len(cx.out_shape()) == x.ndim
    if exact == "uniform" and dims:
        merged = x.layouts[dims[0]]
        for d in dims[1:]:
            merged = cx.spaces.merge(merged, x.layouts[d])
        cx.uniform(merged, f"averaged over by {name}")
    layouts = []
    for d, lay in enumerate(x.layouts):
        if d in dims:
            if exact is None:
                cx.block(lay, f"reduced over by {name}")
            if keep:
                layouts.append(cx.fixed(1, "reduced axis"))
        else:
            layouts.append(lay)
    return cx.out(layouts)


@rule(
    torch.sum,
    torch.prod,
    torch.logsumexp,
    torch.all,
    torch.any,
    torch.argmax,
    torch.argmin,
    torch.nansum,
    torch.count_nonzero,
    "sum",
    "prod",
    "logsumexp",
    "all",
    "any",
    "argmax",
    "argmin",
    "nansum",
    "count_nonzero",
    aten=(
        "sum.dim_IntList",
        "sum.default",
        "argmax.default",
        "argmin.default",
        "all.default",
        "any.default",
        "any.dim",
        "any.dims",
        "prod.default",
        "prod.dim_int",
        "logsumexp.default",
        "nansum.default",
        "count_nonzero.dim_IntList",
    ),
)
def reduction(cx: RuleContext):
    """Reduce over ``dim`` (all axes by default), optionally keeping size-1 axes: a channel
    axis reduced over is blocked (a replicated unit would count twice)."""
    return _reduce(cx, None)


@rule(
    torch.norm,
    torch.linalg.vector_norm,
    "norm",
    aten=("linalg_vector_norm.default", "norm.ScalarOpt_dim"),
)
def norm_reduction(cx: RuleContext):
    """A p-norm over ``dim`` (argument 2, after ``p``): as a sum, a channel axis blocks."""
    return _reduce(cx, None, dim_at=2)


@rule(torch.mean, torch.nanmean, "mean", "nanmean", aten=("mean.dim", "mean.default"))
def mean(cx: RuleContext):
    """A mean over ``dim``: exact over a channel axis whose units are all replicated the same
    number of times (the axis must grow uniformly)."""
    return _reduce(cx, "uniform")


@rule(torch.var, torch.std, "var", "std", aten=("var.correction", "std.correction", "var.dim"))
def variance(cx: RuleContext):
    """var/std over ``dim``: the population form (``correction=0``, ``unbiased=False``) is a
    mean of squares, exact under uniform replication; with Bessel's correction it blocks."""
    population = cx.arg(None, "correction", None) == 0 or cx.arg(None, "unbiased", None) is False
    return _reduce(cx, "uniform" if population else None)


@rule(torch.amax, torch.amin, "amax", "amin", aten=("amax.default", "amin.default"))
@rule(
    torch.amax,
    torch.amin,
    "amax",
    "amin",
    aten=("amax.default", "amin.default"),
    traits=("extremum",),
)
def extremum(cx: RuleContext):
    """amax/amin over ``dim``: the max of a multiset with duplicates is the max of its
    distinct elements, so a channel axis stays exact."""
    return _reduce(cx, "any")


def _reduce_one_dim(cx: RuleContext):
    """Over ``dim`` (values, indices), or over every axis without one: the axis is blocked."""
    x = cx.tensor(cx.arg(0))
    d = cx.concrete(cx.arg(1, "dim", None))
    if d is None:
        for lay in x.layouts:
            cx.block(lay, "reduced over by max/min")
        return cx.out(())
    d = x.dim(d)
    cx.block(x.layouts[d], "reduced over by max/min")
    keep = bool(cx.concrete(cx.arg(2, "keepdim", False)))
    layouts = list(x.layouts)
    if keep:
        layouts[d] = cx.fixed(1, "reduced axis")
    else:
        del layouts[d]
    return tuple(TensorInfo(tuple(t.shape), tuple(layouts)) for t in cx.example())


@rule(
    torch.max,
    torch.min,
    "max",
    "min",
    aten=("max.dim", "min.dim", "max.default", "min.default", "max.other", "min.other"),
)
def max_min(cx: RuleContext):
    """max/min: of two tensors it is elementwise; over ``dim`` it reduces (values, indices)."""
    if isinstance(cx.value(cx.arg(1, "other", None)), TensorInfo):
        return binary(cx)
    return _reduce_one_dim(cx)


@rule(torch.median, "median", aten=("median.default", "median.dim"))
def median(cx: RuleContext):
    """median over ``dim`` (values, indices), or of every element: the axis is blocked."""
    return _reduce_one_dim(cx)


def _implicit_dim(x: TensorInfo) -> int:
    """The axis a softmax without ``dim`` runs along (torch's legacy implicit choice)."""
    return 0 if x.ndim in (0, 1, 3) else 1


def _along(cx: RuleContext, d: int | None, what: str):
    """``what`` mixes the positions along axis ``d`` (None: torch's legacy implicit softmax
    dim): a channel space there is blocked; the shape is unchanged."""
    x = cx.tensor(cx.arg(0))
    d = _implicit_dim(x) if d is None else d
    # over an axis fixed as structure anyway (a head dim attention fixes, the radix of split
    # attention, a grouped conv's block count) it changes nothing: no reason to report
    cx.block_unless_structure(x.layouts[x.dim(d)], f"{what} along this axis mixes its positions")
    return cx.out(x.layouts)


@rule(
    F.softmax,
    torch.softmax,
    "softmax",
    aten=("softmax.int", "_softmax.default"),
)
@rule(
    F.softmax,
    torch.softmax,
    "softmax",
    aten=("softmax.int", "_softmax.default"),
    traits=("softmax",),
)
def softmax(cx: RuleContext):
    """softmax along ``dim``: that axis mixes its positions, so a channel space there is
    blocked.  Over the last axis of attention scores (``q @ k^T``) it is blocked as
    structure: the key positions."""
    x = cx.tensor(cx.arg(0))
    d = cx.concrete(cx.arg(1, "dim", None))
    d = _implicit_dim(x) if d is None else d
    if x.dim(d) == x.ndim - 1 and attention_pattern.from_scores(
        cx.arg(0), cx.state.modules, x.ndim
    ):
        cx.block(x.layouts[-1], "softmax over key positions", "structure")
        return cx.out(x.layouts)
    return _along(cx, d, "softmax")


@rule(
    F.log_softmax,
    F.softmin,
    torch.log_softmax,
    "log_softmax",
    torch.cumsum,
    "cumsum",
    torch.cumprod,
    "cumprod",
    aten=("log_softmax.int", "_log_softmax.default", "cumsum.default", "cumprod.default"),
)
def along_axis(cx: RuleContext):
    """log_softmax/softmin/cumsum/cumprod along ``dim``: that axis mixes its positions, so a
    channel space there is blocked; the shape is unchanged."""
    return _along(cx, cx.concrete(cx.arg(1, "dim", None)), _shown(cx.node.target))


@rule(F.normalize)
def normalize(cx: RuleContext):
    """F.normalize(x, p, dim=1): divides by the norm along ``dim``, which mixes its positions."""
    return _along(cx, cx.concrete(cx.arg(2, "dim", 1)), "normalize")


@rule(F.local_response_norm)
def local_response_norm(cx: RuleContext):
    """F.local_response_norm: normalises each channel by its neighbours along axis 1."""
    return _along(cx, 1, "local_response_norm")


@rule(nn.Softmax, nn.LogSoftmax, nn.Softmin)
@rule(nn.Softmax, traits=("softmax",))
def along_axis_module(cx: RuleContext):
    """nn.Softmax & co: as the functional forms, with the module's dim."""
    m = cx.module
    if not isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
        raise RuleError(f"expected a softmax module, got {type(m).__name__}")
    return _along(cx, m.dim, type(m).__name__)


@rule(nn.Softmax2d)
def softmax2d(cx: RuleContext):
    """nn.Softmax2d: a softmax over the channels (axis -3)."""
    return _along(cx, -3, "Softmax2d")


@rule(nn.LocalResponseNorm)
def local_response_norm_module(cx: RuleContext):
    """nn.LocalResponseNorm: normalises each channel by its neighbours along axis 1."""
    return _along(cx, 1, "LocalResponseNorm")


def _sorted(cx: RuleContext, dim_at: int, what: str):
    """Positions reordered (and cut) along ``dim`` (argument ``dim_at``, default -1): that
    axis is blocked when it is a channel axis and fixed in the result; the other axes pass
    through, to the values and the indices alike."""
    x = cx.tensor(cx.arg(0))
    d = x.dim(cx.concrete(cx.arg(dim_at, "dim", -1))) if x.ndim else None
    if d is not None:
        cx.block(x.layouts[d], f"positions reordered by {what}")

    def info(t: torch.Tensor) -> TensorInfo:
        shape = tuple(int(n) for n in t.shape)
        lay = list(x.layouts)
        if d is not None:
            lay[d] = cx.fixed(shape[d], "sorted axis")
        return TensorInfo(shape, tuple(lay))

    example = cx.example()
    return tuple(info(t) for t in example) if isinstance(example, (tuple, list)) else info(example)


@rule(torch.sort, "sort", torch.argsort, "argsort", aten=("sort.default", "argsort.default"))
def sort(cx: RuleContext):
    """sort/argsort along ``dim``: positions reordered along it (see ``_sorted``)."""
    return _sorted(cx, 1, _shown(cx.node.target))


@rule(torch.topk, "topk", aten=("topk.default",))
def topk(cx: RuleContext):
    """topk(x, k, dim): the k largest positions along ``dim`` (see ``_sorted``)."""
    return _sorted(cx, 2, "topk")
