"""The layer-streamed run reuses the memory of released weights (no page faults per call) and
never the memory of a weight the model still holds a view of."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from fxgrow.stream import Checkpoint, ModuleStream, run_modules
from fxgrow.stream.buffers import alone


class Stack(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(4))

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


class Table(torch.nn.Module):
    """Returns a view of its own weight (a learned position table)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(5, 8))

    def forward(self, n: int):
        return self.weight[:n]


class Keeps(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = Table(), Table()

    def forward(self, x):
        first = self.a(x.shape[0])  # a view of a's weight, alive while b runs
        second = self.b(x.shape[0])
        return x + first + 2 * second


def _meta(cls):
    with torch.device("meta"):
        return cls()


def test_blocks_of_one_shape_share_one_buffer(tmp_path):
    torch.manual_seed(0)
    real = Stack().to(torch.bfloat16)
    save_file(real.state_dict(), tmp_path / "w.safetensors")
    x = torch.randn(3, 8)
    meta, seen = _meta(Stack), []
    with Checkpoint(tmp_path / "w.safetensors") as ck, ModuleStream(meta, ck, dtype=torch.float32):
        for layer in meta.layers:
            layer.register_forward_pre_hook(lambda m, a: seen.append(m.weight.data_ptr()))
        with torch.no_grad():
            out = meta(x)
    assert len(seen) == 4 and len(set(seen)) == 1  # one weight buffer for the four layers
    with torch.no_grad():
        assert torch.equal(out, real.float()(x))


def test_a_weight_the_output_still_views_is_not_reused(tmp_path):
    torch.manual_seed(0)
    real = Keeps()
    save_file(real.state_dict(), tmp_path / "w.safetensors")
    x = torch.randn(3, 8)
    with Checkpoint(tmp_path / "w.safetensors") as ck:
        out, _ = run_modules(_meta(Keeps), ck, (x,))
    with torch.no_grad():
        assert torch.equal(out, real(x))


def test_alone_sees_views_and_references():
    t = torch.empty(4, 4)
    assert alone(t)
    view = t.t()
    assert not alone(t)
    del view
    held = [t]
    assert not alone(t) and alone(t, refs=2)
    del held
    assert alone(t)


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(6, 10)
        self.down = torch.nn.Linear(10, 6)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.down(torch.relu(self.up(x)))))


def test_recipes_written_into_reused_memory_are_the_fresh_ones():
    import fxgrow
    from fxgrow.rewrite.recipe import apply_recipe, tensor_recipes

    model = Mlp()
    analysis = fxgrow.analyze(model, (torch.randn(2, 6),))
    plan = fxgrow.plan(analysis, factor=1.5, seed=1)
    recipes = tensor_recipes(analysis, plan)
    assert {r.steps[0].fraction is not None for r in recipes.values()} == {True, False}
    for name, recipe in recipes.items():
        old = model.get_parameter(name).detach().to(torch.bfloat16)
        out = torch.full(recipe.new_shape, float("nan"), dtype=torch.bfloat16)
        got = apply_recipe(recipe, old, out=out)
        assert got is out and torch.equal(got, apply_recipe(recipe, old))
    assert max(len(r.steps) for r in recipes.values()) == 2  # down: both of its axes grow
