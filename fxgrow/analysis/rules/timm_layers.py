"""Rules for timm's no-trace modules that fxgrow keeps whole (when timm is installed)."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..context import RuleContext, RuleError
from . import elementwise
from .common import broadcast
from .norm import per_channel
from .registry import lookup, rule

_norm_act: ModuleType | None
try:
    _norm_act = importlib.import_module("timm.layers.norm_act")
except Exception:  # timm absent
    _norm_act = None


_activations: ModuleType | None
try:
    _activations = importlib.import_module("timm.layers.activations")
except Exception:  # timm absent
    _activations = None

if _activations is not None:
    _TIMM_ACTS = tuple(
        getattr(_activations, n)
        for n in (
            "Swish",
            "Mish",
            "Sigmoid",
            "Tanh",
            "HardSwish",
            "HardSigmoid",
            "HardMish",
            "GELU",
            "GELUTanh",
            "QuickGELU",
        )
        if hasattr(_activations, n)
    )
    # timm's activation modules: each forward applies one pointwise function (F.gelu,
    # x * sigmoid(x) ...) to its input, unit by unit
    rule(*_TIMM_ACTS)(elementwise.unary)


def _pointwise(module) -> bool:
    """A submodule that acts unit by unit (activation, dropout, identity)."""
    import torch.fx

    node = torch.fx.Graph().create_node("call_module", "m")
    entry = lookup(node, module)
    return entry is not None and entry.fn is elementwise.unary


if _norm_act is not None:
    _NORM_ACT = tuple(
        getattr(_norm_act, n)
        for n in ("BatchNormAct2d", "SyncBatchNormAct", "FrozenBatchNormAct2d")
        if hasattr(_norm_act, n)
    )

    @rule(*_NORM_ACT)
    def batchnorm_act(cx: RuleContext):
        """timm BatchNormAct2d: batch norm per channel (axis 1), then its dropout and activation,
        which must act unit by unit."""
        m = cx.module
        for part in ("drop", "act"):
            sub = getattr(m, part, None)
            if sub is not None and not _pointwise(sub):
                raise RuleError(f"its {part} ({type(sub).__name__}) is not a known pointwise op")
        x = cx.tensor(cx.arg(0))
        per_channel(cx, x.layouts[1])
        return cx.out(x.layouts)


# -- timm's no-trace functions and modules that fx cannot trace through ---------------------
# (the others are traced through by the front end: their ops get the ordinary rules)
_attention: ModuleType | None
_conv2d_same: ModuleType | None
_pool2d_same: ModuleType | None
try:  # (timm.layers re-exports functions under the names of these modules)
    _attention = importlib.import_module("timm.layers.attention")
    _conv2d_same = importlib.import_module("timm.layers.conv2d_same")
    _pool2d_same = importlib.import_module("timm.layers.pool2d_same")
except Exception:  # timm absent, or an older one
    _attention = _conv2d_same = _pool2d_same = None

if _conv2d_same is not None and _pool2d_same is not None:  # (imported together)
    from . import conv as _conv
    from . import pool as _pool

    @rule(_conv2d_same.Conv2dSame)
    def conv2d_same(cx: RuleContext):
        """timm Conv2dSame: a Conv2d whose "same" padding is computed from the input size at
        run time; padding is spatial only, so the channels are those of nn.Conv2d."""
        return _conv._conv_module(cx, _conv.conv_channels)

    @rule(_pool2d_same.MaxPool2dSame, _pool2d_same.AvgPool2dSame)
    def pool2d_same(cx: RuleContext):
        """timm Max/AvgPool2dSame: pooling after run-time "same" padding, per channel."""
        return _pool._spatial_op(cx, 2)


if _attention is not None and hasattr(_attention, "maybe_add_mask"):
    from ..values import TensorInfo

    @rule(_attention.maybe_add_mask, traits=("keeps_positions",))
    def maybe_add_mask(cx: RuleContext):
        """timm maybe_add_mask(scores, attn_mask): ``scores + attn_mask``, or ``scores`` when
        there is no mask (the mask broadcasts as in an add)."""
        if cx.example(cx.arg(1, "attn_mask", None)) is None:
            return cx.out(cx.tensor(cx.arg(0, "scores")).layouts)
        return broadcast(cx, [cx.arg(0, "scores"), cx.arg(1, "attn_mask")])

    @rule(_attention.resolve_self_attn_mask)
    def resolve_self_attn_mask(cx: RuleContext):
        """timm resolve_self_attn_mask(seq_len, attn, attn_mask, is_causal): None, a new causal
        mask over token positions (fixed), or the given mask (as a float bias)."""
        mask = cx.value(cx.arg(2, "attn_mask", None))
        causal = cx.concrete(cx.arg(3, "is_causal", False))
        if not causal:  # seq_len is not used
            cx.sizes_handled(cx.value(cx.arg(0, "seq_len")))
        if cx.example() is None:
            return None
        if isinstance(mask, TensorInfo) and not causal:
            return cx.out(mask.layouts)
        return cx.info_for(cx.example(), "attention mask over token positions")


_nest: ModuleType | None
try:
    _nest = importlib.import_module("timm.models.nest")
except Exception:  # timm absent, or an older one
    _nest = None

if _nest is not None and hasattr(_nest, "deblockify"):

    @rule(_nest.deblockify)
    def deblockify(cx: RuleContext):
        """timm NesT deblockify(x [B, T, N, C], block_size) -> [B, H, W, C]: blocks of
        positions laid back out as an image (``int(sqrt(T))`` keeps fx out); the channel axis
        C passes through, the position axes are fixed."""
        x = cx.tensor(cx.arg(0, "x"))
        for lay in x.layouts[1:-1]:
            cx.block(lay, "positions rearranged by deblockify", "structure")
        shape = cx.out_shape()
        return cx.out(
            (x.layouts[0], *(cx.fixed(n, "spatial axis") for n in shape[1:-1]), x.layouts[-1])
        )


# -- relative-position logits (BoTNet, HaloNet), kept whole by the front end -----------------
_bottleneck: ModuleType | None
_halo: ModuleType | None
try:
    _bottleneck = importlib.import_module("timm.layers.bottleneck_attn")
    _halo = importlib.import_module("timm.layers.halo_attn")
except Exception:  # timm absent, or an older one
    _bottleneck = _halo = None

if _bottleneck is not None and _halo is not None:
    from .registry import leaf

    _POS_EMBED_REL = tuple(m.PosEmbedRel for m in (_bottleneck, _halo) if hasattr(m, "PosEmbedRel"))

    @rule(*_POS_EMBED_REL)
    def pos_embed_rel(cx: RuleContext):
        """timm PosEmbedRel(q [..., positions, D]) -> logits [..., positions, key positions]:
        per query position, ``q . height_rel[r]`` and ``q . width_rel[r]`` over the head dim
        D, shifted from relative offsets r to absolute key positions by pad / flatten /
        reshape.  D is contracted with the tables' columns (consumer: divided); the tables'
        rows are relative offsets and the key axis is positions (fixed), so the module is kept
        whole instead of reading those rows as a channel space.  Leading axes (batch x heads,
        blocks) pass through; ``dim_head`` follows D (HaloNet's reshape reads it)."""
        q = cx.tensor(cx.arg(0))
        d = q.layouts[-1]
        for name in ("height_rel", "width_rel"):
            cx.unify(
                d,
                cx.module_consume(name, 1, (cx.arg(0), q.ndim - 1)),
                "head dim contracted with the relative-position tables",
            )
        if hasattr(cx.module, "dim_head"):
            cx.size_attr("dim_head", d)
        cx.block(q.layouts[-2], "query positions of relative-position logits", "structure")
        shape = cx.out_shape()
        return cx.out([*q.layouts[:-1], cx.fixed(shape[-1], "key positions")])

    leaf(*_POS_EMBED_REL)
