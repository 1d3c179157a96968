"""What the analysis knows about each fx node's value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .layout import Layout


@dataclass(frozen=True)
class TensorInfo:
    """A tensor: its shape and one layout per axis (``len(layouts) == len(shape)``)."""

    shape: tuple[int, ...]
    layouts: tuple[Layout, ...]

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return len(self.shape)

    def dim(self, d: int) -> int:
        """Normalise a possibly negative axis index."""
        if not -self.ndim <= d < max(self.ndim, 1):
            raise IndexError(d)
        return d % self.ndim if self.ndim else 0


@dataclass(frozen=True)
class SizeInfo:
    """An int (or a tuple of ints, ``torch.Size``) read from tensor shapes at run time.

    ``layouts`` are the axes it was read from (or derived from): if a channel axis is among
    them, the value changes when that channel group grows."""

    layouts: tuple[Layout, ...]
    per_axis: bool = False  # True for a whole ``x.size()`` / ``x.shape``: one layout per axis


@dataclass(frozen=True)
class ParamRef:
    """A parameter/buffer used directly by a get_attr node: (qualified name, tensor)."""

    target: str


Value = Any  # TensorInfo | SizeInfo | tuple/list of values | python constant | None


TENSOR_METADATA = frozenset(
    (
        "dtype",
        "device",
        "ndim",
        "is_cuda",
        "requires_grad",
        "layout",
        "is_sparse",
        "is_quantized",
        "is_meta",
    )
)
"""Tensor attributes that describe it without its values or sizes (``x.shape`` aside)."""
