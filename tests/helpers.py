"""Shared checks for fxgrow's tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

import fxgrow


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@contextlib.contextmanager
def teacher_unchanged(model: torch.nn.Module) -> Iterator[None]:
    """Assert the model's state_dict is bit-identical before and after the block."""
    before = snapshot(model)
    yield
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"teacher tensor {k} changed"


def widen_exact(model: torch.nn.Module, x, tol: float = 1e-5, **kwargs) -> torch.fx.GraphModule:
    """widen(...) with the teacher checked unchanged and the student checked exact."""
    with teacher_unchanged(model):
        student = fxgrow.widen(model, x, verify=False, **kwargs)
        err = fxgrow.compare(model, student, x)
    assert err.max_rel <= tol, err
    return student


def train_step(student: torch.nn.Module, x) -> None:
    """A backward pass and an optimizer step run on the student and change its parameters."""
    student.train()
    opt = torch.optim.SGD(student.parameters(), lr=1e-3)
    out = student(*x) if isinstance(x, tuple) else student(x)
    loss = sum(
        o.float().pow(2).mean()
        for o in torch.utils._pytree.tree_leaves(out)
        if isinstance(o, torch.Tensor)
    )
    loss.backward()
    before = [p.detach().clone() for p in student.parameters()]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters()))
    student.eval()


class TiedLM(nn.Module):
    """A tiny language model whose output projection is its embedding (tied weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.fc = nn.Linear(6, 6)
        self.out = nn.Linear(6, 10, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        return self.out(torch.relu(self.fc(self.emb(ids))))


def shuffle_side_sequences(width: int, blocks: int) -> dict:
    """ShuffleNet's chain of ``blocks`` units (halves ``width`` wide): for each channel position
    of each producer (``("a", i)``, ``("b", i)``, ``("c<k>", i)``), its *side sequence* -- at
    every later chunk, whether it is passed on (True) or consumed (False)."""

    def shuffle(seq: list) -> list:
        h = len(seq) // 2
        return [u for j in range(h) for u in (seq[j], seq[h + j])]

    t = shuffle([("a", i) for i in range(width)] + [("b", i) for i in range(width)])
    seqs: dict = {p: [] for p in t}
    for k in range(blocks):
        n = len(t) // 2
        for at, p in enumerate(t):
            seqs[p].append(at >= n)
        fresh = [(f"c{k}", i) for i in range(n)]
        seqs.update((p, []) for p in fresh)
        t = shuffle(t[:n] + fresh)
    return seqs
