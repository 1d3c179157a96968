"""The student's module tree: ``widen.apply`` copies it with ``_copy``, which must give what
``copy.deepcopy`` gives (same structure, sharing, attributes, hooks, tensors), and the student
must own every one of its tensors (the teacher is only read).  ``_copy`` is kept for speed:
``tools/bench_copy.py`` measures it against ``copy.deepcopy``."""

from __future__ import annotations

import copy
import types
from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn
from helpers import TiedLM, teacher_unchanged

import fxgrow
from fxgrow.rewrite.widen import _copy


def _hook(module, args, output):
    return output


def _pre_hook(module, args):
    return None


class _Holder:  # a plain object attribute: deepcopy's generic route
    def __init__(self, value) -> None:
        self.value = value


class Odd(nn.Module):
    """A module with the things a module tree can hold besides parameters."""

    def __init__(self, shared: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.shared_a = shared
        self.shared_b = shared  # one module at two paths
        self.register_buffer("stat", torch.arange(4.0))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.config = {"width": 4, "names": ["a", "b"], "nested": (1, [2, 3])}
        self.tensors = [torch.ones(3), self.stat]  # a list holding a buffer (shared)
        self.holder = _Holder(self.conv.weight)  # an object holding a parameter (shared)
        self.alias = self.conv  # a module referenced as a plain attribute as well
        self.flag, self.ratio, self.label = True, 0.5, "odd"
        self.conv.register_forward_hook(_hook)
        self.register_forward_pre_hook(_pre_hook)


def _walk(x: Any, seen: dict[int, int], out: list) -> None:
    """A canonical description of an object graph: types, atoms, tensor contents, and which
    objects are the same object (numbered in order of first visit)."""
    if type(x) in (type(None), int, float, bool, str, complex):
        out.append(repr(x))
        return
    if isinstance(x, (types.FunctionType, types.BuiltinFunctionType, type)):
        out.append(f"fn:{getattr(x, '__qualname__', x)}")
        return
    if id(x) in seen:
        out.append(f"@{seen[id(x)]}")
        return
    seen[id(x)] = len(seen)
    out.append(f"<{type(x).__qualname__}")
    if isinstance(x, torch.Tensor):
        out.append(
            f"{x.dtype}{tuple(x.shape)}{x.stride()}{x.storage_offset()}"
            f"{x.requires_grad}{x.detach().flatten().tolist()}"
        )
        _walk(x.grad, seen, out)
        _walk(x.untyped_storage().data_ptr() in _walk.ptrs, seen, out)
    elif isinstance(x, (dict, OrderedDict)):
        for k, v in x.items():
            out.append(repr(k))
            _walk(v, seen, out)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _walk(v, seen, out)
    elif isinstance(x, (set, frozenset)):
        out.append(repr(sorted(x)))
    elif hasattr(x, "__dict__"):
        for k, v in sorted(vars(x).items()):
            out.append(k)
            _walk(v, seen, out)
    else:
        out.append(repr(x))
    out.append(">")


def _describe(x: Any, teacher_ptrs: set[int]) -> list:
    _walk.ptrs = teacher_ptrs  # whether a tensor's storage is the teacher's
    out: list = []
    _walk(x, {}, out)
    return out


def _ptrs(m: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in [*m.parameters(), *m.buffers()]}


def test_copy_gives_what_deepcopy_gives():
    torch.manual_seed(0)
    shared = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    model = nn.Sequential(Odd(shared), nn.BatchNorm2d(4), shared)
    model[0].conv.weight.grad = torch.ones_like(model[0].conv.weight)
    ptrs = _ptrs(model)
    expected = copy.deepcopy(model, {})
    got = _copy(model, {})
    assert _describe(got, ptrs) == _describe(expected, ptrs)
    assert not _ptrs(got) & ptrs  # every tensor of the copy is new
    got[0].register_forward_hook(_hook)  # hooks are the copy's own
    assert len(model[0]._forward_hooks) == 0


def test_copy_fills_the_memo_like_deepcopy():
    """Tensors found in the memo are used as they are, and shared objects stay shared."""
    torch.manual_seed(0)
    model = Odd(nn.Linear(2, 2))
    new_weight = nn.Parameter(torch.randn(4, 3, 3, 3))
    memo_a: dict = {id(model.conv.weight): new_weight}
    memo_b: dict = {id(model.conv.weight): new_weight}
    expected = copy.deepcopy(model, memo_a)
    got = _copy(model, memo_b)
    assert got.conv.weight is new_weight and got.holder.value is new_weight
    assert got.shared_a is got.shared_b and got.alias is got.conv
    assert _describe(got, set()) == _describe(expected, set())


def test_student_owns_every_tensor():
    """No student parameter or buffer shares storage with the teacher, the teacher is not
    changed, and tensors the plan leaves alone are copies too."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1), nn.BatchNorm2d(5)
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    with teacher_unchanged(model):
        student = fxgrow.widen(model, x, factor=2)
    teacher = _ptrs(model)
    for name, t in [*student.named_parameters(), *student.named_buffers()]:
        assert t.untyped_storage().data_ptr() not in teacher, name
    assert student.get_parameter("3.weight").shape == (5, 16, 1, 1)
    assert student.get_parameter("4.weight").shape == (5,)  # not widened, still a new tensor


def test_student_of_tied_model_keeps_ties_and_owns_tensors():
    torch.manual_seed(0)
    model = TiedLM().eval()
    ids = torch.randint(0, 10, (2, 5))
    with teacher_unchanged(model):
        student = fxgrow.widen(model, ids, factor=2)
    assert student.emb.weight is student.out.weight
    assert not _ptrs(student) & _ptrs(model)
