"""Shape propagation on meta tensors (``fxgrow.analysis.shapes``): every node's value, the
real-input fallback, and the error naming the node."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn
import torchvision

from fxgrow.analysis.shapes import GraphRunError, propagate


def test_every_node_gets_a_meta_value_with_the_real_shape():
    model = torchvision.models.resnet18().eval()
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    vals = propagate(gm, (x,))
    assert set(vals) == set(gm.graph.nodes)
    out = next(n for n in gm.graph.nodes if n.op == "output")
    assert vals[out].device.type == "meta" and vals[out].shape == (2, 1000)
    real = model.layer3(
        model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))))
    )
    layer3 = next(n for n in gm.graph.nodes if n.name == "layer3_1_relu_1")
    assert vals[layer3].shape == real.shape
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model is untouched


def test_a_module_registered_under_two_paths():
    """A graph may call a shared module by either of its paths (``named_modules`` lists one)."""
    lin = nn.Linear(4, 4)
    root = nn.Module()
    root.a, root.b = lin, lin
    g = torch.fx.Graph()
    x = g.placeholder("x")
    y = g.call_module("b", (g.call_module("a", (x,)),))
    g.output((y, g.get_attr("b.weight")))
    gm = torch.fx.GraphModule(root, g)
    assert gm.a is gm.b and "b" not in dict(gm.named_modules())
    vals = {n.name: v for n, v in propagate(gm, (torch.randn(3, 4),)).items()}
    assert vals["b"].shape == (3, 4) and vals["b"].device.type == "meta"
    assert vals["b_weight"].shape == (4, 4) and vals["b_weight"].device.type == "meta"


def test_data_dependent_graph_falls_back_to_the_real_inputs():
    g = torch.fx.Graph()
    x = g.placeholder("x")
    total = g.call_method("sum", (x,))
    g.output(g.call_method("item", (total,)))
    gm = torch.fx.GraphModule(nn.Module(), g)
    vals = propagate(gm, (torch.ones(3),))
    out = next(v for k, v in vals.items() if k.op == "output")
    assert out == 3.0  # .item() has no meta value: the real run computed it


def test_a_failing_node_is_named():
    g = torch.fx.Graph()
    x = g.placeholder("x")
    bad = g.call_function(torch.matmul, (x, x))
    g.output(bad)
    gm = torch.fx.GraphModule(nn.Module(), g)
    with pytest.raises(
        GraphRunError, match=r"node 'matmul' \(call_function .*matmul\) fails: RuntimeError"
    ):
        propagate(gm, (torch.randn(2, 3),))
