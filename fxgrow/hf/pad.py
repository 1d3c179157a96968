"""Growing an RMSNorm residual stream by any width: zero padding, norms compensated.

Invariant: ``pad_stream(model, members, new)`` returns a model of ``model``'s class whose
stream (the channel group ``members``) is ``new`` wide and which computes what ``model``
computes, or raises :class:`ConfigError` saying why this stream cannot be padded.

The maths: the new channels of the stream are zero everywhere (every writer's new rows,
the embedding's new columns), so every RMSNorm over the stream sees the same sum of squares
S over C' > C channels: ``x / sqrt(S / C' + eps')``.  With ``eps' = eps C / C'`` that is
``sqrt(C' / C) x / sqrt(S / C + eps)``, so the norm's weight times ``sqrt(C / C')`` gives the
teacher's values (``(1 + w)`` likewise for Gemma's form).  Readers' new columns read zeros:
they get small random values so the new channels learn.  A norm that subtracts the mean
(LayerNorm) is refused: zero channels change its mean.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError
from . import config as cfg


def _norm_kind(module: torch.nn.Module, weight: str) -> tuple[str, float]:
    """("mul" | "one_plus", eps) of an RMS norm module; raises for mean-subtracting norms."""
    import copy
    w = getattr(module, weight)
    n = w.shape[0]
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(0)).to(w.dtype)
    probe = copy.deepcopy(module)
    eps = next((getattr(module, a) for a in ("variance_epsilon", "eps", "epsilon")
                if isinstance(getattr(module, a, None), float)), None)
    if eps is None:
        raise ConfigError(f"{type(module).__name__} has no eps attribute fxgrow knows")
    with torch.no_grad():
        if getattr(module, "bias", None) is not None or \
                torch.allclose(module(x), module(x + 3.0), atol=1e-4):
            raise ConfigError(
                f"{type(module).__name__} subtracts the mean (a LayerNorm): zero channels "
                f"would change it; grow this stream by a whole multiple (the nearest exact "
                f"widths are multiples of {n})")
        getattr(probe, weight).zero_()
        zero = probe(x)
    kind = "one_plus" if zero.abs().max() > 0 else "mul"
    return kind, float(eps)


def _eps_field(config: Any, eps: float) -> str:
    hits = [k for k, v in config.to_dict().items() if isinstance(v, float) and v == eps
            and "eps" in k]
    if len(hits) != 1:
        raise ConfigError(f"no single config field holds the norms' eps {eps:g}")
    return hits[0]


def stream_norms(model, members: list) -> tuple[dict, str, int]:
    """The stream's RMS norms ({weight: (module, leaf, kind, eps)}), the config field of
    their eps and the stream's width; raises ConfigError where zero padding is not exact."""
    config = model.config
    params = dict(model.named_parameters(remove_duplicate=False))
    axes = [(m.target, m.axis, m.role) for m in members
            if m.kind == "parameter" and m.target in params]
    old = {params[t].shape[a] for t, a, _ in axes}
    if len(old) != 1:
        raise ConfigError(f"the stream's axes have different sizes {sorted(old)}")
    C = old.pop()
    norms = {}
    for t, a, role in axes:
        mod, _, leaf = t.rpartition(".")
        module = model.get_submodule(mod)
        weight = getattr(module, "weight", None)  # a norm: a per-channel weight (a bias of
        if role not in ("produce", "consume") and isinstance(weight, torch.Tensor) and \
                weight.dim() == 1:  # a Linear writes the stream: zero-padded like its rows)
            norms[t] = (mod, leaf) + _norm_kind(module, leaf)
    eps = {v[3] for v in norms.values()}
    if len(eps) != 1:
        raise ConfigError(f"the stream's norms have different eps {sorted(eps)}")
    eps_field = _eps_field(config, eps.pop())
    stream_modules = {v[0] for v in norms.values()}
    for name, m in model.named_modules():  # every norm reading this eps is over the stream
        e = next((getattr(m, a) for a in ("variance_epsilon", "eps")
                  if isinstance(getattr(m, a, None), float)), None)
        if e is not None and e == getattr(config, eps_field) and name not in stream_modules:
            raise ConfigError(
                f"{name} ({type(m).__name__}) uses {eps_field} too but does not normalise "
                f"the stream: a new {eps_field} would change it; grow the stream by a whole "
                f"multiple of {C}")
    return norms, eps_field, C


def pad_stream(model, members: list, new: int, *, seed: int = 0):
    """``model`` with its residual stream zero-padded to ``new`` channels (see above)."""
    from transformers.initialization import no_init_weights
    config, cls = model.config, type(model)
    params = dict(model.named_parameters(remove_duplicate=False))
    axes = [(m.target, m.axis, m.role) for m in members
            if m.kind == "parameter" and m.target in params]
    norms, eps_field, C = stream_norms(model, members)
    if new <= C:
        raise ConfigError(f"the stream is {C} wide; fxgrow only grows (asked for {new})")
    hidden = config.attribute_map.get("hidden_size", "hidden_size")
    fields = {hidden: new, eps_field: getattr(config, eps_field) * C / new}
    fields.update(cfg.follow(cls, config, hidden, new))
    new_config = cfg.with_fields(config, fields)
    g = torch.Generator().manual_seed(seed)
    state = {}
    shrink = math.sqrt(C / new)
    seen: dict[int, torch.Tensor] = {}
    by_target: dict[str, list] = {}
    for t, a, role in axes:
        by_target.setdefault(t, []).append((a, role))
    for name, p in params.items():
        if id(p) in seen:
            state[name] = seen[id(p)]
            continue
        t = p.detach()
        for a, role in by_target.get(name, []):
            pad_shape = list(t.shape)
            pad_shape[a] = new - C
            if name in norms:
                kind = norms[name][2]
                shift = 1.0 if kind == "one_plus" else 0.0
                t = ((t.double() + shift) * shrink - shift).to(t.dtype)
                extra = torch.full(pad_shape, float(t.double().mean()), dtype=t.dtype)
            elif role == "consume" and not _produces(name, by_target):
                std = float(t.double().std()) if t.numel() > 1 else 0.02
                extra = (torch.randn(pad_shape, generator=g, dtype=torch.float64) * std
                         ).to(t.dtype)
            else:  # writes the stream (or is tied to what does): zero
                extra = torch.zeros(pad_shape, dtype=t.dtype)
            t = torch.cat([t, extra.to(t.device)], dim=a)
        seen[id(p)] = state[name] = t
    for name, b in model.named_buffers():
        state.setdefault(name, b)
    with no_init_weights():
        grown = cls._from_config(new_config, dtype=next(iter(params.values())).dtype)
    wanted = grown.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ConfigError(f"padding the stream leaves {missing[:3]} of {cls.__name__} unset")
    _compensate_constants(model, grown, state, norms)
    try:
        grown.load_state_dict({k: state[k] for k in wanted}, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"{cls.__name__} with {fields} does not hold the padded stream "
                          f"({str(e).splitlines()[-1].strip()}): its head size follows "
                          f"hidden_size; grow the stream by a whole multiple") from e
    if getattr(new_config, "tie_word_embeddings", False):
        grown.tie_weights()
    grown.train(model.training)
    grown.fxgrow_fields = dict(getattr(model, "fxgrow_fields", {}), **fields)
    return grown


def _produces(name: str, by_target: dict) -> bool:
    return any(role == "produce" for _, role in by_target.get(name, []))


def _compensate_constants(model, grown, state: dict, norms: dict) -> None:
    """A scalar buffer multiplying the input embedding that HF derives from the config
    (Gemma's ``sqrt(hidden_size)``): the table takes ``old / new``; when the output head
    shares the table, the final norm (the stream norm outside the numbered layers) takes
    ``new / old``."""
    emb = model.get_input_embeddings()
    emb_name = next(n for n, m in model.named_modules() if m is emb)
    new_bufs = dict(grown.named_buffers())
    persistent = set(grown.state_dict())
    for name, old in model.named_buffers():
        new = new_bufs.get(name)
        if name in persistent or new is None or old.numel() != 1 or torch.equal(old, new):
            continue
        if not name.startswith(emb_name + "."):
            raise ConfigError(f"{name} changes with the config ({float(old):g} -> "
                              f"{float(new):g}) and fxgrow cannot compensate it here")
        r = float(old.double() / new.double())
        w = f"{emb_name}.weight"
        state[w] = (state[w].double() * r).to(state[w].dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight is emb.weight:
            finals = [t for t, v in norms.items() if not any(p.isdigit() for p in
                                                             v[0].split("."))]
            if len(finals) != 1:
                raise ConfigError("cannot tell the final norm that feeds the tied head")
            t = finals[0]
            shift = 1.0 if norms[t][2] == "one_plus" else 0.0
            state[t] = ((state[t].double() + shift) / r - shift).to(state[t].dtype)
            for k, v in list(state.items()):  # the head's alias of the table
                if k != w and v is not state[w] and k.endswith("weight") and \
                        out is dict(model.named_modules()).get(k.rpartition(".")[0]):
                    state[k] = state[w]
