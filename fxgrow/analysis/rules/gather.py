"""Gathers by an index tensor: ``table[idx]``, ``x[:, idx]``, ``index_select``.

``out[..., i, ...] = x[..., idx[i], ...]``: the indexed axis of ``x`` is read at the positions
the index holds, so it must keep its size and order (blocked; as *structure* when ``x`` is a
parameter or buffer read directly -- a lookup table such as a relative-position bias table,
whose rows are entries, not channels).  The index's own axes become the result's axes and
pass through: replicating index entries replicates the gathered rows, which is exact.  The
other axes of ``x`` pass through unchanged, so the heads of a bias table ``[entries, heads]``
stay a channel space and grow with the attention heads."""

from __future__ import annotations

import torch
import torch.fx

from ..context import RuleContext, RuleError
from ..layout import Layout
from ..values import TensorInfo
from .registry import rule


def _block_indexed(cx: RuleContext, src, lay: Layout) -> None:
    table = isinstance(src, torch.fx.Node) and src.op == "get_attr"
    cx.block(
        lay,
        "axis gathered by an index tensor (its positions are fixed)",
        "structure" if table else "op",
    )


def _index_info(cx: RuleContext, item) -> TensorInfo:
    ex = cx.example(item)
    if (
        not isinstance(ex, torch.Tensor)
        or ex.dtype in (torch.bool, torch.uint8)
        or ex.is_floating_point()
    ):
        raise RuleError("indexing with a boolean mask or a non-integer tensor")
    return cx.tensor(item)


def gather_index(cx: RuleContext, x: TensorInfo, items: list) -> TensorInfo:
    """``x[items]`` where some items are integer index tensors and the others full slices
    (``items`` with any ``...`` expanded)."""
    tensor_at = [
        k
        for k, it in enumerate(items)
        if isinstance(it, torch.fx.Node) and isinstance(cx.example(it), torch.Tensor)
    ]
    for k, it in enumerate(items):
        if k not in tensor_at and not (isinstance(it, slice) and it == slice(None)):
            raise RuleError("advanced indexing mixed with integers, None or partial slices")
    idx = [_index_info(cx, items[k]) for k in tensor_at]
    if any(t.shape != idx[0].shape for t in idx[1:]):
        raise RuleError("index tensors of different shapes (broadcast together)")
    for t in idx[1:]:
        for a, b in zip(idx[0].layouts, t.layouts):
            cx.unify(a, b, "index tensors used together")
    for k in tensor_at:
        _block_indexed(cx, cx.arg(0), x.layouts[k])
    adjacent = tensor_at == list(range(tensor_at[0], tensor_at[-1] + 1))
    rest = [x.layouts[k] for k in range(x.ndim) if k not in tensor_at]
    first = tensor_at[0] if adjacent else 0
    return cx.out((*rest[:first], *idx[0].layouts, *rest[first:]))


@rule(torch.index_select, "index_select", aten=("index_select.default",))
def index_select(cx: RuleContext):
    """index_select(x, dim, index): ``x[..., index, ...]`` along ``dim`` (see the module
    docstring)."""
    x = cx.tensor(cx.arg(0))
    d = x.dim(cx.concrete(cx.arg(1, "dim")))
    idx = _index_info(cx, cx.arg(2, "index"))
    _block_indexed(cx, cx.arg(0), x.layouts[d])
    lay = list(x.layouts)
    lay[d] = idx.layouts[0] if idx.ndim else cx.fixed(1, "index_select of a scalar index")
    return cx.out(lay)


@rule(aten=("index.Tensor",))
def aten_index(cx: RuleContext):
    """aten.index(x, indices): ``x[indices]`` with ``None`` for the axes taken whole (see
    the module docstring)."""
    x = cx.tensor(cx.arg(0))
    items = [slice(None) if it is None else it for it in cx.arg(1, "indices")]
    return gather_index(cx, x, items + [slice(None)] * (x.ndim - len(items)))
