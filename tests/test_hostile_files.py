"""Hostile .safetensors files: every one is refused by ``fxgrow.load`` and by the command line
with a LoadError that names the problem, and nothing it asks for happens (no file written, no
code run, no large allocation)."""

from __future__ import annotations

import json
import struct

import pytest
import safetensors.torch
import torch
import torch.nn as nn

import fxgrow
from fxgrow.cli import main
from fxgrow.errors import LoadError

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    torch.manual_seed(0)
    student = fxgrow.widen(Small().eval(), X, factor=1.5)
    path = tmp_path_factory.mktemp("good") / "s.safetensors"
    fxgrow.save(student, path, example_inputs=X)
    return path


def _desc(path) -> tuple[dict, dict]:
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return meta, json.loads(meta["fxgrow"])


def hostile(good, tmp_path, edit, tensors=None):
    """A copy of ``good`` whose description ``edit`` changed (tensors replaced if given)."""
    meta, desc = _desc(good)
    edit(desc)
    path = tmp_path / "evil.safetensors"
    safetensors.torch.save_file(
        tensors or safetensors.torch.load_file(good),
        str(path),
        metadata={**meta, "fxgrow": json.dumps(desc)},
    )
    return path


def node(desc, name):
    return next(n for n in desc["graph"] if n["name"] == name)


def module(desc, path):
    return next(m for m in desc["modules"] if m["path"] == path)


def refused(path, tmp_path, capsys, match, *, cli=True, **load_kwargs) -> None:
    """fxgrow.load and `fxgrow inspect` refuse ``path``: LoadError matching ``match``, exit 2, one
    line on stderr, no traceback, and the folder holds nothing new (no file written)."""
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(LoadError, match=match):
        fxgrow.load(path, **load_kwargs)
    if cli:
        capsys.readouterr()
        assert main(["inspect", str(path), "-q"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1
        assert err.startswith("fxgrow: error: ")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# -- code execution and side effects ---------------------------------------------------------------


def test_pycodecache_payload_never_runs(good, tmp_path, capsys):
    marker = tmp_path / "pwned"
    source = f"open({str(marker)!r}, 'w').write('ran')"

    def edit(d):
        n = node(d, "flatten")
        n.update(target="torch._inductor.codecache.PyCodeCache.load", args=[source], kwargs={})

    path = hostile(good, tmp_path, edit)
    refused(
        path,
        tmp_path,
        capsys,
        r"calls torch\._inductor\.codecache\.PyCodeCache\.load, "
        r"which fxgrow does not load.*trusted=",
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    "target",
    [
        "torch.save",
        "torch.serialization.save",
        "torch.ops.aten.save",
        "torch.from_file",
        "torch.ops.aten.from_file.default",
        "torch.load",
        "builtins.open",
        "open",
        "exec",
        "os.system",
        "torch.hub.load",
        "torch.nn.functional.torch.save",
        "torchvision.models.resnet.torch.save",
    ],
)
def test_file_writing_and_loading_functions_refused(good, tmp_path, capsys, target):
    out = tmp_path / "written.pt"

    def edit(d):
        n = node(d, "flatten")
        n.update(target=target, args=[{"node": "x"}, str(out)], kwargs={})

    path = hostile(good, tmp_path, edit)
    refused(path, tmp_path, capsys, "does not load")
    assert not out.exists()


@pytest.mark.parametrize(
    "method", ["__reduce_ex__", "__class__", "register_hook", "apply_", "numpy", "_fix_weakref"]
)
def test_methods_outside_tensor_maths_refused(good, tmp_path, capsys, method):
    path = hostile(
        good,
        tmp_path,
        lambda d: node(d, "flatten").update(
            op="call_method", target=method, args=[{"node": "x"}], kwargs={}
        ),
    )
    refused(path, tmp_path, capsys, rf"method \.{method}\(\)")


@pytest.mark.parametrize("attr", ["__globals__", "_modules", "__dict__"])
def test_private_getattr_refused(good, tmp_path, capsys, attr):
    path = hostile(
        good,
        tmp_path,
        lambda d: node(d, "flatten").update(
            target="getattr", args={"tuple": [{"node": "x"}, attr]}, kwargs={"dict": []}
        ),
    )
    refused(path, tmp_path, capsys, "only public attributes")


def test_getattr_with_computed_name_refused(good, tmp_path, capsys):
    path = hostile(
        good,
        tmp_path,
        lambda d: node(d, "flatten").update(
            target="getattr", args={"tuple": [{"node": "x"}, {"node": "x"}]}, kwargs={"dict": []}
        ),
    )
    refused(path, tmp_path, capsys, "only public attributes")


@pytest.mark.parametrize("target", ["conv._parameters", "conv.forward", "_modules", "training"])
def test_get_attr_outside_the_file_refused(good, tmp_path, capsys, target):
    path = hostile(
        good,
        tmp_path,
        lambda d: node(d, "flatten").update(op="get_attr", target=target, args=[], kwargs={}),
    )
    refused(path, tmp_path, capsys, "neither a tensor nor a module of the file")


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("forward", {"fn": "operator.truth"}, r"would replace Conv2d\.forward"),
        ("_forward_hooks", {"dict": [[0, {"fn": "print"}]]}, "internal state"),
        ("_forward_pre_hooks", {"dict": []}, "internal state"),
        ("padding_mode", {"fn": "os.system"}, "does not load"),
    ],
)
def test_module_attributes_cannot_hook_or_shadow(good, tmp_path, capsys, name, value, match):
    path = hostile(good, tmp_path, lambda d: module(d, "conv")["attrs"].update({name: value}))
    refused(path, tmp_path, capsys, match)


@pytest.mark.parametrize(
    "cls, match",
    [
        ("subprocess.Popen", "outside the trusted packages"),
        ("torch.nn.modules.module.torch.save", "not a torch.nn.Module class"),
        ("torch.nn.__builtins__", "malformed or private"),
        ("torchvision.models.resnet._log_api_usage_once", "private attribute"),
        ("torch.fx.GraphModule", "outside the trusted packages"),
    ],
)
def test_module_classes_outside_the_trusted_set_refused(good, tmp_path, capsys, cls, match):
    path = hostile(good, tmp_path, lambda d: module(d, "conv").update({"class": cls}))
    refused(path, tmp_path, capsys, match)


def test_trusting_a_name_is_explicit(good, tmp_path):
    """A function outside the allowlist loads once the user names it (and only then)."""
    path = hostile(
        good,
        tmp_path,
        lambda d: node(d, "flatten").update(
            target="json.dumps", args={"tuple": [[1]]}, kwargs={"dict": []}
        ),
    )
    with pytest.raises(LoadError, match=r"pass trusted=\('json.dumps',\)"):
        fxgrow.load(path)
    gm = fxgrow.load(path, trusted=["json.dumps"])
    assert any(n.target is json.dumps for n in gm.graph.nodes)


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda d: d["tensors"].update({"../../etc/passwd": d["tensors"]["conv.weight"]}),
            "malformed tensor name",
        ),
        (
            lambda d: d["modules"].append({**module(d, "conv"), "path": "../evil"}),
            "malformed module path",
        ),
        (lambda d: node(d, "flatten").update(name="x; import os"), "malformed node name"),
        (lambda d: node(d, "x").update(target="__import__('os')"), "malformed input name"),
        (lambda d: d.update(class_name="GraphModule(); import os; x"), "malformed class name"),
        (
            lambda d: d["tensors"].update({"conv._parameters": d["tensors"]["conv.weight"]}),
            "internal state",
        ),
        (
            lambda d: node(d, "flatten").update(op="call_module", target="os.path"),
            "which the file does not build",
        ),
    ],
)
def test_names_refused(good, tmp_path, capsys, edit, match):
    refused(hostile(good, tmp_path, edit), tmp_path, capsys, match)


# -- sizes, truncation and lies ---------------------------------------------------------------------


def test_huge_declared_input_shape_refused(good, tmp_path, capsys):
    path = hostile(good, tmp_path, lambda d: d["inputs"][0].update(shape=[10**5, 10**5, 10**5]))
    with pytest.raises(LoadError, match=r"over fxgrow's limit.*--input-shape"):
        fxgrow.io.example_inputs(path)
    capsys.readouterr()
    assert main(["inspect", str(path), "-q"]) == 2
    assert "over fxgrow's limit" in capsys.readouterr().err


def test_huge_declared_module_never_allocated(good, tmp_path, capsys):
    """Constructor arguments that declare a 10^12-parameter layer: built on the meta device,
    refused because the file's tensor contradicts it, nothing allocated."""
    path = hostile(
        good,
        tmp_path,
        lambda d: module(d, "fc")["kwargs"].update(in_features=10**6, out_features=10**6),
    )
    refused(
        path,
        tmp_path,
        capsys,
        r"tensor fc\.weight is \(5, 12\) float32 but the module "
        r"it belongs to .* has \(1000000, 1000000\)",
    )


def test_safetensors_header_declaring_more_data_than_the_file_has(tmp_path, capsys):
    header = {
        "w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]},
        "__metadata__": {"fxgrow": json.dumps({"format": "fxgrow.graphmodule"})},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    refused(path, tmp_path, capsys, "not a safetensors file")


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file_refused(good, tmp_path, capsys, keep):
    data = good.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: int(len(data) * keep)])
    refused(path, tmp_path, capsys, "safetensors file")


def test_garbage_and_empty_files_refused(tmp_path, capsys):
    for i, data in enumerate([b"", b"\xff" * 8, b"\x08\0\0\0\0\0\0\0{}      "]):
        path = tmp_path / f"junk{i}.safetensors"
        path.write_bytes(data)
        refused(path, tmp_path, capsys, "safetensors")


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda d: d["tensors"]["conv.weight"].update(shape=[8, 3, 3, 3]),
            "declares .* the file contradicts itself",
        ),
        (
            lambda d: d["tensors"]["conv.weight"].update(dtype="float64"),
            "declares .* the file contradicts itself",
        ),
        (lambda d: d["inputs"][0].update(dtype="save"), "unknown dtype 'save'"),
        (lambda d: d["inputs"][0].update(shape=[2, -3, 16, 16]), "impossible input shape"),
        (lambda d: d.update(graph="nodes"), "malformed fxgrow description"),
        (lambda d: d.update(version=10**9), "newer fxgrow"),
        (lambda d: d["modules"].__setitem__(0, {"path": "conv"}), "malformed fxgrow description"),
        (
            lambda d: d.update(codegen={"orig_args": ["x"], "in_spec": None, "out_spec": None}),
            "the pytree signature has no input spec",
        ),
    ],
)
def test_metadata_that_lies_is_refused(good, tmp_path, capsys, edit, match):
    path = hostile(good, tmp_path, edit)
    with pytest.raises(LoadError, match=match):
        fxgrow.load(path)
        fxgrow.io.example_inputs(path)


def test_tensor_data_of_another_dtype_than_the_module_refused(good, tmp_path, capsys):
    tensors = safetensors.torch.load_file(good)
    tensors["conv.weight"] = tensors["conv.weight"].double()
    path = hostile(good, tmp_path, lambda d: d["tensors"]["conv.weight"].pop("dtype"), tensors)
    refused(path, tmp_path, capsys, r"conv\.weight is \(12, 3, 3, 3\) float64 but the module")


def test_integer_parameter_refused(good, tmp_path, capsys):
    tensors = safetensors.torch.load_file(good)
    tensors["_tensor_constant_x"] = torch.zeros(3, dtype=torch.int64)

    def edit(d):
        d["tensors"]["extra"] = {"kind": "parameter", "key": "_tensor_constant_x"}

    refused(
        hostile(good, tmp_path, edit, tensors), tmp_path, capsys, "parameters are floating point"
    )


# -- what inspect and draw do with a file -----------------------------------------------------------


def test_inspect_never_reads_weights_or_runs_the_graph(good, tmp_path, capsys, monkeypatch):
    """`fxgrow inspect FILE` analyses on meta tensors: no tensor data is read, and the
    graph's forward never runs on data; --run reads the weights."""
    from safetensors import safe_open

    read = []
    real = safe_open

    class Spy:
        def __init__(self, *a, **k):
            self.f = real(*a, **k)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *a):
            return self.f.__exit__(*a)

        def get_tensor(self, key):
            read.append(key)
            return self.f.get_tensor(key)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr("safetensors.safe_open", Spy)
    assert main(["inspect", str(good), "-q"]) == 0
    assert "widenable" in capsys.readouterr().out and read == []
    assert main(["inspect", str(good), "-q", "--run"]) == 0
    assert read


def test_saving_a_graph_load_would_refuse_says_so(tmp_path):
    """A graph calling an importable function outside the allowlist saves, and the round-trip
    check says that loading it needs trust."""
    gm = fxgrow.trace(Small().eval())
    out = next(n for n in gm.graph.nodes if n.op == "output")
    with gm.graph.inserting_before(out):
        rounded = gm.graph.call_function(torch.Tensor.round, (out.args[0],))  # allowed
        logged = gm.graph.call_function(json.dumps, ([1],))  # not allowed
    out.args = ((rounded, logged),)
    gm.recompile()
    with pytest.raises(
        fxgrow.SaveError,
        match=r"s.safetensors was written, but fxgrow.load "
        r"refuses it by default: the graph calls json.dumps.*--trust",
    ):
        fxgrow.save(gm, tmp_path / "s.safetensors", example_inputs=X)
