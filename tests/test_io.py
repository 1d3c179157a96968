"""fxgrow.save / fxgrow.load: one safetensors file, no pickle, bit-identical round trips."""

from __future__ import annotations

import json
import pickle

import pytest
import safetensors.torch
import torch
import torch.nn as nn
import torchvision

import fxgrow
from fxgrow import LoadError
from fxgrow.io import example_inputs, info

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


def small() -> nn.Module:
    torch.manual_seed(0)
    return Small().eval()


def outputs(model, x) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(*x) if isinstance(x, tuple) else model(x)
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def assert_same(a: nn.Module, b: nn.Module, x) -> None:
    """Bit-identical outputs and state_dicts, same graph node names."""
    oa, ob = outputs(a, x), outputs(b, x)
    assert len(oa) == len(ob) and all(torch.equal(p, q) for p, q in zip(oa, ob))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    assert [n.name for n in a.graph.nodes] == [n.name for n in b.graph.nodes]


def load_without_pickle(path) -> torch.fx.GraphModule:
    """fxgrow.load with pickle and torch.load made to fail: loading must use neither."""

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("loads", "load", "Unpickler"):
            mp.setattr(pickle, name, refuse)
        mp.setattr(torch, "load", refuse)
        return fxgrow.load(path)


def test_grown_resnet_round_trip(tmp_path):
    teacher = resnet18()
    student = fxgrow.grow(teacher, X, width=1.5, blocks={"layer1": 3}, verify=False)
    path = fxgrow.save(student, tmp_path / "s.safetensors", example_inputs=X, verify=False)
    loaded = load_without_pickle(path)
    assert isinstance(loaded, torch.fx.GraphModule)
    assert_same(student, loaded, X)
    assert fxgrow.compare(teacher, loaded, X).max_rel < 1e-5
    # module metadata survives: stages are found again, and the loaded model grows further
    assert [s.name for s in fxgrow.stages(loaded, X)] == ["layer1", "layer2", "layer3", "layer4"]
    bigger = fxgrow.grow(loaded, X, blocks={"layer2": 3}, verify=False)
    assert fxgrow.compare(teacher, bigger, X).max_rel < 1e-5
    # it trains
    loaded.train()
    loaded(X).sum().backward()
    assert loaded.conv1.weight.grad is not None


def test_deepened_students_round_trip(tmp_path):
    teacher = resnet18()
    for i, kwargs in enumerate(
        [
            dict(after="layer1.0.relu", kind="residual"),
            dict(after="layer2.1.conv1", batchnorm=True),
            dict(after="layer3.1", kind="block"),
        ]
    ):
        student = fxgrow.deepen(teacher, X, verify=False, **kwargs)
        path = fxgrow.save(student, tmp_path / f"d{i}.safetensors", example_inputs=X)
        assert_same(student, fxgrow.load(path), X)


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64
    ).eval()


def _timm() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False).eval()


@pytest.mark.parametrize("make", [_vit, _timm], ids=["torchvision-vit", "timm-resnet10t"])
def test_other_models_round_trip(tmp_path, make):
    """nn.MultiheadAttention (constructor arguments read back from attributes), timm layers."""
    student = fxgrow.widen(make(), X, factor=2, verify=False)
    path = fxgrow.save(student, tmp_path / "s.safetensors", example_inputs=X)
    assert_same(student, fxgrow.load(path), X)


def test_weights_are_plain_safetensors(tmp_path):
    student = fxgrow.widen(small(), X, factor=1.5)
    path = fxgrow.save(student, tmp_path / "s.safetensors")
    weights = safetensors.torch.load_file(path)
    assert set(weights) == set(student.state_dict())
    fresh = fxgrow.load(path)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(weights)
    assert torch.equal(outputs(fresh, X)[0], outputs(student, X)[0])


def test_export_student_with_tied_weights(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        use_cache=False,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    teacher = transformers.LlamaForCausalLM(cfg).eval()
    ids = (torch.randint(0, 64, (2, 8)),)
    student = fxgrow.widen(teacher, ids, factor=2, as_graph=True)
    assert fxgrow.growth.frontend(student) == "export"
    path = fxgrow.save(student, tmp_path / "llama.safetensors", example_inputs=ids)
    loaded = load_without_pickle(path)
    assert_same(student, loaded, ids)
    assert fxgrow.growth.frontend(loaded) == "export"
    # tied weights: one tensor in the student, one in the loaded model
    names = [n for n, _ in student.named_parameters(remove_duplicate=False)]
    shared = {n for n in names if n.endswith("embed_tokens.weight") or n.endswith("lm_head.weight")}
    assert len({id(student.get_parameter(n)) for n in shared}) == len(
        {id(loaded.get_parameter(n)) for n in shared}
    )
    assert type(loaded(*ids)).__name__ == "CausalLMOutputWithPast"  # pytree output kept


def test_recorded_inputs(tmp_path):
    student = fxgrow.widen(small(), X, factor=1.5)
    path = fxgrow.save(student, tmp_path / "s.safetensors", example_inputs=X)
    assert info(path)["inputs"] == [{"shape": [2, 3, 32, 32], "dtype": "float32"}]
    (x,) = example_inputs(path)
    assert x.shape == X.shape and x.dtype == X.dtype
    plain = fxgrow.save(student, tmp_path / "p.safetensors")
    assert example_inputs(plain) is None


def _tamper(path, edit) -> None:
    tensors = safetensors.torch.load_file(path)
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    desc = json.loads(meta["fxgrow"])
    edit(desc)
    safetensors.torch.save_file(tensors, str(path), metadata={**meta, "fxgrow": json.dumps(desc)})


def _node(desc, name):
    return next(n for n in desc["graph"] if n["name"] == name)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: _node(d, "flatten").update(target="os.system"),
            r"calls os.system, which fxgrow does not load.*trusted=\('os.system',\)",
        ),
        (lambda d: _node(d, "flatten").update(target="eval"), "does not load"),
        (lambda d: _node(d, "flatten").update(target="torch.__builtins__"), "does not load"),
        (
            lambda d: _node(d, "flatten").update(op="call_method", target="x; import os"),
            "malformed",
        ),
        (
            lambda d: d["modules"][0].update({"class": "subprocess.Popen", "role": "leaf"}),
            "trusted packages",
        ),
        (lambda d: d.update(format="something"), "unknown format"),
    ],
)
def test_untrusted_names_refused(tmp_path, edit, message):
    student = fxgrow.widen(small(), X, factor=1.5)
    path = fxgrow.save(student, tmp_path / "s.safetensors")
    _tamper(path, edit)
    with pytest.raises(LoadError, match=message):
        fxgrow.load(path)


def test_trusted_extension():
    from fxgrow.io.trust import resolve_class, resolve_function

    assert resolve_function("math.sqrt") is __import__("math").sqrt
    assert resolve_function("torch.nn.functional.gelu") is torch.nn.functional.gelu
    assert resolve_function("torch.ops.aten.add.Tensor") is torch.ops.aten.add.Tensor
    with pytest.raises(LoadError, match=r"trusted=\('json.loads',\)"):
        resolve_function("json.loads")
    assert resolve_function("json.loads", ("json",)) is json.loads
    assert resolve_function("json.loads", ("json.loads",)) is json.loads
    with pytest.raises(LoadError, match="private attribute '_default_decoder'"):
        resolve_function("json._default_decoder.decode", ("json",))
    with pytest.raises(LoadError, match="outside the trusted packages"):
        resolve_class("json.JSONDecoder")
    assert resolve_class("torch.nn.modules.conv.Conv2d") is nn.Conv2d


def test_save_refuses_what_it_cannot_rebuild(tmp_path):
    with pytest.raises(fxgrow.InputError, match="state_dict"):
        fxgrow.save(resnet18(), tmp_path / "m.safetensors")

    def local(x):
        return x * 2

    gm = fxgrow.trace(resnet18())
    out = next(n for n in gm.graph.nodes if n.op == "output")
    with gm.graph.inserting_before(out):
        doubled = gm.graph.call_function(local, (out.args[0],))
    out.args = (doubled,)
    gm.recompile()
    with pytest.raises(fxgrow.SaveError, match="imports back"):
        fxgrow.save(gm, tmp_path / "m.safetensors")


def test_not_an_fxgrow_file(tmp_path):
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(resnet18().state_dict(), str(path))
    with pytest.raises(LoadError, match="state_dict"):
        fxgrow.load(path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(LoadError):
        fxgrow.load(tmp_path / "junk.safetensors")
    with pytest.raises(fxgrow.InputError, match="no such file"):
        fxgrow.load(tmp_path / "missing.safetensors")
