"""Front ends: turn a model into a graph fxgrow can analyse."""

from .export import export  # noqa: F401
from .tracer import LeafTracer, trace  # noqa: F401
