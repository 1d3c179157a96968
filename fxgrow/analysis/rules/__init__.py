"""Every op rule fxgrow knows; importing this package registers them (the rules for timm's
and torchvision's own layers and functions once those libraries are imported: see
``registry.DEFERRED``)."""
from . import (aten, attention, conv, elementwise, linear, norm, pool, reduce, shape,  # noqa: F401
               window)
from .registry import all_rules, lookup, rule  # noqa: F401
