"""Front ends: turn a model into a graph fxgrow can analyse."""
from .tracer import LeafTracer, trace  # noqa: F401
