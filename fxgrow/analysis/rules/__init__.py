"""Every op rule fxgrow knows; importing this package registers them (the rules for timm's
and torchvision's own layers and functions once those libraries are imported: see
``registry.DEFERRED``)."""

from . import (  # noqa: F401
    activations,
    assign,
    aten,
    attention,
    axes,
    binary,
    blockers,
    comparisons,
    conv,
    dropout,
    elementwise,
    gather,
    guard,
    indexing,
    join,
    linear,
    norm,
    pool,
    recurrent,
    reduce,
    shape,
    shuffle,
    window,
)
from .registry import all_rules, lookup, rule  # noqa: F401
