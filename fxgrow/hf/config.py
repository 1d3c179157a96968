"""The config of a grown Hugging Face model, found from tensor shapes (no per-model tables).

Invariant: ``infer_config(teacher, shapes)`` returns a config of the teacher's class whose
model has exactly ``shapes`` (every parameter and every buffer, persistent or not), or raises
:class:`ConfigError` naming the tensors no config can give and why (``unfit.py``: the config
class's own validation refuses the fields that give them, layers of one kind differ, or an
axis follows only fields that other tensors fix).

How: every integer field of the teacher's config is *probed* -- a model of the class is built
on the meta device with that field doubled (or, for a field left at ``None``, set to a marker
value) -- which gives each tensor axis's exponent in that field (size ~ prod field^e).  The
student's size ratios then form a linear system in log space whose least-squares solution,
rounded, is refined by trying each field at the ratios the shapes show, until every shape
matches.  Fields that change the set of tensors (``num_hidden_layers``) are matched by
counting.  Buffers such as rotary ``inv_freq`` pin the head dimension, which fxgrow never
changes; fields that no tensor shape depends on and that are defined by a quotient (GPT-2's
head count: ``hidden_size / num_attention_heads``) keep that quotient.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from . import unfit

if TYPE_CHECKING:  # transformers is imported when a Hugging Face model is grown
    from transformers import PreTrainedModel

Shapes = dict[str, tuple[int, ...]]

# per-layer lists HF keys on the layer index: they follow num_hidden_layers
LAYER_LISTS = ("layer_types",)


def _meta_model(cls: type[PreTrainedModel], config: Any) -> torch.nn.Module:
    from transformers.initialization import no_init_weights

    with torch.device("meta"), no_init_weights():
        return cls._from_config(config)


def tensor_shapes(model: torch.nn.Module) -> Shapes:
    """Every parameter and buffer (tied tensors under each of their names)."""
    out: Shapes = {}
    for name, t in model.named_parameters(remove_duplicate=False):
        out[name] = tuple(t.shape)
    for name, b in model.named_buffers(remove_duplicate=False):
        out[name] = tuple(b.shape)
    return out


@functools.lru_cache(maxsize=256)
def _shapes_cached(cls: type, key: str) -> tuple:
    import json

    config = _config_from(cls, json.loads(key))
    return tuple(sorted(tensor_shapes(_meta_model(cls, config)).items()))


def _config_from(cls: type[PreTrainedModel], d: dict) -> Any:
    config_class = cls.config_class
    if config_class is None:
        raise ConfigError(f"{cls.__name__} names no config class to build a config from")
    return config_class.from_dict(dict(d))


def _key(config: Any) -> str:
    import json

    d = config.to_dict()
    d.pop("transformers_version", None)
    return json.dumps(d, sort_keys=True, default=str)


def shapes_for(cls: type, config: Any) -> Shapes:
    """Shapes of every tensor of ``cls(config)``, from a model built on the meta device."""
    try:
        return dict(_shapes_cached(cls, _key(config)))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"{cls.__name__} cannot be built from the config "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e


def with_fields(config: Any, fields: Mapping[str, Any]) -> Any:
    """A copy of ``config`` with ``fields`` set; per-layer lists (``layer_types``) not set
    explicitly follow a changed layer count, repeating their pattern."""
    new = copy.deepcopy(config)
    fields = dict(fields)
    for name in LAYER_LISTS:
        v = getattr(config, name, None)
        if name in fields or not isinstance(v, (list, tuple)) or not v:
            continue
        for k, n in list(fields.items()):
            if (
                isinstance(n, int)
                and not isinstance(n, bool)
                and getattr(config, k, None) == len(v)
                and n != len(v)
                and "layer" in k
            ):
                fields[name] = [v[i % len(v)] for i in range(n)]
    if any(name in fields for name in LAYER_LISTS):  # set together: validators see both
        d = new.to_dict()
        d.update(fields)
        d.pop("transformers_version", None)
        try:
            return type(config).from_dict(d)
        except Exception:
            pass
    for k, v in fields.items():
        setattr(new, k, v)
    return new


def _head_dim(config: Any) -> dict[str, int]:
    """HF's convention for a head size the config leaves implicit (``hidden_size //
    num_attention_heads``): ``head_dim``, which many classes read when it is set."""
    if "head_dim" in config.to_dict() or hasattr(config, "head_dim"):
        return {}
    hidden, heads = (
        getattr(config, "hidden_size", None),
        getattr(config, "num_attention_heads", None),
    )
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads == 0:
        return {"head_dim": hidden // heads}
    return {}


def _int_fields(config: Any) -> dict[str, int | None]:
    skip = {
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "decoder_start_token_id",
        "sep_token_id",
        "cls_token_id",
        "chunk_size_feed_forward",
    }
    out: dict[str, int | None] = {}
    for k, v in config.to_dict().items():
        if k in skip or k.startswith("_") or isinstance(v, bool):
            continue
        if isinstance(v, int) and v > 0:
            out[k] = v
        elif v is None and not k.endswith(("_id", "_ids", "dtype")):
            out[k] = None
    out.update(_head_dim(config))
    return out


@dataclass(frozen=True)
class Probe:
    """How the tensors of a class depend on its config's integer fields."""

    base: Shapes
    exponents: dict[str, dict[tuple[str, int], float]]  # field -> {(tensor, axis): e}
    structural: tuple[str, ...]  # fields that change which tensors exist
    implicit: dict[str, int]  # a None field -> the size it stands for in the teacher
    follows: dict[str, str]  # field -> the field it must equal (OPT's word_embed_proj_dim)


def probe(cls: type, config: Any) -> Probe:
    """Measure how ``cls``'s tensor shapes follow each integer config field (by doubling it and
    building the model on the meta device): exponents per axis, structural fields, fields that
    stand for a size when None, and fields that must stay equal to another."""
    base = shapes_for(cls, config)
    exps: dict[str, dict[tuple[str, int], float]] = {}
    structural: list[str] = []
    implicit: dict[str, int] = {}
    marker = 4 * max((d for s in base.values() for d in s), default=1) + 28
    ints = {k: v for k, v in _int_fields(config).items() if v is not None}
    follows: dict[str, str] = {}
    for field, value in _int_fields(config).items():
        if field in follows:
            continue
        trial = marker if value is None else 2 * value
        try:
            shapes = shapes_for(cls, with_fields(config, {field: trial}))
        except Exception:  # not a size (a strict config field refuses an int)
            continue
        if set(shapes) != set(base):
            if value is None:
                continue
            partner = next(
                (
                    q
                    for q, w in ints.items()
                    if q != field
                    and w == value
                    and q not in follows
                    and _same_keys(cls, config, base, field, q)
                ),
                None,
            )
            if partner is None:
                structural.append(field)
                continue
            follows[partner] = field  # sizes equal in the teacher that must stay equal
            shapes = shapes_for(cls, with_fields(config, {field: trial, partner: trial}))
        changed = {
            (n, a): (shapes[n][a], base[n][a])
            for n in base
            for a in range(len(base[n]))
            if shapes[n][a] != base[n][a]
        }
        if not changed:
            continue
        if value is None:  # a field standing in for a size: the axes it sets are its value
            if any(new != marker for new, _ in changed.values()):
                continue
            olds = {old for _, old in changed.values()}
            if len(olds) != 1:
                continue
            implicit[field] = olds.pop()
            exps[field] = dict.fromkeys(changed, 1.0)
        else:
            exps[field] = {k: math.log2(new / old) for k, (new, old) in changed.items()}
    return Probe(base, exps, tuple(structural), implicit, follows)


def _same_keys(cls, config, base: Shapes, a: str, b: str) -> bool:
    try:
        v = 2 * getattr(config, a)
        return set(shapes_for(cls, with_fields(config, {a: v, b: v}))) == set(base)
    except Exception:
        return False


def solve_widths(cls: type, config: Any, want: Shapes) -> dict[str, int]:
    """The integer fields that make every (non-structural) tensor of ``cls`` the size in
    ``want``; raises ConfigError with the tensors that cannot be matched and the cause
    (the validator's reason where the config class refuses the least-squares fields)."""
    p = probe(cls, config)
    teacher = {
        f: (v if v is not None else p.implicit[f])
        for f, v in _int_fields(config).items()
        if f in p.exponents
    }
    fields = sorted(p.exponents)
    axes = sorted(
        {k for f in fields for k in p.exponents[f]}
        | {
            (n, a)
            for n in p.base
            if n in want
            for a in range(len(p.base[n]))
            if len(want[n]) == len(p.base[n]) and want[n][a] != p.base[n][a]
        }
    )
    for n in p.base:
        if n in want and len(want[n]) != len(p.base[n]):
            raise ConfigError(
                f"{n} has {len(want[n])} axes in the student and {len(p.base[n])} in {cls.__name__}"
            )
    rows, rhs = [], []
    for n, a in axes:
        if n not in want:
            continue
        rows.append([p.exponents[f].get((n, a), 0.0) for f in fields])
        rhs.append(math.log2(want[n][a] / p.base[n][a]))
    values = dict(teacher)
    if rows and fields:
        A = torch.tensor(rows, dtype=torch.float64)
        b = torch.tensor(rhs, dtype=torch.float64).unsqueeze(1)
        x = torch.linalg.lstsq(A, b, driver="gelsd").solution.squeeze(1).tolist()
        values = {f: max(1, round(teacher[f] * 2**xi)) for f, xi in zip(fields, x)}
    exact = dict(values)  # the least-squares fields, before refinement skips refused configs

    def score(vals: dict[str, int]) -> int:
        try:
            got = shapes_for(cls, with_fields(config, vals))
        except ConfigError:
            return 10**9
        return sum(got.get(n) != want.get(n) for n in want if n in p.base) + len(
            set(got) - set(want)
        )

    best = score(values)
    for f in p.structural:  # a size field that adds tensors when it differs from another
        v = getattr(config, f, None)  # (OPT's word_embed_proj_dim) follows that field
        for q in fields:
            if v == teacher[q] and values[q] != v:
                trial = dict(values, **{f: values[q]})
                s = score(trial)
                if s < best:
                    best, values = s, trial
                    teacher.setdefault(f, v)
    ratios = sorted({want[n][a] / p.base[n][a] for n, a in axes if n in want} | {1.0})
    for _ in range(3):  # refine: each field at the ratios the shapes show
        if best == 0:
            break
        improved = False
        for f in fields:
            for r in ratios:
                v = teacher[f] * r
                if abs(v - round(v)) > 1e-9 or round(v) == values[f]:
                    continue
                trial = dict(values, **{f: round(v)})
                s = score(trial)
                if s < best:
                    best, values, improved = s, trial, True
        if not improved:
            break
    for f, leader in p.follows.items():
        if leader in values:
            values[f] = values[leader]
            teacher.setdefault(f, getattr(config, f))
    changed = {f: v for f, v in values.items() if v != teacher[f]}
    for f, v in _head_dim(config).items():  # an implicit head size the new quotient misses:
        if f in values and _head_dim(with_fields(config, changed)).get(f) != values[f]:
            amap = getattr(config, "attribute_map", {}) or {}
            hidden, heads = (amap.get(k, k) for k in ("hidden_size", "num_attention_heads"))
            h = changed.get(hidden, getattr(config, hidden))
            # more heads of the teacher's size first: a partial rotary size (GPT-NeoX's
            # head_dim // 4) leaves other head sizes with the same shapes
            for size in dict.fromkeys((v, values[f])):
                alt = dict(changed, **{heads: h // size})  # more heads of the same size
                alt.pop(f, None)
                if h % size == 0 and score(dict(values, **alt, **{f: v})) == 0:
                    changed = {
                        k: w
                        for k, w in alt.items()
                        if w != teacher.get(k, getattr(config, k, None))
                    }
                    break
            else:  # more heads of the teacher's size, said explicitly (attention narrower
                n = values.get(heads, getattr(config, heads)) * values[f]  # than the stream)
                kept = {heads: n // v, f: v}
                if n % v == 0 and score({**values, **changed, **kept}) == 0:
                    changed = dict(changed, **kept)
                else:  # or the head size said explicitly
                    changed[f] = values[f]
    got = shapes_for(cls, with_fields(config, changed))
    bad = unfit.mismatches(got, want)
    if bad:
        exact = {f: v for f, v in exact.items() if v != teacher[f]}
        reason = unfit.refusal(cls, config, exact, want)
        if reason is not None:
            raise unfit.refused(cls, exact, reason, changed)
        axis = next(
            (
                (n, a)
                for n in sorted(want)
                if n in got and len(got[n]) == len(want[n])
                for a in range(len(want[n]))
                if got[n][a] != want[n][a]
            ),
            None,
        )
        if axis is None:  # only ranks differ: no axis to name the fields of
            raise unfit.mismatch(cls, changed, bad, want, None)
        n, a = axis
        final = dict(teacher, **changed)
        deps = [(f, final[f]) for f in fields if (n, a) in p.exponents[f] and f in final]
        raise unfit.mismatch(cls, changed, bad, want, (n, a, deps))
    return changed


def keep_quotients(config: Any, changed: dict[str, int], probed: set[str]) -> dict[str, int]:
    """Fields no tensor shape depends on but that define a size by a quotient keep it: the
    head count of a model whose head size is ``hidden_size // num_attention_heads``."""
    out = dict(changed)
    amap = getattr(config, "attribute_map", {}) or {}
    hidden, heads = (amap.get(k, k) for k in ("hidden_size", "num_attention_heads"))
    if (
        hidden in out
        and heads not in out
        and heads not in probed
        and getattr(config, "head_dim", None) is None
    ):
        old_h, n = getattr(config, hidden), getattr(config, heads, None)
        if isinstance(n, int) and n > 0 and old_h % n == 0 and out[hidden] % (old_h // n) == 0:
            out[heads] = out[hidden] // (old_h // n)
    return out


def follow(cls: type, config: Any, field: str, value: int) -> dict[str, int]:
    """Fields that must equal ``field`` (probed together), at ``value``."""
    p = probe(cls, config)
    return {f: value for f, leader in p.follows.items() if field in (leader, f)} | {
        leader: value for f, leader in p.follows.items() if f == field
    }
