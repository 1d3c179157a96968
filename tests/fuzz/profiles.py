"""Hypothesis settings for the fuzzer: ``ci`` (tests/test_fuzz.py) and ``nightly`` (tools/fuzz.py).

Both are derandomized (the same examples every run, no example database), with no deadline
(the first example pays for imports)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

CI = settings(max_examples=60, derandomize=True, **_COMMON)
NIGHTLY = settings(max_examples=1000, derandomize=True, **_COMMON)

CI_STEPS, NIGHTLY_STEPS = 10, 12
DTYPES = ("float64", "float64", "float32")  # float64 compares tightly; float32 as users run it

settings.register_profile("fxgrow-ci", CI)
settings.register_profile("fxgrow-nightly", NIGHTLY)


@pytest.fixture(autouse=True)
def one_thread():
    """Run each test on one torch thread (imported by the fuzz, bad-input and matrix tests).
    The models are tiny, and on a machine whose cores are busy, OpenMP threads waiting for
    each other make every small op many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
