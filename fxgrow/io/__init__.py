"""Saving and loading grown models: one ``.safetensors`` file, no pickle.

``saving`` writes a GraphModule's tensors and its graph as JSON metadata; ``loading`` reads
them back treating the file as untrusted input (``codec`` for values, ``records`` for modules,
``graph_loading`` for the graph, ``trust`` and ``allowlist`` for the allowlist of names,
``header`` for what a file declares)."""

from __future__ import annotations

from .header import example_inputs, info, input_spec
from .loading import load
from .saving import fingerprint, save

__all__ = ["example_inputs", "fingerprint", "info", "input_spec", "load", "save"]
