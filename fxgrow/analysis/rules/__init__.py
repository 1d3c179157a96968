"""Every op rule fxgrow knows; importing this package registers them."""
from . import (aten, attention, conv, elementwise, linear, norm, pool, reduce, shape,  # noqa: F401
               timm_layers, vision)
from .registry import all_rules, lookup, rule  # noqa: F401
