"""fxgrow.draw: DOT text and Graphviz output, parsed (colours, labels, blockers, folding)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn as nn
import torchvision

import fxgrow
from fxgrow.drawing import GraphvizNotFoundError, graph, palette, render, scene

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(render.dot_binary() is None, reason="Graphviz `dot` not installed")


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)().eval()


X32 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# -- parsing -------------------------------------------------------------------------------------


# a DOT ID: a quoted string, or a bare name or number (graphviz quotes only where needed)
_ID = r'"(?:[^"\\]|\\.)*"|[\w.]+'


def _unquote(token: str) -> str:
    if token.startswith('"'):
        return re.sub(r"\\([\\\"])", r"\1", token[1:-1])
    return token


def dot_edges(src: str) -> list[dict]:
    """Every edge statement of DOT source as {src, dst, attrs}."""
    out = []
    for m in re.finditer(rf"^\s*({_ID}) -> ({_ID}) \[(.*)\];?$", src, re.M):
        out.append(
            {"src": _unquote(m.group(1)), "dst": _unquote(m.group(2)), "attrs": _attrs(m.group(3))}
        )
    return out


def dot_nodes(src: str) -> dict[str, dict]:
    """Every node statement of DOT source as {id: attrs} (not the graph/node/edge defaults)."""
    out = {}
    for m in re.finditer(rf"^\s*({_ID}) \[(.*)\];?$", src, re.M):
        if m.group(1) not in ("graph", "node", "edge"):
            out[_unquote(m.group(1))] = _attrs(m.group(2))
    return out


def _attrs(text: str) -> dict:
    """``key=value`` pairs: quoted values as written between the quotes, bare ones as they are
    (an HTML label is not read)."""
    return {
        k: v[1:-1] if v.startswith('"') else v
        for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"<\],]+)', text)
    }


def svg_parts(path) -> dict:
    """Colours used (stroke/fill), texts of edges, texts anywhere, and node titles."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    colours, edge_texts, texts, titles = set(), [], [], set()
    for el in root.iter():
        for attr in ("stroke", "fill"):
            if el.get(attr):
                colours.add(el.get(attr).lower())
        if el.tag == f"{SVG}text" and el.text:
            texts.append(el.text)
    for g in root.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title")
        if g.get("class") == "node" and title is not None:
            titles.add(title.text)
        if g.get("class") == "edge":
            for t in g.iter(f"{SVG}text"):
                edge_texts.append((t.text, (t.get("fill") or "").lower()))
    return {"colours": colours, "edge_texts": edge_texts, "texts": texts, "titles": titles}


# -- teacher view --------------------------------------------------------------------------------


def test_palette_distinct_and_not_blocker_red():
    colours = palette.palette(300)
    assert len(set(colours)) == 300
    assert palette.BLOCKER not in colours
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)


def test_palette_perceptually_distinct():
    """Colours stay apart in OKLab as groups multiply (DenseNet-121 has 122): the old HSV
    golden-angle palette had pairs 0.0025 apart at 122 colours."""
    import math

    def closest(n: int) -> float:
        labs = [palette._srgb_to_oklab(c) for c in palette.palette(n)]
        return min(math.dist(a, b) for i, a in enumerate(labs) for b in labs[i + 1 :])

    assert closest(40) >= 0.06
    assert closest(122) >= 0.035


def test_resnet18_dot_colours_every_group_on_its_edges():
    model = build("resnet18")
    analysis = fxgrow.analyze(model, X32)
    src = fxgrow.draw(analysis)
    edges = dot_edges(src)
    colours = {c for e in edges for c in e["attrs"].get("color", "").split(":")}
    s = scene(analysis)
    for g in s.groups:  # the input's edge carries conv1[in], the group its channels feed
        assert g.colour in colours, g.name
    # the edge conv1 -> bn1 carries the conv1 group; nodes show op and shape
    e = next(e for e in edges if e["src"] == "conv1" and e["dst"] == "bn1")
    assert e["attrs"]["color"] == next(g.colour for g in s.groups if g.name == "conv1")
    nodes = dot_nodes(src)
    assert "Conv2d" in nodes["conv1"]["label"] and "1×64×16×16" in nodes["conv1"]["label"]
    assert "layer1.0 · BasicBlock" in src  # module clusters
    assert not s.folded  # 70 nodes: nothing folded by default


def test_blockers_are_outlined_with_reason():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.b(torch.cumsum(torch.relu(self.a(x)), dim=1))

    src = fxgrow.draw(M().eval(), torch.randn(1, 3, 8, 8))
    node = dot_nodes(src)["cumsum"]
    assert node["color"] == palette.BLOCKER and "bold" in node["style"]
    assert "BLOCKS: cumsum" in node["tooltip"]
    assert dot_nodes(src)["a"].get("color") != palette.BLOCKER


@needs_dot
def test_resnet50_svg_has_every_group_colour(tmp_path):
    model = build("resnet50")
    x = torch.randn(1, 3, 64, 64)
    path = tmp_path / "r50.svg"
    fxgrow.draw(model, x, path)  # default: no folding
    parts = svg_parts(path)
    s = scene(model, x)
    assert len(s.groups) == 39
    for g in s.groups:
        assert g.colour in parts["colours"], g.name
    assert "layer1_0_conv1" in parts["titles"]


@needs_dot
def test_densenet121_folded_svg_has_every_group_colour(tmp_path):
    model = build("densenet121")
    x = torch.randn(1, 3, 32, 32)
    analysis = fxgrow.analyze(model, x)
    full = scene(analysis)
    assert len(full.items) > 400
    auto = scene(analysis, collapse="auto")
    assert auto.folded == [f"features.denseblock{k}" for k in range(1, 5)] + [
        f"features.transition{k}" for k in range(1, 4)
    ]
    assert len(auto.items) < 30
    path = tmp_path / "d.svg"
    fxgrow.draw(analysis, path=path, collapse="auto")
    parts = svg_parts(path)
    for g in auto.groups:  # on edges, or as a swatch in the box of the block that makes it
        assert g.colour in parts["colours"], g.name
    assert any(t.endswith("denseblock3") for t in parts["texts"])


def test_collapse_depth_patterns_and_errors():
    model = build("resnet18")
    analysis = fxgrow.analyze(model, X32)
    by_depth = scene(analysis, collapse=2)
    assert by_depth.folded == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    box = next(i for i in by_depth.items if i.id == "box:layer1.0")
    assert box.kind == "box" and len(box.nodes) == 7
    assert [g.name for g in box.inner_groups] == ["layer1.0.conv1"]
    # edges between boxes carry the stage group
    assert any(e.src == "box:layer1.0" and e.dst == "box:layer1.1" for e in by_depth.edges)
    by_glob = scene(analysis, collapse=["layer2.*"])  # outermost match: the blocks
    assert by_glob.folded == ["layer2.0", "layer2.1"]
    assert set(scene(analysis, collapse="layer3").folded) == {"layer3"}
    with pytest.raises(fxgrow.InputError):
        scene(analysis, collapse=-1)


# -- before / after ---------------------------------------------------------------------------------


@needs_dot
def test_resnet18_grown_before_after_svg(tmp_path):
    model = build("resnet18")
    student = fxgrow.grow(model, X32, width=1.5, blocks={"layer1": 3})
    plan = fxgrow.plan(model, X32, factor=1.5)
    path = tmp_path / "grown.svg"
    src = fxgrow.draw(model, X32, path, student=student)
    parts = svg_parts(path)
    s = scene(model, X32, student=student)
    colour = {g.name: g.colour for g in s.groups}
    for c in plan.changes:  # every widened group: its label, in its colour, on an edge
        label = f"{c.old_width} → {c.new_width}"
        assert (label, colour[c.group]) in parts["edge_texts"], c.group
        assert colour[c.group] in parts["colours"]
    # the copied block is highlighted: its nodes are new, outlined in the inserted colour
    nodes = dot_nodes(src)
    teacher = {n.name for n in fxgrow.trace(model).graph.nodes}
    new = [n for n in nodes if n != "legend" and n not in teacher]
    assert len(new) == 7
    assert "layer1.2 · BasicBlock" in src  # the copy has its own cluster
    for n in new:
        assert nodes[n]["color"] == palette.INSERTED and nodes[n]["label"].startswith("+ ")
    assert nodes["layer1_0_conv1"].get("color") != palette.INSERTED
    assert "12 groups widened" in src and "7 ops inserted" in src


def test_deepen_before_after_marks_inserted_layers():
    model = build("resnet18")
    student = fxgrow.deepen(model, X32, after="layer1.0.conv1", kind="identity", batchnorm=True)
    s = scene(model, X32, student=student)
    inserted = [i for i in s.items if i.inserted]
    assert [i.id for i in inserted] == ["layer1_0_conv1_deepen0_layer", "layer1_0_conv1_deepen0_bn"]
    assert not any(g.changed for g in s.groups)
    # folded: the box that holds inserted layers is marked too
    folded = scene(model, X32, student=student, collapse=2)
    box = next(i for i in folded.items if i.id == "box:layer1.0")
    assert box.inserted == len(inserted)


def tiny_llama():
    """A 2-layer Llama config with random weights and 8 token ids."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        use_cache=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval(), torch.randint(0, 64, (1, 8))


def test_export_graph_clusters_from_string_types():
    model, ids = tiny_llama()
    s = scene(model, ids)
    assert "model.layers.0" in s.clusters and "LlamaDecoderLayer" in s.clusters["model.layers.0"]
    folded = scene(model, ids, collapse="model.layers.*")
    assert folded.folded == ["model.layers.0", "model.layers.1"]


def test_llama_input_plumbing_folded_and_torch_names():
    """Mask, position and flag arithmetic becomes one box; ATen ops show their torch names."""
    model, ids = tiny_llama()
    mask = torch.ones(1, 8, dtype=torch.long)
    s = scene(model, (ids, mask))
    box = next(i for i in s.items if i.id == f"box:{graph.PLUMBING}")
    assert len(box.nodes) >= graph.PLUMBING_MIN and "attention_mask" in box.nodes
    assert not box.out_groups and not box.inner_groups
    inputs = [i.title for i in s.items if i.kind == "input"]
    assert inputs == ["input_ids"]  # the mask is folded into the plumbing box
    titles = {i.title for i in s.items if i.kind == "node"}
    assert "add" in titles and "matmul" in titles or "linear" in titles
    assert not any(t.endswith((".Tensor", ".default", ".int")) for t in titles)
    assert graph.torch_name(torch.ops.aten._to_copy.default) == "to"
    assert graph.torch_name(torch.ops.aten.add.Tensor) == "add"


# -- files and Graphviz --------------------------------------------------------------------------


@needs_dot
def test_png_and_pdf_rendered(tmp_path):
    model = build("resnet18")
    fxgrow.draw(model, X32, tmp_path / "r.png", collapse=2, dpi=48)
    fxgrow.draw(model, X32, tmp_path / "r.pdf", collapse=2)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "r.pdf").read_bytes()[:5] == b"%PDF-"


def test_dot_text_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "dot_binary", lambda: None)
    model = build("resnet18")
    src = fxgrow.draw(model, X32, tmp_path / "r.dot")
    assert (tmp_path / "r.dot").read_text(encoding="utf-8") == src
    assert src.startswith("digraph fxgrow {")
    with pytest.raises(GraphvizNotFoundError, match="Graphviz") as info:
        fxgrow.draw(model, X32, tmp_path / "r.svg")
    assert isinstance(info.value, fxgrow.FxgrowError)
    assert not (tmp_path / "r.svg").exists()
    with pytest.raises(fxgrow.InputError, match=r"\.svg"):
        fxgrow.draw(model, X32, tmp_path / "r.jpeg")


def test_module_helpers():
    assert graph.shape_text(torch.empty(2, 3)) == "2×3"
    assert graph.shape_text((torch.empty(1, 4), None)) == "1×4"


def test_dot_text_is_quoted_and_escaped():
    """Quotes, backslashes, newlines and ``<...>`` in text stay text: DOT escapes in a quoted
    string, never an HTML label; node ids with ``:`` stay whole on edges."""
    title = 'a "b"\nc\\d <e>'
    s = scene(nn.Sequential(nn.Linear(4, 4)).eval(), torch.randn(1, 4), title=title)
    src = render.to_dot(s, legend=False)
    assert 'label="a \\"b\\"\\nc\\\\d <e>"' in src
    s.edges.append(graph.Edge("box:x", "box:y", [], tooltip="t"))
    assert '"box:x" -> "box:y"' in render.to_dot(s, legend=False)


def test_before_after_falls_back_to_teacher_colours(monkeypatch):
    """If the student cannot be analysed, nodes it shares with the teacher keep their colours."""
    import fxgrow.analysis

    model = build("resnet18")
    analysis = fxgrow.analyze(model, X32)
    student = fxgrow.widen(model, X32, factor=1.5)
    # without recorded widths the student is analysed (and here that fails)
    fxgrow.growth.update_growth_record(student, group_widths=None)

    def fail(*args, **kwargs):
        raise RuntimeError("no analysis")

    monkeypatch.setattr(fxgrow.analysis, "analyze", fail)
    s = scene(analysis, student=student)
    e = next(e for e in s.edges if e.src == "conv1" and e.dst == "bn1")
    assert [g.name for g in e.groups] == ["conv1"]
    assert next(i for i in s.items if i.id == "conv1").shape == "1×96×16×16"


def test_many_groups_named_where_they_start():
    """DenseNet-121 has over a hundred groups: each is also labelled by name on the edge where
    it starts (colours alone cannot be told apart at that count)."""
    model = build("densenet121")
    s = scene(model, X32)
    assert len(s.groups) > graph.NAMED_GROUPS
    named = [g for e in s.edges for g in e.names]
    assert len(named) == len({g.index for g in named})  # once each
    drawn = {g.index for e in s.edges for g in e.groups}
    labelled = {g.index for e in s.edges for g in e.names + e.labels}
    assert labelled == drawn  # every drawn group is named
    src = render.to_dot(s)
    assert render.short_name(named[0].name) in src


def test_timm_vit_optional_inputs_folded():
    """timm's ViT blocks take ``attn_mask=None`` / ``is_causal=False``: arguments with a
    default that carry no channel group are side inputs, one box, with no edge into every
    block."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8).eval()
    s = scene(model, X32, collapse="auto")
    box = next(i for i in s.items if i.id == f"box:{graph.PLUMBING}")
    assert sorted(box.nodes) == ["attn_mask", "is_causal"]
    assert [i.title for i in s.items if i.kind == "input"] == ["x"]
    src = render.to_dot(s)
    assert not [e for e in dot_edges(src) if e["src"] == box.id]
    assert "feeds" in box.tooltip
