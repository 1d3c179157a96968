"""Reductions and normalisations along an axis.

A sum, mean, max, softmax or norm over a channel axis changes when units are replicated (a
replicated unit counts more than once): such an axis is blocked.  Over fixed axes (spatial
mean, token softmax) they are exact and the remaining axes pass through.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..context import RuleContext, RuleError
from ..values import TensorInfo
from . import attention_pattern
from .common import norm_dims
from .elementwise import binary
from .registry import has_trait, rule

_REDUCTIONS = (
    torch.mean,
    torch.sum,
    torch.amax,
    torch.amin,
    torch.prod,
    torch.std,
    torch.var,
    torch.logsumexp,
    torch.all,
    torch.any,
    torch.argmax,
    torch.argmin,
    torch.nansum,
    torch.nanmean,
    torch.norm,
    torch.linalg.vector_norm,
    torch.count_nonzero,
    "mean",
    "sum",
    "amax",
    "amin",
    "prod",
    "std",
    "var",
    "logsumexp",
    "all",
    "any",
    "argmax",
    "argmin",
    "nansum",
    "nanmean",
    "norm",
    "count_nonzero",
)

_REDUCTIONS_ATEN = (
    "mean.dim",
    "mean.default",
    "sum.dim_IntList",
    "sum.default",
    "amax.default",
    "amin.default",
    "var.correction",
    "std.correction",
    "argmax.default",
    "argmin.default",
    "all.default",
    "any.default",
    "any.dim",
    "any.dims",
    "var.dim",
    "prod.default",
    "prod.dim_int",
    "linalg_vector_norm.default",
    "norm.ScalarOpt_dim",
    "logsumexp.default",
    "nansum.default",
    "count_nonzero.dim_IntList",
)
"""The same ops as ATen overloads (``torch.export`` graphs)."""


def op_name(target) -> str:
    """'mean' for torch.mean, Tensor.mean and aten.mean.dim alike."""
    name = getattr(target, "__name__", target)
    return name.split(".")[0].lstrip("_") if isinstance(name, str) else str(name)


def _exact_under(cx: RuleContext, name: str) -> str | None:
    """How a reduction over replicated units can stay exact: "any" (max/min of a multiset
    with duplicates), "uniform" (a mean, or a population variance, equals the original when
    every unit is replicated the same number of times), or None (sums, norms ... block)."""
    if has_trait(cx.node.target, "extremum"):
        return "any"
    if name in ("mean", "nanmean"):
        return "uniform"
    if name in ("var", "std"):
        correction = cx.node.kwargs.get("correction", None)
        unbiased = cx.node.kwargs.get("unbiased", None)
        if correction == 0 or unbiased is False:
            return "uniform"
    return None


@rule(*_REDUCTIONS, aten=_REDUCTIONS_ATEN)
@rule(
    torch.amax,
    torch.amin,
    "amax",
    "amin",
    aten=("amax.default", "amin.default"),
    traits=("extremum",),
)
def reduction(cx: RuleContext):
    """Reduce over ``dim`` (all axes by default), optionally keeping size-1 axes.  Over a
    channel axis: max/min stay exact, means need uniform replication, anything else blocks."""
    x = cx.tensor(cx.arg(0))
    name = op_name(cx.node.target)
    dim_pos = 2 if name in ("norm", "vector_norm", "linalg_vector_norm") else 1
    dims = cx.concrete(cx.arg(dim_pos, "dim", None))
    dims = norm_dims(dims, x.ndim) if x.ndim else []
    keep = len(cx.out_shape()) == x.ndim
    exact = _exact_under(cx, name)
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
    torch.max,
    torch.min,
    "max",
    "min",
    torch.median,
    "median",
    aten=(
        "max.dim",
        "min.dim",
        "max.default",
        "min.default",
        "max.other",
        "min.other",
        "median.default",
        "median.dim",
    ),
)
def max_min(cx: RuleContext):
    """max/min: of two tensors it is elementwise; over ``dim`` it reduces (values, indices)."""
    other = cx.arg(1, "other", None) if cx.node.target not in (torch.median, "median") else None
    if isinstance(cx.value(other), TensorInfo):
        return binary(cx)
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
    F.softmax,
    F.log_softmax,
    F.softmin,
    torch.softmax,
    torch.log_softmax,
    "softmax",
    "log_softmax",
    torch.cumsum,
    "cumsum",
    torch.cumprod,
    "cumprod",
    F.normalize,
    torch.nn.functional.local_response_norm,
    aten=(
        "softmax.int",
        "_softmax.default",
        "log_softmax.int",
        "_log_softmax.default",
        "cumsum.default",
        "cumprod.default",
    ),
)
def along_axis(cx: RuleContext):
    """softmax/log_softmax/cumsum/normalize along ``dim``: that axis mixes its positions, so a
    channel space there is blocked; the shape is unchanged."""
    x = cx.tensor(cx.arg(0))
    name = op_name(cx.node.target)
    if name == "local_response_norm":
        d = 1
    elif name == "normalize":
        d = cx.concrete(cx.arg(2, "dim", 1))
    else:
        d = cx.concrete(cx.arg(1, "dim", None))
    if d is None:
        d = 0 if x.ndim in (0, 1, 3) else 1  # torch's legacy implicit softmax dim
    if (
        name == "softmax"
        and x.dim(d) == x.ndim - 1
        and attention_pattern.from_scores(cx.arg(0), cx.state.modules, x.ndim)
    ):
        cx.block(x.layouts[-1], "softmax over key positions", "structure")
        return cx.out(x.layouts)
    # over an axis fixed as structure anyway (a head dim attention fixes, the radix of split
    # attention, a grouped conv's block count) it changes nothing: no reason to report
    cx.block_unless_structure(x.layouts[x.dim(d)], f"{name} along this axis mixes its positions")
    return cx.out(x.layouts)


@rule(nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, nn.LocalResponseNorm)
def along_axis_module(cx: RuleContext):
    """nn.Softmax & co: as the functional forms, with the module's dim."""
    x = cx.tensor(cx.arg(0))
    m = cx.module
    if isinstance(m, nn.Softmax2d):
        d = -3
    elif isinstance(m, nn.LocalResponseNorm):
        d = 1
    elif isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
        d = m.dim if m.dim is not None else (0 if x.ndim in (0, 1, 3) else 1)
    else:
        raise RuleError(f"no axis known for a {type(m).__name__} module")
    cx.block_unless_structure(
        x.layouts[x.dim(d)], f"{type(m).__name__} along this axis mixes its positions"
    )
    return cx.out(x.layouts)


@rule(
    torch.sort,
    "sort",
    torch.topk,
    "topk",
    torch.argsort,
    "argsort",
    aten=("sort.default", "topk.default", "argsort.default"),
)
def sort(cx: RuleContext):
    """sort/topk/argsort along ``dim``: positions reordered (and cut) along it, so that axis
    is blocked when it is a channel axis and fixed in the result; the other axes pass
    through, to the values and the indices alike."""
    x = cx.tensor(cx.arg(0))
    topk = op_name(cx.node.target) == "topk"
    d = x.dim(cx.concrete(cx.arg(2 if topk else 1, "dim", -1))) if x.ndim else None
    if d is not None:
        cx.block(x.layouts[d], f"positions reordered by {op_name(cx.node.target)}")

    def info(t: torch.Tensor) -> TensorInfo:
        shape = tuple(int(n) for n in t.shape)
        lay = list(x.layouts)
        if d is not None:
            lay[d] = cx.fixed(shape[d], "sorted axis")
        return TensorInfo(shape, tuple(lay))

    example = cx.example()
    return tuple(info(t) for t in example) if isinstance(example, (tuple, list)) else info(example)
