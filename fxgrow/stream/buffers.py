"""Reused memory for the weights of a layer-streamed run.

A streamed run reads every parameter once per call of its module and converts it to the run's
dtype.  Each tensor in fresh memory costs the kernel one page fault per 4 kB (twice: the
stored bytes, then the converted tensor), more than the read and the conversion themselves.
``Buffers`` keeps the released tensors by dtype and shape for the next call that needs the
same (a decoder's blocks repeat the same shapes), and one staging byte buffer for the stored
bytes.  Invariant: a tensor is reused only when nothing but the caller holds it or a view of
its memory (``alone``); anything the model kept (an output that is a view of a weight, a
cache) keeps its own memory."""

from __future__ import annotations

import sys

import torch

_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def alone(t: torch.Tensor, refs: int = 1) -> bool:
    """Whether the caller's ``refs`` references are all Python holds of ``t`` and no other
    tensor shares its memory."""
    # + this frame's argument and getrefcount's own
    if _USE_COUNT is None or sys.getrefcount(t) > refs + 2:
        return False
    # the tensor's own reference and the temporary storage object made to ask
    return _USE_COUNT(t.untyped_storage()._cdata) <= 2


class Buffers:
    """Free tensors by (dtype, shape), and a staging byte buffer."""

    def __init__(self) -> None:
        self._free: dict[tuple[torch.dtype, tuple[int, ...]], list[torch.Tensor]] = {}
        self._staging = torch.empty(0, dtype=torch.uint8)

    def staging(self, nbytes: int) -> torch.Tensor:
        """A contiguous uint8 tensor of ``nbytes`` (its contents are overwritten by the next
        call)."""
        if self._staging.numel() < nbytes:
            self._staging = torch.empty(0, dtype=torch.uint8)  # free before allocating
            self._staging = torch.empty(nbytes, dtype=torch.uint8)
        return self._staging[:nbytes]

    def take(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """A tensor of ``dtype`` and ``shape``, released earlier or new (contents arbitrary)."""
        free = self._free.get((dtype, tuple(shape)))
        return free.pop() if free else torch.empty(shape, dtype=dtype)

    def give(self, t: torch.Tensor) -> None:
        """Keep ``t`` for a later ``take``; the caller checked that it is ``alone``."""
        self._free.setdefault((t.dtype, tuple(t.shape)), []).append(t)

    def clear(self) -> None:
        """Drop every kept tensor and the staging buffer (their memory goes back)."""
        self._free.clear()
        self._staging = torch.empty(0, dtype=torch.uint8)
