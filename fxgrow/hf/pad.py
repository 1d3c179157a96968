"""Growing an RMSNorm residual stream by any width: zero padding, norms compensated.

Invariant: ``pad_stream(model, members, new)`` returns a model of ``model``'s class whose
stream (the channel group ``members``) is ``new`` wide and which computes what ``model``
computes, or raises :class:`ConfigError` saying why this stream cannot be padded.

The maths: the new channels of the stream are zero everywhere (every writer's new rows,
the embedding's new columns), so every RMSNorm over the stream sees the same sum of squares
S over C' > C channels: ``x / sqrt(S / C' + eps')``.  With ``eps' = eps C / C'`` that is
``sqrt(C' / C) x / sqrt(S / C + eps)``, so the norm's weight times ``sqrt(C / C')`` gives the
teacher's values (``(1 + w)`` likewise for Gemma's form).  Readers' new columns read zeros:
they get small random values so the new channels learn.

LayerNorm streams take LEMON's average expansion instead: every writer's new rows (and the
embeddings' new columns) are the mean of its old ones, so each new channel of the stream
holds the mean of the old channels: the mean is unchanged, the variance is ``var C / C'``,
so the same eps and weight compensation apply; the norms' new bias entries are zero, so
their new output channels are zero and readers' new columns may be anything.  Exact for
pre-norm blocks; a post-norm model (BERT) fails the check on fresh inputs and is refused.

Where no config field holds the eps (OPT's LayerNorms use torch's default), the eps stays
and the stream is scaled instead: every writer times ``k = sqrt(C' / C)`` makes the padded
stream's variance (mean square) ``k^2 var C / C' = var``, so each norm computes ``k`` times
its teacher's normalised values with the same eps, and its weight times ``1 / k`` (as
above) restores them; a tied output head reading the scaled table gets ``1 / k`` folded
into its input (the final norm).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx

from ..errors import ConfigError


def _norm_kind(module: torch.nn.Module, weight: str) -> tuple[str, float]:
    """("mul" | "one_plus" | "layer", eps): an RMS norm scaling by ``w`` or ``1 + w``, or a
    norm that subtracts the mean (LayerNorm)."""
    import copy

    w = getattr(module, weight)
    n = w.shape[0]
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(0)).to(w.dtype)
    probe = copy.deepcopy(module)
    eps = next(
        (
            getattr(module, a)
            for a in ("variance_epsilon", "eps", "epsilon")
            if isinstance(getattr(module, a, None), float)
        ),
        None,
    )
    if eps is None:
        raise ConfigError(f"{type(module).__name__} has no eps attribute fxgrow knows")
    with torch.no_grad():
        if torch.allclose(module(x), module(x + 3.0), atol=1e-4):
            return "layer", float(eps)  # subtracts the mean: LEMON's average expansion
        getattr(probe, weight).zero_()
        zero = probe(x)
    kind = "one_plus" if zero.abs().max() > 0 else "mul"
    return kind, float(eps)


def _eps_field(config: Any, eps: float) -> str | None:
    """The config field holding the norms' eps; None where none does (OPT builds its
    LayerNorms with torch's default eps): the stream is then scaled instead (see below)."""
    hits = [
        k for k, v in config.to_dict().items() if isinstance(v, float) and v == eps and "eps" in k
    ]
    if len(hits) > 1:
        raise ConfigError(
            f"several config fields hold the stream norms' eps {eps:g} "
            f"({', '.join(hits)}); grow the stream by a whole multiple"
        )
    return hits[0] if hits else None


def stream_norms(model, members: list) -> tuple[dict, str | None, int]:
    """The stream's norms ({weight: (module, leaf, kind, eps)}), the config field of their
    eps (None: no field holds it) and the stream's width; raises ConfigError where padding
    is not exact."""
    config = model.config
    params = dict(model.named_parameters(remove_duplicate=False))
    axes = [
        (m.target, m.axis, m.role) for m in members if m.kind == "parameter" and m.target in params
    ]
    old = {params[t].shape[a] for t, a, _ in axes}
    if len(old) != 1:
        raise ConfigError(f"the stream's axes have different sizes {sorted(old)}")
    C = old.pop()
    norms = {}
    for t, _a, role in axes:
        mod, _, leaf = t.rpartition(".")
        module = model.get_submodule(mod)
        weight = getattr(module, "weight", None)  # a norm: a per-channel weight (a bias of
        if (
            role not in ("produce", "consume")
            and isinstance(weight, torch.Tensor)
            and weight.dim() == 1
        ):  # a Linear writes the stream: zero-padded like its rows)
            norms[t] = (mod, leaf) + _norm_kind(module, "weight")
    kinds = {v[2] == "layer" for v in norms.values()}
    if len(kinds) > 1:
        raise ConfigError(
            "the stream has both LayerNorms and RMSNorms: neither zero padding "
            "nor the average expansion keeps both exact"
        )
    eps = {v[3] for v in norms.values()}
    if len(eps) != 1:
        raise ConfigError(f"the stream's norms have different eps {sorted(eps)}")
    eps_field = _eps_field(config, eps.pop())
    stream_modules = {v[0] for v in norms.values()}
    for name, m in (
        model.named_modules() if eps_field else ()
    ):  # every norm reading this eps is over the stream
        e = next(
            (
                getattr(m, a)
                for a in ("variance_epsilon", "eps")
                if isinstance(getattr(m, a, None), float)
            ),
            None,
        )
        if (
            e is not None
            and eps_field  # always: no modules are walked without it
            and e == getattr(config, eps_field)
            and name not in stream_modules
        ):
            raise ConfigError(
                f"{name} ({type(m).__name__}) uses {eps_field} too but does not normalise "
                f"the stream: a new {eps_field} would change it; grow the stream by a whole "
                f"multiple of {C}"
            )
    return norms, eps_field, C


def pad_graph(
    gm: torch.fx.GraphModule, teacher, members: list, new: int, *, seed: int = 0
) -> dict[str, Any]:
    """Pad the stream's tensors of ``gm`` (a student of ``teacher`` whose stream is still
    the teacher's width) to ``new`` channels in place, as described above; returns the
    config field that changes with it (the norms' eps).  The graph itself is not run again:
    its tensors go into the teacher's class (``student.to_pretrained``)."""
    params = dict(gm.named_parameters(remove_duplicate=False))
    norms, eps_field, C = stream_norms(teacher, members)
    if new <= C:
        raise ConfigError(f"the stream is {C} wide; fxgrow only grows (asked for {new})")
    mean = any(v[2] == "layer" for v in norms.values())
    grow = 1.0 if eps_field else math.sqrt(new / C)  # writers scaled: see the module doc
    axes = [
        (m.target, m.axis, m.role) for m in members if m.kind == "parameter" and m.target in params
    ]
    g = torch.Generator().manual_seed(seed)
    shrink = math.sqrt(C / new)
    by_target: dict[str, list] = {}
    for t, a, role in axes:
        by_target.setdefault(t, []).append((a, role))
    done: dict[int, torch.nn.Parameter] = {}
    for name, p in sorted(params.items(), key=lambda kv: kv[0] not in by_target):
        if id(p) in done:
            _set(gm, name, done[id(p)])
            continue
        t = p.detach()
        for a, role in by_target.get(name, []):
            pad_shape = list(t.shape)
            pad_shape[a] = new - C
            if name in norms and norms[name][1] != "weight":  # a LayerNorm's bias: the new
                extra = torch.zeros(pad_shape, dtype=t.dtype)  # channels' output is 0
            elif name in norms:
                shift = 1.0 if norms[name][2] == "one_plus" else 0.0
                t = ((t.double() + shift) * shrink - shift).to(t.dtype)
                extra = torch.full(pad_shape, float(t.double().mean()), dtype=t.dtype)
            elif role == "consume" and not _produces(name, by_target):
                std = float(t.double().std()) if t.numel() > 1 else 0.02
                extra = (torch.randn(pad_shape, generator=g, dtype=torch.float64) * std).to(t.dtype)
            elif mean:  # writes the stream: its new channels are the mean of the old ones
                t = (t.double() * grow).to(t.dtype) if grow != 1.0 else t
                extra = t.double().mean(dim=a, keepdim=True).expand(pad_shape).to(t.dtype)
            else:  # writes the stream (or is tied to what does): zero
                t = (t.double() * grow).to(t.dtype) if grow != 1.0 else t
                extra = torch.zeros(pad_shape, dtype=t.dtype)
            t = torch.cat([t, extra.to(t.device)], dim=a)
        if name in by_target:
            done[id(p)] = torch.nn.Parameter(t.contiguous(), requires_grad=p.requires_grad)
            _set(gm, name, done[id(p)])
    if grow != 1.0:  # a tied head reads the scaled table: its input gets the inverse
        _untie_scale(gm, list(by_target), grow)
        gm.recompile()
        return {}
    assert eps_field  # grow == 1.0 exactly when the config holds the norms' eps
    return {eps_field: getattr(teacher.config, eps_field) * C / new}


def _untie_scale(gm: torch.fx.GraphModule, tied: list[str], grow: float) -> None:
    """Every linear reading an embedding table of the stream (a tied output head) computes
    what it did before the table was scaled by ``grow``: ``1 / grow`` folded into its
    input."""
    from ..analysis.arguments import argument
    from .fold import _attr, _calls, _get, _readers, fold_scale

    for target in tied:
        readers = _readers(gm, target)
        if not any(_calls(r, "table_lookup") for r in readers):
            continue
        for r in readers:
            head = _attr(gm, argument(r, 1, "weight", None)) if _calls(r, "affine") else None
            if head is not None and _get(gm, head) is _get(gm, target):
                scale = torch.tensor(1.0 / grow, dtype=torch.float64)
                fold_scale(gm, argument(r, 0, "input"), scale)


def _set(gm: torch.nn.Module, name: str, value: torch.nn.Parameter) -> None:
    mod, _, leaf = name.rpartition(".")
    (gm.get_submodule(mod) if mod else gm).register_parameter(leaf, value)


def _produces(name: str, by_target: dict) -> bool:
    return any(role == "produce" for _, role in by_target.get(name, []))
