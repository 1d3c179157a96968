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

import torch.nn as nn
import torch.nn.functional as F

from ..context import SCALE, RuleContext, RuleError
from ..values import TensorInfo
from .registry import rule

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
              nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


@rule(*_BATCHNORM)
def batchnorm_module(cx: RuleContext):
    """BatchNorm/InstanceNorm: per-channel statistics and affine parameters on axis 1."""
    x = cx.tensor(cx.arg(0))
    m = cx.module
    ch = 1 if x.ndim > 1 else 0
    if isinstance(m, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)) and \
            x.ndim == {nn.InstanceNorm1d: 2, nn.InstanceNorm2d: 3, nn.InstanceNorm3d: 4}[type(m)]:
        ch = 0  # unbatched instance norm
    per_channel(cx, x.layouts[ch])
    return cx.out(x.layouts)


def per_channel(cx: RuleContext, c) -> None:
    """A batch/instance norm module's weight, bias and running statistics along ``c``."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        lay = cx.module_param(name, 0, SCALE)
        if lay is not None:
            cx.unify(c, lay, "per-channel parameter of a norm")
    cx.size_attr("num_features", c)


@rule(F.batch_norm, F.instance_norm)
def batchnorm_function(cx: RuleContext):
    """F.batch_norm(x, running_mean, running_var, weight, bias, training, ...): per channel on
    axis 1.  Statistics computed from the input (``training=True``; instance norm's
    ``use_input_stats``) are a mean and a population variance over the other axes: exact only
    under uniform replication of those axes -- a weight standardisation (timm's
    ``StdConv2d``/``ScaledStdConv2d``: ``batch_norm(W.reshape(1, out, -1), training=True)``)
    normalises over the fan-in, which grows with the input channels."""
    x = cx.tensor(cx.arg(0, "input"))
    c = x.layouts[1]
    for i, name in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        ref = cx.arg(i, name, None)
        if ref is not None:
            cx.unify(c, cx.tensor(ref).layouts[0], "per-channel parameter of a norm")
    if cx.node.target is F.instance_norm:
        own, over = bool(cx.concrete(cx.arg(5, "use_input_stats", True))), x.layouts[2:]
    else:
        own, over = bool(cx.concrete(cx.arg(5, "training", False))), x.layouts[:1] + x.layouts[2:]
    if own and over:
        merged = over[0]
        for lay in over[1:]:
            merged = cx.spaces.merge(merged, lay)
        cx.uniform(merged, "statistics of a batch/instance norm computed from its input over "
                           "these axes (a weight standardisation's fan-in)")
    return cx.out(x.layouts)


def _normalized(cx: RuleContext, x: TensorInfo, k: int):
    """Merged layout of the last k axes (what a LayerNorm normalises over)."""
    merged = x.layouts[-k]
    for lay in x.layouts[x.ndim - k + 1:]:
        merged = cx.spaces.merge(merged, lay)
    return merged


@rule(nn.LayerNorm, nn.RMSNorm)
def layernorm_module(cx: RuleContext):
    """LayerNorm/RMSNorm over the trailing axes: uniform replication; affine per channel."""
    m = cx.module
    x = cx.tensor(cx.arg(0))
    k = len(m.normalized_shape)
    axes = x.layouts[x.ndim - k:]
    for i, lay in enumerate(axes):
        for name in ("weight", "bias"):
            p = cx.module_param(name, i, SCALE)
            if p is not None:
                cx.unify(lay, p, "affine parameter of a norm")
    cx.uniform(_normalized(cx, x, k), "normalised by a LayerNorm/RMSNorm")
    cx.set_attr("normalized_shape", lambda size: tuple(size(lay) for lay in axes), *axes)
    return cx.out(x.layouts)


@rule(F.layer_norm, F.rms_norm)
def layernorm_function(cx: RuleContext):
    """F.layer_norm(x, normalized_shape, weight, bias, eps) (also F.rms_norm)."""
    x = cx.tensor(cx.arg(0, "input"))
    shape = cx.concrete(cx.arg(1, "normalized_shape"))
    k = len(shape) if isinstance(shape, (tuple, list)) else 1
    axes = x.layouts[x.ndim - k:]
    for i, name in ((2, "weight"), (3, "bias")):
        ref = cx.arg(i, name, None)
        if ref is None:
            continue
        w = cx.tensor(ref)
        for lay, wl in zip(axes[k - w.ndim:], w.layouts):
            cx.unify(lay, wl, "affine parameter of a norm")
    cx.uniform(_normalized(cx, x, k), "normalised by layer_norm/rms_norm")
    raw = cx.arg(1, "normalized_shape")
    if cx.spaces.roots(_normalized(cx, x, k)):
        for v in (raw if isinstance(raw, (list, tuple)) else [raw]):
            cx.sizes_handled(cx.value(v))

        def new_args(size, args, kwargs, axes=axes):
            shape = [size(lay) for lay in axes]
            if "normalized_shape" in kwargs:
                kwargs = {**kwargs, "normalized_shape": shape}
            else:
                args = (args[0], shape, *args[2:])
            return args, kwargs
        cx.rewrite_args(new_args, *axes)
    return cx.out(x.layouts)


@rule(nn.GroupNorm)
def groupnorm_module(cx: RuleContext):
    """GroupNorm(G, C): blocks of C/G channels share one map, each replicated uniformly."""
    m = cx.module
    x = cx.tensor(cx.arg(0))
    c = x.layouts[1]
    for name in ("weight", "bias"):
        p = cx.module_param(name, 0, SCALE)
        if p is not None:
            cx.unify(c, p, "affine parameter of a norm")
    G, C = m.num_groups, m.num_channels
    if G != C:
        step = C // G
        pieces = cx.spaces.cut(c, range(step, C, step), cx.blocker("GroupNorm groups"))
        for p in pieces[1:]:
            cx.unify(pieces[0], p, "GroupNorm: every group must grow alike")
        cx.uniform(pieces[0], "normalised within a GroupNorm group")
    else:  # one channel per group: per channel, and the group count follows the width
        cx.size_attr("num_groups", c)
    cx.size_attr("num_channels", c)
    return cx.out(x.layouts)


@rule(F.group_norm)
def groupnorm_function(cx: RuleContext):
    """F.group_norm(x, num_groups, weight, bias, eps): the num_groups argument stays."""
    x = cx.tensor(cx.arg(0, "input"))
    G = cx.concrete(cx.arg(1, "num_groups"))
    c = x.layouts[1]
    C = x.shape[1]
    for i, name in ((2, "weight"), (3, "bias")):
        ref = cx.arg(i, name, None)
        if ref is not None:
            cx.unify(c, cx.tensor(ref).layouts[0], "affine parameter of a norm")
    if not isinstance(G, int):
        raise RuleError("num_groups is not a constant")
    if G == C:
        cx.block(c, "group_norm with one channel per group: its num_groups argument would "
                    "have to follow the width")
    else:
        step = C // G
        pieces = cx.spaces.cut(c, range(step, C, step), cx.blocker("GroupNorm groups"))
        for p in pieces[1:]:
            cx.unify(pieces[0], p, "GroupNorm: every group must grow alike")
        cx.uniform(pieces[0], "normalised within a GroupNorm group")
    return cx.out(x.layouts)
