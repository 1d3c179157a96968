"""Deliberate blockers: ops fxgrow knows and refuses, each with the reason.

A blocker is a rule that raises :class:`~fxgrow.analysis.context.RuleError`: every channel
space the op touches is blocked with that reason (as an op without a rule is, but the message
says why), and what it returns is fixed.  Listed here are the Core ATen ops whose channel maths
fxgrow does not model; ``docs/core_aten.md`` shows them next to the rules."""

from __future__ import annotations

from collections.abc import Callable

from ..context import RuleContext, RuleError
from .registry import rule


def blocked(name: str, reason: str, *targets, aten: tuple[str, ...] = ()) -> Callable:
    """Register a rule named ``name`` that blocks with ``reason`` (kept as ``fn.blocks``)."""

    def fn(cx: RuleContext):
        raise RuleError(reason)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Blocked: {reason}."
    fn.__dict__["blocks"] = reason  # a function attribute: read as getattr(fn, "blocks")
    return rule(*targets, aten=aten)(fn)


blocked(
    "backward",
    "a backward op, found only in training (joint) graphs; fxgrow grows forward graphs",
    aten=(
        "_adaptive_avg_pool2d_backward.default",
        "avg_pool2d_backward.default",
        "convolution_backward.default",
        "embedding_dense_backward.default",
        "max_pool2d_with_indices_backward.default",
        "native_group_norm_backward.default",
        "native_layer_norm_backward.default",
    ),
)
blocked(
    "pairwise_distance",
    "a distance sums over the feature axis: replicated units would count more than once",
    aten=("_cdist_forward.default", "_pdist_forward.default"),
)
blocked(
    "embedding_bag",
    "a bag of embeddings reduced per offset range: not modelled (use "
    "torch.nn.EmbeddingBag under the fx front end)",
    aten=("_embedding_bag.default",),
)
blocked(
    "fft",
    "a Fourier transform mixes every position along its axes",
    aten=("_fft_c2r.default", "_fft_r2c.default"),
)
blocked(
    "as_strided",
    "a view with explicit strides: its positions cannot be mapped to channels",
    aten=("as_strided.default",),
)
blocked(
    "col2im", "fold sums overlapping windows of the channel x kernel axis", aten=("col2im.default",)
)
blocked(
    "diagonal", "a diagonal reads positions across two axes at once", aten=("diagonal.default",)
)
blocked(
    "gather",
    "aten.gather reads each output position at an index of the same shape: not modelled",
    aten=("gather.default",),
)
blocked(
    "scatter",
    "writes at positions given by an index, mask or offset: not modelled",
    aten=(
        "scatter.value",
        "scatter.src",
        "scatter_add.default",
        "scatter_reduce.two",
        "index_put.default",
        "masked_scatter.default",
        "select_scatter.default",
        "slice_scatter.default",
    ),
)
blocked("nonzero", "the result's size depends on the values", aten=("nonzero.default",))
blocked(
    "out_variant",
    "an out= variant writes into a given tensor; export graphs use the functional form",
    aten=("atan2.out",),
)
blocked(
    "strides",
    "strides and storage offsets depend on every axis's size",
    aten=("sym_stride.int", "sym_storage_offset.default"),
)
