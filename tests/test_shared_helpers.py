"""The helpers every module shares: segment walks over layouts, equal blocks, 'did you mean',
fresh names, parameter counts, and one module for every error class."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch.nn as nn
import torchvision

import fxgrow
from fxgrow import errors
from fxgrow.analysis.layout import (
    Atom,
    Blocker,
    Fixed,
    Prod,
    SpaceTable,
    Stack,
    Zip,
    atom_ids,
    children,
    compound_size,
    iter_segments,
)
from fxgrow.params import count_parameters
from fxgrow.suggest import did_you_mean
from fxgrow.unique import unique_name

WHY = Blocker("n", "test")


def test_iter_segments_is_depth_first_over_every_kind():
    a, b, c, d = Atom(0), Atom(1), Atom(2), Atom(3)
    f = Fixed(2, WHY)
    z = Zip(((b,), (c,)))
    p = Prod((a,), (z,))
    s = Stack(((d,), (f,)))
    layout = (f, p, s)
    assert list(iter_segments(layout)) == [f, p, a, z, b, c, s, d, f]
    assert list(atom_ids(layout)) == [0, 1, 2, 3]
    assert children(p) == ((a,), (z,)) and children(z) == z.parts and children(s) == s.rows
    assert children(a) == () and children(f) == ()


def test_compound_size_and_table_sizes_agree():
    sp = SpaceTable()
    (a,), (b,), (c,) = sp.new(3), sp.new(4), sp.new(4)
    z = Zip(((b,), (c,)))
    p = Prod((a,), (z,))
    assert compound_size(z, sp.size) == 8
    assert compound_size(p, sp.size) == 24 == sp.size((p,))
    assert compound_size(Stack(((b,), (c,))), sp.size) == 4
    widths = {a.id: 5, b.id: 6, c.id: 6}
    assert sp.new_size((p, Fixed(2, WHY)), widths) == 5 * 12 + 2


def test_equal_blocks_share_one_class():
    sp = SpaceTable()
    layout = sp.new(12)
    blocks = sp.equal_blocks(layout, 3, WHY, WHY)
    assert [sp.size(b) for b in blocks] == [4, 4, 4]
    roots = [sp.roots(b) for b in blocks]
    assert roots[0] == roots[1] == roots[2] and len(roots[0]) == 1
    assert sp.roots(layout) == roots[0]  # the whole axis is three copies of one space


def test_cut_equal_leaves_pieces_apart():
    sp = SpaceTable()
    pieces = sp.cut_equal(sp.new(6), 2, WHY)
    assert [sp.size(p) for p in pieces] == [3, 3]
    assert sp.roots(pieces[0]) != sp.roots(pieces[1])


def test_did_you_mean():
    known = ["layer1", "layer2", "fc", ""]
    assert did_you_mean("layr1", known) == "; did you mean 'layer1', 'layer2'?"
    assert did_you_mean("layr1", known, quote=False) == "; did you mean layer1, layer2?"
    assert did_you_mean("zzz", known) == ""
    assert did_you_mean("zzz", known, otherwise="; see the list") == "; see the list"


def test_unique_name():
    assert unique_name("conv", {"conv0", "conv1"}) == "conv2"
    assert unique_name("emb", {"emb", "emb#2"}, start=2, sep="#", bare=True) == "emb#3"
    assert unique_name("emb", set(), start=2, sep="#", bare=True) == "emb"
    assert unique_name("x", lambda s: s in ("x1", "x2"), start=1) == "x3"


def test_count_parameters_counts_tied_tensors_once():
    assert count_parameters(torchvision.models.resnet18()) == 11_689_512
    m = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    m[1].weight = m[0].weight
    assert count_parameters(m) == 40


def test_every_error_class_is_defined_in_errors():
    root = Path(fxgrow.__file__).parent
    elsewhere = []
    for path in root.rglob("*.py"):
        if path == root / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception"))
                for b in node.bases
            ):
                elsewhere.append(f"{path.relative_to(root)}:{node.name}")
    assert not elsewhere


@pytest.mark.parametrize(
    "module, name",
    [
        ("fxgrow.analysis.shapes", "GraphRunError"),
        ("fxgrow.drawing", "GraphvizNotFoundError"),
        ("fxgrow.stream.errors", "CheckpointError"),
        ("fxgrow.cli.models", "SpecError"),
        ("fxgrow.analysis.layout", "StructureError"),
    ],
)
def test_old_import_paths_still_work(module, name):
    import importlib

    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_unknown_stage_suggests_the_close_ones():
    import torch

    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(fxgrow.UnknownGroupError) as info:
        fxgrow.grow(model, x, blocks={"layr1": 3})
    message = str(info.value)
    assert message.startswith("no residual stage named 'layr1'; did you mean 'layer1', ")
    assert message.endswith("?") and "stages:" not in message
    with pytest.raises(fxgrow.UnknownGroupError, match="; stages: layer1, layer2, layer3, layer4"):
        fxgrow.grow(model, x, blocks={"zzz": 3})
