"""Classes of optional libraries, recognised without importing those libraries.

An object can only be an instance of a class whose module is already imported, so
``instance_of(x, "accelerate.optimizer", "AcceleratedOptimizer")`` looks in ``sys.modules``
and never imports anything: no name matching, no import cost for users without the library."""

from __future__ import annotations

import sys


def instance_of(obj: object, module: str, name: str) -> bool:
    """Whether ``obj`` is an instance of ``module.name`` (False when ``module`` is not
    imported, or does not define ``name``)."""
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return isinstance(cls, type) and isinstance(obj, cls)
