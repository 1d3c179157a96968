"""Kernel growth (Network Morphism, Wei et al. 2016): a k x k convolution becomes k' x k'.

The kernel is zero-padded by a = (k' - k) / 2 on each side of every spatial axis and the
padding grows by a * dilation.  Output position o then reads input position
``o*s - (P + a d) + (i + a) d = o*s - P + i d`` for the old taps i and zero elsewhere, and the
output size ``(H + 2P' - d(k' - 1) - 1) // s + 1`` is unchanged: exact for every stride and
dilation, also for transposed convolutions (input i writes ``i*s - P + j d`` alike).  Padding
modes "reflect", "replicate" and "circular" are exact too: a padded position's value depends
only on its coordinate, not on how wide the padding is, and the new taps are zero (reflect
needs the new padding to stay below the input size; the check on the example inputs says so).
Refused: an odd growth (3 -> 4: the padding would have to be asymmetric and would shift the
output grid), shrinking, and modules that are not ``nn.Conv*d`` / ``nn.ConvTranspose*d``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from ..errors import KernelError
from ..suggest import did_you_mean


def _sizes(name: str, conv: nn.modules.conv._ConvNd, size: Any) -> tuple[int, ...]:
    old = tuple(conv.kernel_size)
    new = (
        (size,) * len(old)
        if isinstance(size, int) and not isinstance(size, bool)
        else tuple(size)
        if isinstance(size, (tuple, list))
        else None
    )
    if (
        new is None
        or len(new) != len(old)
        or any(isinstance(v, bool) or not isinstance(v, int) for v in new)
    ):
        raise KernelError(
            f"kernel size for {name!r} must be an int or {len(old)} ints, got {size!r}"
        )
    for o, n in zip(old, new):
        if n < o:
            raise KernelError(f"{name!r} has kernel {old}; fxgrow only grows kernels (got {new})")
        if (n - o) % 2:
            raise KernelError(
                f"{name!r}: kernel {old} -> {new} grows an axis by an odd number ({n - o}); "
                f"the zero taps would have to sit on one side and shift the output grid. Grow "
                f"by an even number (e.g. {tuple(v + 2 for v in old)})"
            )
    return new


def grow_conv(conv: nn.modules.conv._ConvNd, new: tuple[int, ...]) -> None:
    """Zero-pad ``conv``'s kernel to ``new`` in place and widen its padding to match."""
    old = tuple(conv.kernel_size)
    pads = [(n - o) // 2 for o, n in zip(old, new)]
    w = conv.weight.detach()
    grown = w.new_zeros(tuple(w.shape[:2]) + tuple(new))
    grown[(slice(None), slice(None)) + tuple(slice(a, a + o) for a, o in zip(pads, old))] = w
    conv.weight = nn.Parameter(grown, requires_grad=conv.weight.requires_grad)
    conv.kernel_size = tuple(new)
    if isinstance(conv.padding, str):  # 'same' stays 'same'; 'valid' becomes explicit
        if conv.padding == "valid":
            conv.padding = tuple(a * d for a, d in zip(pads, conv.dilation))
    else:
        conv.padding = tuple(p + a * d for p, a, d in zip(conv.padding, pads, conv.dilation))
    if hasattr(conv, "_reversed_padding_repeated_twice") and not isinstance(conv.padding, str):
        conv._reversed_padding_repeated_twice = [
            p for p in reversed(conv.padding) for _ in range(2)
        ]
    elif isinstance(conv.padding, str) and conv.padding == "same":  # as _ConvNd computes it
        twice = [0, 0] * len(new)
        for d, k, i in zip(conv.dilation, new, range(len(new) - 1, -1, -1)):
            total = d * (k - 1)
            twice[2 * i], twice[2 * i + 1] = total // 2, total - total // 2
        conv._reversed_padding_repeated_twice = twice


def grow_kernel(
    model: nn.Module, example_inputs: Any, sizes: Mapping[str, Any], *, verify: bool = True
) -> nn.Module:
    """A copy of ``model`` whose named convolutions ({module name: new kernel size}) have
    larger kernels and compute the same function (checked on ``example_inputs`` by default).
    The copy keeps the model's class; the teacher is not modified."""
    from ..analysis import as_tuple
    from ..verify import verify as _verify

    if not isinstance(sizes, Mapping) or not sizes:
        raise KernelError(
            "sizes must map a convolution's module name to its new kernel "
            "size, e.g. {'layer1.0.conv1': 5}"
        )
    modules = dict(model.named_modules())
    student = copy.deepcopy(model)
    for name, size in sizes.items():
        conv = modules.get(name)
        if conv is None:
            convs = [n for n, m in modules.items() if isinstance(m, nn.modules.conv._ConvNd)]
            raise KernelError(f"no module named {name!r}{did_you_mean(name, convs)}")
        if not isinstance(conv, nn.modules.conv._ConvNd):
            raise KernelError(
                f"{name!r} is a {type(conv).__name__}, not a convolution "
                f"(nn.Conv1d/2d/3d or nn.ConvTranspose1d/2d/3d)"
            )
        target = student.get_submodule(name)
        assert isinstance(target, nn.modules.conv._ConvNd)  # a copy of ``conv``
        grow_conv(target, _sizes(name, conv, size))
    if verify:
        _verify(model, student, as_tuple(example_inputs))
    return student
