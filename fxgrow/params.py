"""Parameter counts, as reported to the user."""

from __future__ import annotations

import torch


def count_parameters(model: torch.nn.Module) -> int:
    """Elements of the model's parameters, a tensor shared by several modules (tied
    embeddings) counted once: ``Module.parameters`` yields each tensor once."""
    return sum(p.numel() for p in model.parameters())
