"""Why no config of a class gives a student's shapes: the text of the solver's ConfigError.

Invariant: the error names the tensors that no config matches and one cause, told apart by
what the shapes show (never by a per-model table):

* refused: the fields that give every shape build the model, but the config class's own
  validation refuses them (LlamaConfig wants ``hidden_size`` a multiple of
  ``num_attention_heads`` even with ``head_dim`` set); its reason is quoted;
* uneven: layers of one kind differ in the student, and a config holds one size per kind;
* tied: a mismatched axis is sized only by fields that the student's other tensors fix (GPT-2
  and ViT size attention by ``hidden_size``: no field sets heads x head size apart).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

Shapes = Mapping[str, tuple[int, ...]]

_LAYER = re.compile(r"\.\d+\.")


def innermost(e: BaseException) -> str:
    """The message of the deepest cause of ``e`` (a validator's own words), first line."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip()
    return text.splitlines()[0].rstrip(".") if text else type(e).__name__


def mismatches(got: Shapes, want: Shapes) -> list[str]:
    """'name is [want], the config gives [got]' for each tensor both have at other shapes."""
    return [
        f"{n} is {list(want[n])}, the config gives {list(got[n])}"
        for n in sorted(set(got) & set(want))
        if got[n] != want[n]
    ]


def refusal(cls: type, config: Any, fields: Mapping[str, int], want: Shapes) -> str | None:
    """The config class's reason for refusing ``fields`` when, built without its validation,
    they give every shape in ``want``; None where they build, or miss a shape."""
    from . import config as cfg

    trial = cfg.with_fields(config, fields)  # set field by field: no validator runs
    try:
        cfg.shapes_for(cls, trial)
        return None
    except ConfigError as e:
        reason = innermost(e)
    try:
        got = cfg.tensor_shapes(cfg._meta_model(cls, trial))
    except Exception:  # not buildable at all: no shapes to compare
        return None
    return None if mismatches(got, want) else reason


def _fields_txt(fields: Mapping[str, int]) -> str:
    return ", ".join(f"{f}={v}" for f, v in fields.items())


def refused(cls: type, exact: Mapping[str, int], reason: str, nearest: Mapping[str, int]):
    """The error for fields that give every shape but that the config class refuses."""
    config_class = getattr(cls, "config_class", None)
    name = getattr(config_class, "__name__", "its config class")
    near = (
        f", e.g. the nearest it holds: grow(to_config={dict(nearest)!r})"
        if nearest and dict(nearest) != dict(exact)
        else ""
    )
    return ConfigError(
        f"no config of {cls.__name__} that {name} accepts gives the student's shapes: "
        f"{_fields_txt(exact)} give them all, and {name} refuses that ({reason}). "
        f"Keep the graph (as_graph=True), or grow to a config the class holds{near}"
    )


def mismatch(
    cls: type,
    nearest: Mapping[str, int],
    bad: list[str],
    want: Shapes,
    tied: tuple[str, int, list[tuple[str, int]]] | None,
):
    """The error for shapes no config gives: ``bad`` (the mismatches), then the cause --
    layers of one kind grown unevenly, or ``tied`` = (tensor, axis, [(field, value)]): an
    axis sized only by fields the student's other tensors fix."""
    near = _fields_txt(nearest) or "the teacher's config"
    text = (
        f"no config of {cls.__name__} gives the student's shapes (nearest: {near}): "
        + "; ".join(bad[:4])
        + (f"; and {len(bad) - 4} more" if len(bad) > 4 else "")
    )
    names = [m.split(" ", 1)[0] for m in bad]
    if any(uneven(n, want) for n in names):
        text += (
            ". A config holds one size per kind of layer: widen every layer's group alike "
            "(e.g. --width 'model.layers.*.mlp.up_proj=N')"
        )
    elif tied is not None:
        n, a, deps = tied
        by = " and ".join(f"{f} ({v})" for f, v in deps) if deps else "no config field"
        text += (
            f". In {cls.__name__} axis {a} of {n} follows only {by}, which the student's "
            f"other tensors fix: no field sizes it apart"
        )
    return ConfigError(text + ". Keep the graph (as_graph=True)")


def uneven(name: str, want: Shapes) -> bool:
    """Whether the tensors of ``name``'s kind (the same name but for layer indices) have
    different shapes in ``want``."""
    kind = _LAYER.sub(".*.", name)
    if kind == name:
        return False
    return len({s for n, s in want.items() if _LAYER.sub(".*.", n) == kind}) > 1
