"""Saving and loading grown models: one ``.safetensors`` file, no pickle.

``fxgrow.save(student, "student.safetensors")`` writes the GraphModule's tensors with
safetensors and, in the file's metadata (a JSON string under the key ``fxgrow``), what is needed
to rebuild it: the graph as a list of nodes (op, name, target by qualified name, arguments as
tagged JSON), the module tree (for each module fx calls: its class by qualified name, the
constructor arguments read from its attributes, and its plain attributes), which tensor is a
parameter, buffer or constant (ties kept), the pytree signature of ``torch.export`` graphs, and
optionally the shapes of example inputs.  ``fxgrow.load(path)`` rebuilds the GraphModule.

Trust model
-----------
* The weights are plain safetensors: ``safetensors.torch.load_file(path)`` reads them from any
  file, trusted or not, and ``model.load_state_dict`` accepts them (a ``state_dict`` always
  works: it is the same tensors under the same names).
* ``load`` never unpickles and never executes code stored in the file: it reads JSON, imports
  functions and module classes *by qualified name* from trusted packages only (torch,
  torchvision, timm, transformers, operator, math, builtins' ``getattr``; extend with
  ``trusted=("mypackage",)``), constructs modules through their constructors with stored plain
  values, and lets torch.fx generate ``forward`` from the checked graph (identifiers validated,
  constants limited to numbers, strings, dtypes, devices, slices and containers of them).
* It is not a sandbox: the graph calls library functions of the trusted packages with stored
  arguments, as a model would.  Load graphs from sources you would take a model's code from;
  load only the weights (safetensors) from anyone else.
"""
from __future__ import annotations

import builtins
import importlib
import inspect
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.fx
from torch.fx.node import _get_qualified_name

from .errors import FxgrowError, InputError

FORMAT = "fxgrow.graphmodule"
VERSION = 1
TRUSTED = ("torch", "torchvision", "timm", "transformers", "operator", "_operator", "math",
           "fxgrow")
SAFE_BUILTINS = frozenset({"getattr", "len", "int", "float", "bool", "min", "max", "abs",
                           "round", "tuple", "list", "slice", "range", "divmod", "pow", "sum",
                           "all", "any", "isinstance", "hasattr"})

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


class SaveError(FxgrowError):
    """The model cannot be saved in fxgrow's format (the message says what to do instead)."""


class LoadError(FxgrowError):
    """The file cannot be loaded as an fxgrow model (not one, damaged, or not trusted)."""


# -- values ----------------------------------------------------------------------------------------

def _enc(v: Any, where: str) -> Any:
    if isinstance(v, torch.fx.Node):
        return {"node": v.name}
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": repr(v)}
    if isinstance(v, torch.Size):
        return {"size": [_enc(x, where) for x in v]}
    if isinstance(v, tuple):
        return {"tuple": [_enc(x, where) for x in v]}
    if isinstance(v, list):
        return [_enc(x, where) for x in v]
    if isinstance(v, dict):
        return {"dict": [[_enc(k, where), _enc(x, where)] for k, x in v.items()]}
    if isinstance(v, slice):
        return {"slice": [_enc(v.start, where), _enc(v.stop, where), _enc(v.step, where)]}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": str(v)}
    if isinstance(v, torch.memory_format):
        return {"memory_format": str(v).removeprefix("torch.")}
    if isinstance(v, torch.layout):
        return {"layout": str(v).removeprefix("torch.")}
    if v is Ellipsis:
        return {"ellipsis": True}
    if isinstance(v, complex):
        return {"complex": [v.real, v.imag]}
    raise SaveError(f"{where}: cannot store a value of type {type(v).__name__} ({v!r:.60}); "
                    f"fxgrow saves graphs whose constants are numbers, strings, dtypes, devices, "
                    f"slices and containers of them. Save student.state_dict() instead")


def _dec(v: Any, env: dict | None, trusted: tuple) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [_dec(x, env, trusted) for x in v]
    if not isinstance(v, dict) or len(v) != 1:
        raise LoadError(f"malformed value in the graph: {v!r:.80}")
    (tag, x), = v.items()
    if tag == "node":
        if env is None or x not in env:
            raise LoadError(f"the graph refers to node {x!r} before defining it")
        return env[x]
    if tag == "float":
        if x not in ("inf", "-inf", "nan"):
            raise LoadError(f"malformed float {x!r}")
        return float(x)
    if tag == "size":
        return torch.Size(_dec(x, env, trusted))
    if tag == "tuple":
        return tuple(_dec(y, env, trusted) for y in x)
    if tag == "dict":
        return {_dec(k, env, trusted): _dec(y, env, trusted) for k, y in x}
    if tag == "slice":
        return slice(*(_dec(y, env, trusted) for y in x))
    if tag in ("dtype", "memory_format", "layout"):
        kind = {"dtype": torch.dtype, "memory_format": torch.memory_format,
                "layout": torch.layout}[tag]
        found = getattr(torch, str(x), None) if _IDENT.match(str(x)) else None
        if not isinstance(found, kind):
            raise LoadError(f"unknown torch {tag} {x!r}")
        return found
    if tag == "device":
        return torch.device(str(x))
    if tag == "ellipsis":
        return Ellipsis
    if tag == "complex":
        return complex(float(x[0]), float(x[1]))
    if tag == "fn":
        return _resolve(str(x), trusted)
    raise LoadError(f"unknown value tag {tag!r} in the graph")


# -- names -----------------------------------------------------------------------------------------

def _qualname(obj: Any) -> str:
    """A name that imports back to ``obj``."""
    candidates = []
    try:
        candidates.append(_get_qualified_name(obj))
    except Exception:
        pass
    mod, name = getattr(obj, "__module__", None), getattr(obj, "__name__", None)
    if mod and name:
        candidates.append(f"{mod}.{name}")
    qual = getattr(obj, "__qualname__", None)
    if mod and qual and "<" not in qual:
        candidates.append(f"{mod}.{qual}")
    for c in candidates:
        if c in SAFE_BUILTINS or c.startswith("builtins."):
            c = c.removeprefix("builtins.")
            if getattr(builtins, c, None) is obj:
                return c
            continue
        try:
            if _resolve(c, None) is obj:
                return c
        except Exception:
            continue
    raise SaveError(f"cannot name {obj!r} so that it imports back; fxgrow saves graphs that call "
                    f"importable functions and classes only. Save student.state_dict() instead")


def _resolve(name: str, trusted: tuple | None) -> Any:
    """The object a qualified name imports to; with ``trusted``, only from those packages."""
    if "." not in name:
        if trusted is not None and name not in SAFE_BUILTINS:
            raise LoadError(f"the graph calls builtin {name!r}, which fxgrow does not load")
        if not hasattr(builtins, name):
            raise LoadError(f"unknown builtin {name!r}")
        return getattr(builtins, name)
    parts = name.split(".")
    if not all(_IDENT.match(p) for p in parts):
        raise LoadError(f"malformed qualified name {name!r}")
    if trusted is not None and parts[0] not in trusted:
        raise LoadError(f"the file refers to {name!r}, outside the trusted packages "
                        f"({', '.join(trusted)}); pass trusted=({parts[0]!r},) to fxgrow.load "
                        f"if you trust it")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        try:
            for p in parts[k:]:
                obj = getattr(obj, p)
        except AttributeError as e:
            raise LoadError(f"cannot import {name!r}: {e}") from e
        if trusted is not None and any(p.startswith("__") for p in parts) and not (
                isinstance(obj, (torch._ops.OpOverload, torch._ops.OpOverloadPacket))
                or parts[0] in ("operator", "_operator")):
            raise LoadError(f"the file refers to a private name {name!r}")
        return obj
    raise LoadError(f"cannot import {name!r}")


# -- modules ---------------------------------------------------------------------------------------

_SIMPLE = (bool, int, float, str, type(None))


def _plain(v: Any) -> bool:
    if isinstance(v, _SIMPLE) or isinstance(v, (torch.dtype, torch.device)):
        return True
    if isinstance(v, (tuple, list)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False


def _ctor_kwargs(m: torch.nn.Module) -> dict:
    """Constructor arguments read back from a module's attributes of the same names."""
    try:
        sig = inspect.signature(type(m).__init__)
    except (TypeError, ValueError):
        return {}
    out = {}
    for name, p in list(sig.parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in ("device", "dtype"):
            continue
        if name in m._parameters or name in m._buffers:
            value = getattr(m, name, None)
            if p.default is True or p.default is False or name == "bias":
                out[name] = value is not None
            continue
        if name in m._modules:
            continue
        if not hasattr(m, name):
            continue
        value = getattr(m, name)
        if isinstance(value, torch.Tensor):
            continue
        if _plain(value):
            out[name] = value
    return _special_kwargs(m, out)


def _special_kwargs(m: torch.nn.Module, out: dict) -> dict:
    if isinstance(m, torch.nn.MultiheadAttention):
        out["bias"] = m.in_proj_bias is not None
        out["add_bias_kv"] = m.bias_k is not None
    return out


def _attrs(m: torch.nn.Module) -> dict:
    """Plain attributes (numbers, strings, tuples ...) and functions by name."""
    out = {}
    for k, v in vars(m).items():
        if k.startswith("_") or k == "training":
            continue
        if _plain(v):
            out[k] = _enc(v, f"attribute {k}")
        elif callable(v) and not isinstance(v, (torch.nn.Module, torch.Tensor, type)) and \
                (inspect.isfunction(v) or inspect.isbuiltin(v)):
            try:
                out[k] = {"fn": _qualname(v)}
            except SaveError:
                pass
    return out


def _module_record(path: str, m: torch.nn.Module, container: bool) -> dict:
    rec: dict = {"path": path, "training": m.training}
    if container:
        rec["class"] = None
        return rec
    rec["class"] = _qualname(type(m))
    rec["kwargs"] = {k: _enc(v, f"module {path}") for k, v in _ctor_kwargs(m).items()}
    rec["attrs"] = _attrs(m)
    return rec


# -- save ------------------------------------------------------------------------------------------

def _input_spec(example_inputs: Any) -> list:
    if example_inputs is None:
        return []
    xs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    spec = []
    for x in xs:
        if not isinstance(x, torch.Tensor):
            raise InputError("example_inputs for save must be tensors")
        d = {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
        if not x.is_floating_point() and x.numel():
            d["low"], d["high"] = int(x.min()), int(x.max()) + 1
        spec.append(d)
    return spec


def _node_record(n: torch.fx.Node) -> dict:
    where = f"node {n.name}"
    if n.op == "call_function":
        target = _qualname(n.target)
    elif n.op in ("call_module", "get_attr"):
        target = str(n.target)
        if not _PATH.match(target):
            raise SaveError(f"{where}: target {target!r} is not a module path")
    elif n.op in ("call_method", "placeholder", "output"):
        target = str(n.target)
    else:
        raise SaveError(f"{where}: unknown op {n.op!r}")
    rec = {"op": n.op, "name": n.name, "target": target,
           "args": _enc(tuple(n.args), where), "kwargs": _enc(dict(n.kwargs), where)}
    stack = n.meta.get("nn_module_stack")
    if stack:
        rec["nn_module_stack"] = [
            [str(k), str(v[0]) if isinstance(v, tuple) else str(v),
             (_type_name(v[1]) if isinstance(v, tuple) and len(v) > 1 else "")]
            for k, v in stack.items()]
    return rec


def _type_name(t: Any) -> str:
    if isinstance(t, type):
        return f"{t.__module__}.{t.__qualname__}"
    return str(t)


def _describe(gm: torch.fx.GraphModule) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors to store) of a GraphModule."""
    leaves = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    modules = []
    for path, m in gm.named_modules(remove_duplicate=False):
        if not path:
            continue
        if not _PATH.match(path):
            raise SaveError(f"module path {path!r} cannot be saved")
        inside = any(path.startswith(leaf + ".") for leaf in leaves)
        container = not inside and path not in leaves  # rebuilt as a plain nn.Module
        rec = _module_record(path, m, container)
        rec["role"] = "leaf" if path in leaves else "child" if inside else "container"
        modules.append(rec)

    tensors: dict[str, torch.Tensor] = {}
    records: dict[str, dict] = {}
    key_of: dict[int, str] = {}
    storages: set = set()

    def add(name: str, t: torch.Tensor, kind: str, **extra) -> None:
        if not _PATH.match(name):
            raise SaveError(f"tensor name {name!r} cannot be saved")
        if t.device.type == "meta" or type(t).__name__ == "FakeTensor":
            raise SaveError(f"tensor {name} has no data (device {t.device})")
        key = key_of.get(id(t))
        if key is None:
            key = key_of[id(t)] = name
            data = t.detach()
            if data.device.type != "cpu":
                data = data.cpu()
            ptr = (data.untyped_storage().data_ptr(), data.untyped_storage().nbytes())
            if ptr in storages or not data.is_contiguous():
                data = data.contiguous().clone()
            storages.add(ptr)
            tensors[key] = data
        records[name] = {"kind": kind, "key": key, **extra}

    for path, m in gm.named_modules(remove_duplicate=False):
        prefix = f"{path}." if path else ""
        for k, p in m._parameters.items():
            if p is not None:
                add(prefix + k, p, "parameter", requires_grad=bool(p.requires_grad))
        for k, b in m._buffers.items():
            if b is not None:
                add(prefix + k, b, "buffer", persistent=k not in m._non_persistent_buffers_set)
    for n in gm.graph.nodes:
        if n.op == "get_attr" and n.target not in records:
            obj = gm
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor):
                add(str(n.target), obj, "constant")
            elif not isinstance(obj, torch.nn.Module):
                raise SaveError(f"node {n.name} reads {n.target!r}, a {type(obj).__name__}; only "
                                f"tensors and modules can be saved")

    codegen = None
    cg = gm.graph._codegen
    if type(cg).__name__ == "_PyTreeCodeGen":
        from torch.utils._pytree import treespec_dumps
        info = cg.pytree_info
        codegen = {"orig_args": list(info.orig_args),
                   "in_spec": treespec_dumps(info.in_spec) if info.in_spec is not None else None,
                   "out_spec": treespec_dumps(info.out_spec) if info.out_spec is not None
                   else None}
    elif type(cg) is not torch.fx.graph.CodeGen:
        raise SaveError(f"the graph uses a custom code generator ({type(cg).__name__})")

    meta = {}
    if "fxgrow_frontend" in gm.meta:
        meta["fxgrow_frontend"] = str(gm.meta["fxgrow_frontend"])
    if gm.meta.get("fxgrow_output_positions") is not None:
        meta["fxgrow_output_positions"] = [
            [None if p is None else [int(i) for i in p.tolist()] for p in per]
            for per in gm.meta["fxgrow_output_positions"]]
    # the expansion record, for fxgrow.transfer_optimizer (format: fxgrow/training/record.py)
    from .training import record
    if gm.meta.get(record.KEY):
        meta[record.KEY] = record.encode(gm.meta[record.KEY])
    from . import __version__
    desc = {"format": FORMAT, "version": VERSION, "fxgrow": __version__,
            "torch": torch.__version__, "class_name": type(gm).__name__,
            "training": gm.training, "graph": [_node_record(n) for n in gm.graph.nodes],
            "modules": modules, "tensors": records, "codegen": codegen, "meta": meta}
    return desc, tensors


def save(model: torch.nn.Module, path: str | os.PathLike, *, example_inputs: Any = None,
         verify: bool = True) -> Path:
    """Save a GraphModule (what ``fxgrow.widen``/``deepen``/``grow`` return) to one
    ``.safetensors`` file that ``fxgrow.load`` rebuilds without pickle.

    ``example_inputs`` (optional) are recorded by shape and dtype (the CLI reuses them) and,
    with ``verify`` (default), the file is loaded back and must give bit-identical outputs on
    them.  For any other module, save ``model.state_dict()`` (e.g. with
    ``safetensors.torch.save_file``)."""
    if not isinstance(model, torch.fx.GraphModule):
        raise InputError(f"fxgrow.save takes a torch.fx.GraphModule (what fxgrow.widen/deepen/"
                         f"grow return), got {type(model).__name__}; for other modules save "
                         f"model.state_dict() (safetensors.torch.save_file)")
    from safetensors.torch import save_file
    path = Path(path)
    desc, tensors = _describe(model)
    desc["inputs"] = _input_spec(example_inputs)
    try:
        save_file(tensors, str(path), metadata={"format": "pt", "fxgrow": json.dumps(desc)})
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from e
    if verify and example_inputs is not None:
        _check_round_trip(model, path, example_inputs)
    return path


def _check_round_trip(model: torch.nn.Module, path: Path, example_inputs: Any) -> None:
    from torch.utils import _pytree as pytree
    from .modes import preserved
    xs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    loaded = load(path)
    with preserved(model), torch.no_grad():
        model.eval()
        loaded.eval()
        a = [t for t in pytree.tree_leaves(model(*xs)) if isinstance(t, torch.Tensor)]
        b = [t for t in pytree.tree_leaves(loaded(*xs)) if isinstance(t, torch.Tensor)]
    if len(a) != len(b) or any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(a, b)):
        raise SaveError(f"{path.name} was written, but the model loaded back from it does not "
                        f"give the same outputs; a module's state is not captured by its "
                        f"constructor arguments and attributes. Save student.state_dict() "
                        f"instead (and please report the model)")


# -- load ------------------------------------------------------------------------------------------

def info(path: str | os.PathLike) -> dict:
    """The metadata fxgrow stored in a saved file (format, versions, class name, inputs...)."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise LoadError(f"{path.name} is not a safetensors file: {e}") from e
    raw = meta.get("fxgrow")
    if raw is None:
        raise LoadError(f"{path.name} is a safetensors file without fxgrow's graph (plain "
                        f"weights?): load it with safetensors.torch.load_file and "
                        f"model.load_state_dict")
    try:
        desc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise LoadError(f"{path.name}: fxgrow metadata is not valid JSON ({e})") from e
    if desc.get("format") != FORMAT:
        raise LoadError(f"{path.name}: unknown format {desc.get('format')!r}")
    if desc.get("version", 0) > VERSION:
        raise LoadError(f"{path.name} was written by a newer fxgrow (format version "
                        f"{desc.get('version')}); upgrade fxgrow")
    return desc


def example_inputs(path: str | os.PathLike, seed: int = 0) -> tuple | None:
    """Random inputs of the shapes and dtypes recorded by ``save(..., example_inputs=...)``,
    or None if none were recorded."""
    spec = info(path).get("inputs") or []
    if not spec:
        return None
    g = torch.Generator().manual_seed(seed)
    out = []
    for d in spec:
        dtype = getattr(torch, d["dtype"])
        shape = tuple(int(n) for n in d["shape"])
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=g, dtype=dtype))
        else:
            out.append(torch.randint(int(d.get("low", 0)), int(d.get("high", 2)), shape,
                                     generator=g, dtype=dtype))
    return tuple(out)


def _construct(rec: dict, trusted: tuple) -> torch.nn.Module:
    cls = _resolve(rec["class"], trusted)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise LoadError(f"{rec['class']} is not a torch.nn.Module class")
    kwargs = {k: _dec(v, None, trusted) for k, v in rec.get("kwargs", {}).items()}
    try:
        with torch.device("meta"):
            m = cls(**kwargs)
    except Exception:
        try:
            m = cls(**kwargs)
        except Exception as e:
            raise LoadError(f"cannot rebuild module {rec['path']} ({rec['class']}) from "
                            f"{kwargs}: {type(e).__name__}: {e}") from e
    return m


def _finish(m: torch.nn.Module, rec: dict, trusted: tuple) -> None:
    for k, v in rec.get("attrs", {}).items():
        if not _IDENT.match(k):
            raise LoadError(f"malformed attribute name {k!r}")
        value = _dec(v, None, trusted)
        if k in m._modules or k in m._parameters or k in m._buffers:
            continue
        object.__setattr__(m, k, value)
    m.training = bool(rec.get("training", False))


def _child(root: torch.nn.Module, path: str, create: bool) -> torch.nn.Module:
    m = root
    for part in path.split(".") if path else []:
        nxt = m._modules.get(part)
        if nxt is None:
            if not create:
                raise LoadError(f"module {path} is missing")
            nxt = torch.nn.Module()
            m.add_module(part, nxt)
        m = nxt
    return m


def load(path: str | os.PathLike, *, trusted: Iterable[str] = (),
         device: str | torch.device | None = None) -> torch.fx.GraphModule:
    """Rebuild the GraphModule that ``fxgrow.save`` wrote (see the module docs for the trust
    model).  ``trusted`` names further top-level packages whose functions and module classes the
    file may use; ``device`` is where the tensors go (default: CPU)."""
    from safetensors import safe_open
    from torch.utils._pytree import treespec_loads
    path = Path(path)
    desc = info(path)
    trusted = tuple(dict.fromkeys((*TRUSTED, *trusted)))
    dev = str(device) if device is not None else "cpu"

    root = torch.nn.Module()
    built: dict[str, torch.nn.Module] = {}
    records = sorted(desc["modules"], key=lambda r: r["path"].count("."))
    for rec in records:
        p = rec["path"]
        if not _PATH.match(p):
            raise LoadError(f"malformed module path {p!r}")
        parent_path, _, name = p.rpartition(".")
        if rec["role"] == "child":
            continue
        parent = _child(root, parent_path, create=True)
        if rec["role"] == "container":
            m = parent._modules.get(name) or torch.nn.Module()
            m.training = bool(rec.get("training", False))
        else:
            m = _construct(rec, trusted)
        parent._modules[name] = m
        built[p] = m
    for rec in records:  # children of leaf modules: fix what the constructor made differently
        if rec["role"] != "child":
            continue
        parent_path, _, name = rec["path"].rpartition(".")
        parent = _child(root, parent_path, create=False)
        have = parent._modules.get(name)
        if rec["class"] is None:
            continue
        if have is None or _qualname(type(have)) != rec["class"] or \
                {k: _enc(v, "") for k, v in _ctor_kwargs(have).items()} != rec.get("kwargs", {}):
            parent._modules[name] = _construct(rec, trusted)
    for rec in records:
        if rec["class"] is not None:
            _finish(_child(root, rec["path"], create=False), rec, trusted)

    with safe_open(str(path), framework="pt", device=dev) as f:
        keys = set(f.keys())
        cache: dict[str, torch.Tensor] = {}
        params: dict[str, torch.nn.Parameter] = {}
        for name, t in desc["tensors"].items():
            if not _PATH.match(name):
                raise LoadError(f"malformed tensor name {name!r}")
            key = t["key"]
            if key not in keys:
                raise LoadError(f"{path.name} lacks tensor {key!r}")
            if key not in cache:  # a fresh, aligned copy: kernels may round differently on
                cache[key] = f.get_tensor(key).clone()  # unaligned memory
            owner_path, _, leaf = name.rpartition(".")
            owner = _child(root, owner_path, create=True)
            for store in (owner._parameters, owner._buffers):
                store.pop(leaf, None)
            if leaf in owner.__dict__:
                del owner.__dict__[leaf]
            if t["kind"] == "parameter":
                p = params.get(key)
                if p is None:
                    p = params[key] = torch.nn.Parameter(cache[key],
                                                         requires_grad=t.get("requires_grad", True))
                owner._parameters[leaf] = p
            elif t["kind"] == "buffer":
                owner.register_buffer(leaf, cache[key], persistent=t.get("persistent", True))
            elif t["kind"] == "constant":
                object.__setattr__(owner, leaf, cache[key])
            else:
                raise LoadError(f"unknown tensor kind {t['kind']!r}")
    for name, t in list(root.named_parameters()) + list(root.named_buffers()):
        if t.device.type == "meta":
            raise LoadError(f"{path.name} has no data for {name}; the module that owns it was "
                            f"built with a tensor the saved model did not have")

    graph = torch.fx.Graph()
    env: dict[str, torch.fx.Node] = {}
    for rec in desc["graph"]:
        op, name, target = rec["op"], rec["name"], rec["target"]
        if not _IDENT.match(name):
            raise LoadError(f"malformed node name {name!r}")
        if op == "call_function":
            target = _resolve(target, trusted)
            if not callable(target):
                raise LoadError(f"node {name}: {rec['target']} is not callable")
        elif op in ("call_module", "get_attr"):
            if not _PATH.match(target):
                raise LoadError(f"node {name}: malformed target {target!r}")
        elif op in ("call_method", "placeholder"):
            if not _IDENT.match(target):
                raise LoadError(f"node {name}: malformed target {target!r}")
        elif op != "output":
            raise LoadError(f"node {name}: unknown op {op!r}")
        args = _dec(rec["args"], env, trusted)
        kwargs = _dec(rec["kwargs"], env, trusted)
        if op == "call_function" and target is builtins.getattr and len(args) > 1 and \
                isinstance(args[1], str) and args[1].startswith("_"):
            raise LoadError(f"node {name} reads the private attribute {args[1]!r}")
        node = graph.create_node(op, target, tuple(args), dict(kwargs), name=name)
        if node.name != name:
            raise LoadError(f"duplicate node name {name!r}")
        if "nn_module_stack" in rec:
            node.meta["nn_module_stack"] = {k: (p, t) for k, p, t in rec["nn_module_stack"]}
        env[name] = node
    if desc.get("codegen"):
        from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo
        cg = desc["codegen"]
        for spec in (cg.get("in_spec"), cg.get("out_spec")):
            _import_spec_types(spec, trusted)
        graph._codegen = _PyTreeCodeGen(_PyTreeInfo(
            list(cg["orig_args"]),
            treespec_loads(cg["in_spec"]) if cg.get("in_spec") else None,
            treespec_loads(cg["out_spec"]) if cg.get("out_spec") else None))

    gm = torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph(), desc.get("class_name") or
                              "GraphModule")
    for name, m in root._modules.items():
        gm._modules[name] = m
    for name, p in root._parameters.items():
        gm._parameters[name] = p
    for name, b in root._buffers.items():
        gm._buffers[name] = b
    gm._non_persistent_buffers_set |= root._non_persistent_buffers_set
    for k, v in vars(root).items():
        if isinstance(v, torch.Tensor):
            object.__setattr__(gm, k, v)
    try:
        gm.graph = graph
    except Exception as e:
        raise LoadError(f"{path.name}: the stored graph does not compile: {e}") from e
    gm.training = bool(desc.get("training", False))
    meta = desc.get("meta") or {}
    if "fxgrow_frontend" in meta:
        gm.meta["fxgrow_frontend"] = meta["fxgrow_frontend"]
    if meta.get("fxgrow_output_positions") is not None:
        gm.meta["fxgrow_output_positions"] = [
            [None if p is None else torch.tensor(p, dtype=torch.long) for p in per]
            for per in meta["fxgrow_output_positions"]]
    from .training import record  # the expansion record (fxgrow/training/record.py)
    if meta.get(record.KEY):
        gm.meta[record.KEY] = record.decode(meta[record.KEY])
    return gm


def _import_spec_types(spec: str | None, trusted: tuple) -> None:
    """Import the modules that register the pytree types a treespec names (ModelOutput ...)."""
    if not spec:
        return
    for name in set(re.findall(r'"type": "([A-Za-z0-9_.]+)"', spec)):
        mod = name.rpartition(".")[0]
        if mod and mod.split(".")[0] in trusted:
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
