"""Loading what ``fxgrow.save`` wrote, treating the file as untrusted input.

Invariant: ``load`` reads JSON and safetensors only (never pickle), turns names into objects only
through :mod:`fxgrow.io.trust`'s allowlist, checks every tensor against what the file declares and
what the module's constructor made (shape and dtype), and never runs the graph: the only code
that runs is trusted constructors and the ``forward`` torch.fx generates from the checked graph.
With ``weights=False`` not even the tensor data is read: parameters are meta tensors of the
declared shapes (what ``fxgrow inspect`` and ``fxgrow draw`` use for saved files).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.fx

from ..errors import InputError, LoadError
from ..growth import GrowthRecord, set_growth_record
from .codec import _dec, _enc, _qualname
from .graph_loading import _codegen, _graph
from .growth_codec import decode
from .header import (  # noqa: F401
    _DTYPES,
    FORMAT,
    MAX_INPUT_ELEMENTS,
    VERSION,
    _short,
    example_inputs,
    info,
    input_spec,
)
from .records import _ctor_kwargs
from .trust import check_member, resolve_class

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


# -- modules ---------------------------------------------------------------------------------------


def _construct(rec: dict, trusted: tuple, dec: Any) -> torch.nn.Module:
    cls = resolve_class(str(rec["class"]), trusted)
    kwargs = {str(k): dec(v) for k, v in (rec.get("kwargs") or {}).items()}
    if not all(_IDENT.match(k) for k in kwargs):
        raise LoadError(f"module {rec['path']}: malformed constructor argument names")
    try:
        with torch.device("meta"):  # never allocates, whatever sizes the file declares
            return cls(**kwargs)
    except Exception as e:
        raise LoadError(
            f"cannot rebuild module {rec['path']} ({rec['class']}) from "
            f"{_short(kwargs, 120)}: {type(e).__name__}: {_short(e)}"
        ) from e


def _finish(m: torch.nn.Module, rec: dict, dec: Any) -> None:
    for k, v in (rec.get("attrs") or {}).items():
        if k in m._modules or k in m._parameters or k in m._buffers:
            continue
        check_member(m, k, f"attribute of {rec['path']}")
        object.__setattr__(m, k, dec(v))
    m.training = bool(rec.get("training", False))


def _child(root: torch.nn.Module, path: str, create: bool) -> torch.nn.Module:
    m = root
    for part in path.split(".") if path else []:
        nxt = m._modules.get(part)
        if nxt is None:
            if not create:
                raise LoadError(f"module {path} is missing")
            check_member(m, part, "module")
            nxt = torch.nn.Module()
            m._modules[part] = nxt
        m = nxt
    return m


def _modules(desc: dict, trusted: tuple, dec: Any) -> torch.nn.Module:
    root = torch.nn.Module()
    records = sorted(desc["modules"], key=lambda r: str(r["path"]).count("."))
    for rec in records:
        p = str(rec["path"])
        if not _PATH.match(p):
            raise LoadError(f"malformed module path {p!r}")
        if rec["role"] not in ("leaf", "child", "container"):
            raise LoadError(f"module {p}: unknown role {rec['role']!r}")
        if rec["role"] == "child":
            continue
        parent_path, _, name = p.rpartition(".")
        parent = _child(root, parent_path, create=True)
        if name not in parent._modules:
            check_member(parent, name, "module")
        if rec["role"] == "container":
            m = parent._modules.get(name) or torch.nn.Module()
            m.training = bool(rec.get("training", False))
        else:
            m = _construct(rec, trusted, dec)
        parent._modules[name] = m
    for rec in records:  # children of leaf modules: fix what the constructor made differently
        if rec["role"] != "child" or rec["class"] is None:
            continue
        parent_path, _, name = rec["path"].rpartition(".")
        parent = _child(root, parent_path, create=False)
        have = parent._modules.get(name)
        if have is None:
            check_member(parent, name, "module")
        if (
            have is None
            or _qualname(type(have)) != rec["class"]
            or {k: _enc(v, "") for k, v in _ctor_kwargs(have).items()} != rec.get("kwargs", {})
        ):
            parent._modules[name] = _construct(rec, trusted, dec)
    for rec in records:
        if rec["class"] is not None:
            _finish(_child(root, rec["path"], create=False), rec, dec)
    return root


# -- tensors ---------------------------------------------------------------------------------------


def _tensors(root: torch.nn.Module, desc: dict, path: Path, device: str, weights: bool) -> None:
    from safetensors import safe_open

    try:
        f = safe_open(str(path), framework="pt", device=device if weights else "cpu")
    except Exception as e:
        raise LoadError(f"{path.name} is not a readable safetensors file: {_short(e)}") from e
    with f:
        keys = set(f.keys())
        cache: dict[str, torch.Tensor] = {}
        params: dict[str, torch.nn.Parameter] = {}
        for name, t in desc["tensors"].items():
            if not _PATH.match(name):
                raise LoadError(f"malformed tensor name {name!r}")
            key = str(t["key"])
            if key not in keys:
                raise LoadError(f"{path.name} lacks tensor {key!r}")
            if key not in cache:
                cache[key] = _read(f, key, t, weights, path)
            owner_path, _, leaf = name.rpartition(".")
            owner = _child(root, owner_path, create=True)
            old = owner._parameters.get(leaf, owner._buffers.get(leaf))
            if old is None and not isinstance(owner.__dict__.get(leaf), torch.Tensor):
                check_member(owner, leaf, "tensor")
            value = cache[key]
            if old is not None and (old.shape != value.shape or old.dtype != value.dtype):
                raise LoadError(
                    f"{path.name}: tensor {name} is {_sd(value)} but the module it "
                    f"belongs to ({type(owner).__name__}, built from the file's own "
                    f"description) has {_sd(old)}; the file contradicts itself"
                )
            for store in (owner._parameters, owner._buffers):
                store.pop(leaf, None)
            owner.__dict__.pop(leaf, None)
            if t["kind"] == "parameter":
                p = params.get(key)
                if p is None:
                    if not (value.is_floating_point() or value.is_complex()):
                        raise LoadError(
                            f"{path.name}: parameter {name} has dtype "
                            f"{value.dtype}; parameters are floating point"
                        )
                    p = params[key] = torch.nn.Parameter(
                        value, requires_grad=bool(t.get("requires_grad", True))
                    )
                owner._parameters[leaf] = p
            elif t["kind"] == "buffer":
                owner.register_buffer(leaf, value, persistent=bool(t.get("persistent", True)))
            elif t["kind"] == "constant":
                object.__setattr__(owner, leaf, value)
            else:
                raise LoadError(f"unknown tensor kind {t['kind']!r}")


def _sd(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"


def _read(f: Any, key: str, rec: dict, weights: bool, path: Path) -> torch.Tensor:
    """One tensor (data, or a meta tensor of its declared shape), checked against the shape and
    dtype the description declares for it."""
    sl = f.get_slice(key)
    shape = tuple(sl.get_shape())
    dtype = _DTYPES.get(
        {
            "F64": "float64",
            "F32": "float32",
            "F16": "float16",
            "BF16": "bfloat16",
            "I64": "int64",
            "I32": "int32",
            "I16": "int16",
            "I8": "int8",
            "U8": "uint8",
            "BOOL": "bool",
            "C64": "complex64",
        }.get(sl.get_dtype(), "")
    )
    if dtype is None:
        raise LoadError(
            f"{path.name}: tensor {key!r} has dtype {sl.get_dtype()}, which fxgrow does not load"
        )
    declared = rec.get("shape"), rec.get("dtype")
    if (
        declared[0] is not None
        and tuple(declared[0]) != shape
        or declared[1] is not None
        and declared[1] != str(dtype).removeprefix("torch.")
    ):
        raise LoadError(
            f"{path.name}: tensor {key!r} is {shape} {dtype} in the file but the "
            f"description declares {declared[0]} {declared[1]}; the file contradicts "
            f"itself"
        )
    if not weights:
        return torch.empty(shape, dtype=dtype, device="meta")
    return f.get_tensor(key).clone()  # fresh, aligned memory: kernels may round differently


def load(
    path: str | os.PathLike,
    *,
    trusted: Iterable[str] = (),
    device: str | torch.device | None = None,
    weights: bool = True,
) -> torch.fx.GraphModule:
    """Rebuild the GraphModule that ``fxgrow.save`` wrote, treating the file as untrusted.

    ``trusted`` names further functions, method names or module classes (or packages: a
    prefix of qualified names) the file may use beyond fxgrow's allowlist (``fxgrow.io.trust``);
    ``device`` is where the tensors go (default: CPU); ``weights=False`` reads no tensor data
    (parameters are meta tensors of the declared shapes: enough to analyse, not to run).

    A folder ``fxgrow.save`` wrote from a Hugging Face student loads as its class, growth
    record in ``model.meta`` (``fxgrow.hf.saving``)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        from ..hf.saving import load_student

        model = load_student(path)
        return model.to(device) if device is not None else model  # type: ignore[return-value]
    desc = info(path)
    trusted = tuple(str(t) for t in trusted)
    try:
        dev = str(torch.device(device)) if device is not None else "cpu"
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device={device!r} is not a torch device") from e

    def dec(v: Any) -> Any:
        return _dec(v, None, trusted)

    def dec_env(v: Any, env: dict) -> Any:
        return _dec(v, env, trusted)

    try:
        root = _modules(desc, trusted, dec)
        _tensors(root, desc, path, dev, weights)
        graph = _graph(desc, root, trusted, dec_env)
        _codegen(graph, desc.get("codegen"))
    except LoadError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise LoadError(
            f"{path.name}: malformed fxgrow description ({type(e).__name__}: "
            f"{_short(e)}); the file is damaged or was not written by fxgrow"
        ) from e
    if weights:
        for name, t in list(root.named_parameters()) + list(root.named_buffers()):
            if t.device.type == "meta":
                raise LoadError(
                    f"{path.name} has no data for {name}; the module that owns it "
                    f"was built with a tensor the saved model did not have"
                )
    class_name = str(desc.get("class_name") or "GraphModule")
    if not _IDENT.match(class_name):
        raise LoadError(f"malformed class name {class_name!r}")
    gm = torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph(), class_name)
    gm._modules.update(root._modules)
    gm._parameters.update(root._parameters)
    gm._buffers.update(root._buffers)
    gm._non_persistent_buffers_set |= root._non_persistent_buffers_set
    for k, v in vars(root).items():
        if isinstance(v, torch.Tensor):
            object.__setattr__(gm, k, v)
    try:
        gm.graph = graph
    except Exception as e:
        raise LoadError(f"{path.name}: the stored graph does not compile: {_short(e)}") from e
    gm.training = bool(desc.get("training", False))
    meta = desc.get("meta") or {}
    if not isinstance(meta, dict):
        raise LoadError(f"{path.name}: malformed fxgrow description (meta is not an object)")
    if "growth" in meta:
        record = decode(meta["growth"], path.name)
    elif meta:  # a file written before the growth record
        record = decode(meta, path.name, legacy=True)
    else:
        record = None
    if record is not None or not weights:
        set_growth_record(gm, replace(record or GrowthRecord(), weights=weights))
    return gm
