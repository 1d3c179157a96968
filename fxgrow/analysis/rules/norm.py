"""Normalisation layers.

* BatchNorm / InstanceNorm: statistics are per channel, so replicas of a channel have equal
  statistics; weight, bias, running mean and variance are per-channel (copied with g).
* LayerNorm / RMSNorm over the channel axis: mean and variance over C' units equal those over
  C only when every unit is replicated the same number of times (each value then appears k
  times).  fxgrow records a *uniform* constraint; the plan then uses g(j) = j mod C and checks
  that every position of the normalised axes is replicated equally.
* GroupNorm(G, C): statistics per block of C/G channels.  The G blocks share one map (so they
  stay equal in size) and each is replicated uniformly.  G = C is per channel.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..arguments import with_argument
from ..context import SCALE, RuleContext, RuleError
from ..values import TensorInfo
from .registry import rule

_BATCHNORM = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


@rule(*_BATCHNORM)
@rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, traits=("same_shape",))
def batchnorm_module(cx: RuleContext):
    """BatchNorm/InstanceNorm: per-channel statistics and affine parameters on axis 1."""
    x = cx.tensor(cx.arg(0))
    m = cx.module_as(nn.modules.batchnorm._NormBase)
    ch = 1 if x.ndim > 1 else 0
    if (
        isinstance(m, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d))
        and x.ndim == {nn.InstanceNorm1d: 2, nn.InstanceNorm2d: 3, nn.InstanceNorm3d: 4}[type(m)]
    ):
        ch = 0  # unbatched instance norm
    per_channel(cx, x.layouts[ch])
    instance = isinstance(m, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d))
    if m.training or not m.track_running_stats or getattr(m, "running_mean", None) is None:
        input_statistics(
            cx, x.layouts[ch + 1 :] if instance else x.layouts[:ch] + x.layouts[ch + 1 :]
        )
    return cx.out(x.layouts)


def input_statistics(cx: RuleContext, over) -> None:
    """A mean and population variance computed from the input over the axes ``over``: exact
    only under uniform replication of those axes (every unit copied equally often)."""
    if not over:
        return
    merged = over[0]
    for lay in over[1:]:
        merged = cx.spaces.merge(merged, lay)
    cx.uniform(
        merged,
        "statistics of a batch/instance norm computed from its input over "
        "these axes (a weight standardisation's fan-in)",
    )


def per_channel(cx: RuleContext, c) -> None:
    """A batch/instance norm module's weight, bias and running statistics along ``c``."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        lay = cx.module_param(name, 0, SCALE)
        if lay is not None:
            cx.unify(c, lay, "per-channel parameter of a norm")
    cx.size_attr("num_features", c)


def _functional_norm(cx: RuleContext, own_at: int, own_name: str, default: bool, over: str):
    """F.batch_norm / F.instance_norm: per channel on axis 1, their running statistics,
    weight and bias (arguments 1 to 4) per channel; with statistics computed from the input
    (argument ``own_name``) see :func:`input_statistics` over the other axes (``over``:
    "batch and space" or "space")."""
    x = cx.tensor(cx.arg(0, "input"))
    c = x.layouts[1]
    for i, name in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        ref = cx.arg(i, name, None)
        if ref is not None:
            cx.unify(c, cx.tensor(ref).layouts[0], "per-channel parameter of a norm")
    if bool(cx.concrete(cx.arg(own_at, own_name, default))):
        input_statistics(cx, x.layouts[2:] if over == "space" else x.layouts[:1] + x.layouts[2:])
    return cx.out(x.layouts)


@rule(F.batch_norm)
def batchnorm_function(cx: RuleContext):
    """F.batch_norm(x, running_mean, running_var, weight, bias, training, ...): per channel on
    axis 1.  Statistics computed from the input (``training=True``) are a mean and a
    population variance over the other axes: exact only under uniform replication of those
    axes -- a weight standardisation (timm's ``StdConv2d``/``ScaledStdConv2d``:
    ``batch_norm(W.reshape(1, out, -1), training=True)``) normalises over the fan-in, which
    grows with the input channels."""
    return _functional_norm(cx, 5, "training", False, "batch and space")


@rule(F.instance_norm)
def instancenorm_function(cx: RuleContext):
    """F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, ...): as
    F.batch_norm, with statistics over the spatial axes of each sample."""
    return _functional_norm(cx, 5, "use_input_stats", True, "space")


def _aten_norm(cx: RuleContext, own: bool, over: str, running: bool = True):
    """aten.batch_norm(x, weight, bias, running_mean, running_var, ...) and its native forms:
    per channel on axis 1 (``running``: arguments 3 and 4 are running statistics); with
    statistics computed from the input (``own``) see :func:`input_statistics` over ``over``.
    The native forms also return the saved per-channel statistics (or empty tensors)."""
    x = cx.tensor(cx.arg(0, "input"))
    c = x.layouts[1]
    names: tuple[tuple[int, str], ...] = (
        (1, "weight"),
        (2, "bias"),
        (3, "running_mean"),
        (4, "running_var"),
    )
    for i, name in names if running else names[:2]:
        ref = cx.arg(i, name, None)
        if isinstance(ref, torch.fx.Node):
            cx.unify(c, cx.tensor(ref).layouts[0], "per-channel parameter of a norm")
    if own:
        input_statistics(cx, x.layouts[2:] if over == "space" else x.layouts[:1] + x.layouts[2:])
    example = cx.example()
    if not isinstance(example, (tuple, list)):
        return cx.out(x.layouts)
    stats = tuple(
        TensorInfo(tuple(t.shape), (c,))
        if tuple(t.shape) == (x.shape[1],)
        else cx.info_for(t, "saved statistics")
        for t in example[1:]
    )
    return (TensorInfo(x.shape, x.layouts), *stats)


@rule(
    aten=(
        "batch_norm.default",
        "native_batch_norm.default",
        "_native_batch_norm_legit.default",
        "cudnn_batch_norm.default",
    )
)
def aten_batch_norm(cx: RuleContext):
    """aten.batch_norm(x, weight, bias, running_mean, running_var, training, ...) and its
    native forms: per channel on axis 1; in training, statistics over batch and space.  The
    native forms also return the saved per-channel statistics (or empty tensors)."""
    return _aten_norm(cx, bool(cx.concrete(cx.arg(5, "training", False))), "batch and space")


@rule(aten=("_native_batch_norm_legit_no_training.default",))
def aten_batch_norm_eval(cx: RuleContext):
    """aten._native_batch_norm_legit_no_training: batch norm with running statistics."""
    return _aten_norm(cx, False, "batch and space")


@rule(aten=("_native_batch_norm_legit.no_stats",))
def aten_batch_norm_no_stats(cx: RuleContext):
    """aten._native_batch_norm_legit.no_stats(x, weight, bias, training, ...): batch norm
    without running statistics, always over the input's own."""
    return _aten_norm(cx, True, "batch and space", running=False)


@rule(aten=("instance_norm.default",))
def aten_instance_norm(cx: RuleContext):
    """aten.instance_norm(x, weight, bias, running_mean, running_var, use_input_stats, ...):
    as batch norm, with statistics over the spatial axes of each sample."""
    return _aten_norm(cx, bool(cx.concrete(cx.arg(5, "use_input_stats", False))), "space")


@rule(torch._weight_norm, aten=("_weight_norm.default",))
def weight_norm(cx: RuleContext):
    """_weight_norm(v, g, dim): ``g * v / ||v||`` with the norm over every axis but ``dim``.
    Along ``dim`` it is per row (v and g share the space); the norm sums over the other axes,
    where replicated units would count twice: they are blocked."""
    v, g = cx.tensor(cx.arg(0, "v")), cx.tensor(cx.arg(1, "g"))
    d = cx.concrete(cx.arg(2, "dim", 0))
    keep = None if d == -1 else v.dim(d)  # dim=-1: one norm over the whole tensor
    for k, lay in enumerate(v.layouts):
        if k == keep:
            cx.unify(lay, g.layouts[k], "weight norm: g per row of v")
        else:
            cx.block(lay, "summed over by a weight norm")
    return cx.out(v.layouts)


def _normalized(cx: RuleContext, x: TensorInfo, k: int):
    """Merged layout of the last k axes (what a LayerNorm normalises over)."""
    merged = x.layouts[-k]
    for lay in x.layouts[x.ndim - k + 1 :]:
        merged = cx.spaces.merge(merged, lay)
    return merged


@rule(nn.LayerNorm, nn.RMSNorm)
def layernorm_module(cx: RuleContext):
    """LayerNorm/RMSNorm over the trailing axes: uniform replication; affine per channel."""
    m = cx.module
    if not isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
        raise RuleError(f"expected a LayerNorm or RMSNorm module, got {type(m).__name__}")
    x = cx.tensor(cx.arg(0))
    k = len(m.normalized_shape)
    axes = x.layouts[x.ndim - k :]
    for i, lay in enumerate(axes):
        for name in ("weight", "bias"):
            p = cx.module_param(name, i, SCALE)
            if p is not None:
                cx.unify(lay, p, "affine parameter of a norm")
    cx.uniform(_normalized(cx, x, k), "normalised by a LayerNorm/RMSNorm")
    cx.set_attr("normalized_shape", lambda size: tuple(size(lay) for lay in axes), *axes)
    return cx.out(x.layouts)


@rule(
    F.layer_norm,
    F.rms_norm,
    aten=("layer_norm.default", "rms_norm.default", "native_layer_norm.default"),
)
@rule(F.layer_norm, aten=("layer_norm.default",), traits=("scaled_norm",))
def layernorm_function(cx: RuleContext):
    """F.layer_norm(x, normalized_shape, weight, bias, eps) (also F.rms_norm)."""
    x = cx.tensor(cx.arg(0, "input"))
    shape = cx.concrete(cx.arg(1, "normalized_shape"))
    k = len(shape) if isinstance(shape, (tuple, list)) else 1
    axes = x.layouts[x.ndim - k :]
    for i, name in ((2, "weight"), (3, "bias")):
        ref = cx.arg(i, name, None)
        if ref is None:
            continue
        w = cx.tensor(ref)
        for lay, wl in zip(axes[k - w.ndim :], w.layouts):
            cx.unify(lay, wl, "affine parameter of a norm")
    cx.uniform(_normalized(cx, x, k), "normalised by layer_norm/rms_norm")
    raw = cx.arg(1, "normalized_shape")
    if cx.spaces.roots(_normalized(cx, x, k)):
        for v in raw if isinstance(raw, (list, tuple)) else [raw]:
            cx.sizes_handled(cx.value(v))

        def new_args(size, args, kwargs, axes=axes):
            return with_argument(args, kwargs, 1, "normalized_shape", [size(lay) for lay in axes])

        cx.rewrite_args(new_args, *axes)
    return _with_stats(cx, x, x.ndim - k)


def _with_stats(cx: RuleContext, x: TensorInfo, lead: int):
    """The normalised result, plus (native forms) the saved statistics: one per position of
    the first ``lead`` axes of ``x``, size 1 (or a group count) after."""
    example = cx.example()
    if not isinstance(example, (tuple, list)):
        return cx.out(x.layouts)
    stats = []
    for t in example[1:]:
        shape = tuple(int(n) for n in t.shape)
        if shape[:lead] == x.shape[:lead]:
            stats.append(
                TensorInfo(
                    shape,
                    x.layouts[:lead] + tuple(cx.fixed(n, "saved statistics") for n in shape[lead:]),
                )
            )
        else:
            stats.append(cx.info_for(t, "saved statistics"))
    return (TensorInfo(x.shape, x.layouts), *stats)


@rule(nn.GroupNorm)
def groupnorm_module(cx: RuleContext):
    """GroupNorm(G, C): blocks of C/G channels share one map, each replicated uniformly."""
    m = cx.module_as(nn.GroupNorm)
    x = cx.tensor(cx.arg(0))
    c = x.layouts[1]
    for name in ("weight", "bias"):
        p = cx.module_param(name, 0, SCALE)
        if p is not None:
            cx.unify(c, p, "affine parameter of a norm")
    G, C = m.num_groups, m.num_channels
    if G != C:
        pieces = cx.spaces.equal_blocks(
            c,
            G,
            cx.blocker("GroupNorm groups"),
            cx.blocker("GroupNorm: every group must grow alike"),
        )
        cx.uniform(pieces[0], "normalised within a GroupNorm group")
    else:  # one channel per group: per channel, and the group count follows the width
        cx.size_attr("num_groups", c)
    cx.size_attr("num_channels", c)
    return cx.out(x.layouts)


@rule(F.group_norm, aten=("group_norm.default",))
def groupnorm_function(cx: RuleContext):
    """F.group_norm(x, num_groups, weight, bias, eps): num_groups stays, or follows the width
    when every channel is its own group."""
    return _group_norm(cx, (1, "num_groups"), ((2, "weight"), (3, "bias")), None)


@rule(aten=("native_group_norm.default",))
def aten_native_group_norm(cx: RuleContext):
    """aten.native_group_norm(x, weight, bias, N, C, HxW, group, eps) -> (out, mean, rstd):
    C follows the width (and group, when every channel is its own group)."""
    return _group_norm(cx, (6, "group"), ((1, "weight"), (2, "bias")), (4, "C"))


def _group_norm(
    cx: RuleContext,
    groups: tuple[int, str],
    params: tuple[tuple[int, str], ...],
    channels: tuple[int, str] | None,
):
    """A group norm whose group count is argument ``groups`` (position, name), affine
    parameters ``params`` and, where it takes one, channel count ``channels``: the channel
    count follows the width, and so does the group count when every channel is its own
    group."""
    x = cx.tensor(cx.arg(0, "input"))
    G = cx.concrete(cx.arg(*groups))
    c = x.layouts[1]
    C = x.shape[1]
    for i, name in params:
        ref = cx.arg(i, name, None)
        if isinstance(ref, torch.fx.Node):
            cx.unify(c, cx.tensor(ref).layouts[0], "affine parameter of a norm")
    if not isinstance(G, int):
        raise RuleError("num_groups is not a constant")
    follow = [channels] if channels is not None else []
    if G == C:
        follow.append(groups)
    else:
        pieces = cx.spaces.equal_blocks(
            c,
            G,
            cx.blocker("GroupNorm groups"),
            cx.blocker("GroupNorm: every group must grow alike"),
        )
        cx.uniform(pieces[0], "normalised within a GroupNorm group")
    if follow and cx.spaces.roots(c):
        cx.sizes_handled(*(cx.value(cx.arg(i, name)) for i, name in follow))

        def new_args(size, args, kwargs):
            for i, name in follow:
                args, kwargs = with_argument(args, kwargs, i, name, size(c))
            return args, kwargs

        cx.rewrite_args(new_args, c)
    example = cx.example()
    if not isinstance(example, (tuple, list)):
        return cx.out(x.layouts)
    return (TensorInfo(x.shape, x.layouts), *cx.info_for(tuple(example[1:]), "saved statistics"))
