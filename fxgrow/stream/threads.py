"""Intra-op threads for a layer-streamed run.

A run on a few tokens is bound by memory traffic (every weight is read once, for a product
with a few rows), not by arithmetic: threads beyond the cores that are free only wait for
each other at OpenMP barriers, spinning, and the CPU time they burn is taken from the run
itself on a loaded machine (measured on 2 shared cores at load average 11: the 1.1B
verification took 10.2 CPU seconds with 2 threads, 5.4 with 1).  Invariant: the thread count
changes what is computed in no way that matters here (teacher and student run with the same
count) and is restored afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def free_cores() -> int:
    """Cores not busy by the 1-minute load average (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = 0.0
    return max(1, int((cores or 1) - load + 0.5))


@contextlib.contextmanager
def streamed_threads() -> Iterator[int]:
    """torch's intra-op threads limited to the free cores for the block; yields the count."""
    before = torch.get_num_threads()
    n = max(1, min(before, free_cores()))
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)
