"""Every op rule fxgrow knows; importing this package registers them."""
from . import conv, elementwise, linear, norm, pool, reduce, shape, vision  # noqa: F401
from .registry import all_rules, lookup, rule  # noqa: F401
