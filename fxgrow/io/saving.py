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
The weights are plain safetensors (``safetensors.torch.load_file`` reads them from any file).
``load`` (:mod:`fxgrow.io.loading`) never unpickles, resolves every name through the allowlist of
:mod:`fxgrow.io.trust`, builds modules on the meta device and checks every tensor against what the
file and the module declare; see docs/guide.md, "Threat model".
"""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any

import torch
import torch.fx

from ..errors import InputError, LoadError, SaveError
from ..optional import instance_of
from .codec import _PATH, _dec, _enc, _import, _qualname  # noqa: F401
from .header import FORMAT, VERSION
from .records import _attrs, _ctor_kwargs, _module_record  # noqa: F401

# -- save ------------------------------------------------------------------------------------------


def _input_spec(example_inputs: Any) -> list:
    if example_inputs is None:
        return []
    xs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    spec = []
    for x in xs:
        if not isinstance(x, torch.Tensor):
            raise InputError("example_inputs for save must be tensors")
        d: dict[str, Any] = {"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")}
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
    rec = {
        "op": n.op,
        "name": n.name,
        "target": target,
        "args": _enc(tuple(n.args), where),
        "kwargs": _enc(dict(n.kwargs), where),
    }
    stack = n.meta.get("nn_module_stack")
    if stack:
        rec["nn_module_stack"] = [
            [
                str(k),
                str(v[0]) if isinstance(v, tuple) else str(v),
                (_type_name(v[1]) if isinstance(v, tuple) and len(v) > 1 else ""),
            ]
            for k, v in stack.items()
        ]
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
        if t.device.type == "meta" or instance_of(t, "torch._subclasses.fake_tensor", "FakeTensor"):
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
        records[name] = {
            "kind": kind,
            "key": key,
            "shape": list(t.shape),
            "dtype": str(t.dtype).removeprefix("torch."),
            **extra,
        }

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
            obj = operator.attrgetter(str(n.target))(gm)
            if isinstance(obj, torch.Tensor):
                add(str(n.target), obj, "constant")
            elif not isinstance(obj, torch.nn.Module):
                raise SaveError(
                    f"node {n.name} reads {n.target!r}, a {type(obj).__name__}; only "
                    f"tensors and modules can be saved"
                )

    codegen = None
    cg = gm.graph._codegen
    if type(cg) is torch.fx.graph._PyTreeCodeGen:
        from torch.utils._pytree import treespec_dumps

        info = cg.pytree_info
        codegen = {
            "orig_args": list(info.orig_args),
            "in_spec": treespec_dumps(info.in_spec) if info.in_spec is not None else None,
            "out_spec": treespec_dumps(info.out_spec) if info.out_spec is not None else None,
        }
    elif type(cg) is not torch.fx.graph.CodeGen:
        raise SaveError(f"the graph uses a custom code generator ({type(cg).__name__})")

    # the growth record whole (format: fxgrow/io/growth_codec.py): transfer_optimizer reads it
    from ..growth import growth_record
    from .growth_codec import encode

    record = growth_record(gm)
    meta = {"growth": encode(record)} if record is not None else {}
    from .. import __version__

    desc = {
        "format": FORMAT,
        "version": VERSION,
        "fxgrow": __version__,
        "torch": torch.__version__,
        "class_name": type(gm).__name__,
        "training": gm.training,
        "graph": [_node_record(n) for n in gm.graph.nodes],
        "modules": modules,
        "tensors": records,
        "codegen": codegen,
        "meta": meta,
    }
    return desc, tensors


def fingerprint(model: torch.nn.Module) -> str:
    """What identifies a model's architecture: a hash of its state_dict's names, shapes and
    dtypes (not the values: the same spec with another seed has the same fingerprint; not the
    class: a model and its traced GraphModule share it)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()[:16]


def save(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    example_inputs: Any = None,
    verify: bool = True,
    teacher: torch.nn.Module | None = None,
) -> Path:
    """Save a GraphModule (what ``fxgrow.widen``/``deepen``/``grow`` return) to one
    ``.safetensors`` file that ``fxgrow.load`` rebuilds without pickle.

    ``example_inputs`` (optional) are recorded by shape and dtype (the CLI reuses them) and,
    with ``verify`` (default), the file is loaded back and must give bit-identical outputs on
    them.  For any other module, save ``model.state_dict()`` (e.g. with
    ``safetensors.torch.save_file``).  ``teacher`` (optional) records the fingerprint of the
    model this one was grown from (``fxgrow draw TEACHER --student FILE`` checks it).

    A Hugging Face student (the teacher's own class) is written as a Hugging Face folder at
    ``path`` with its growth record (``fxgrow.hf.saving``)."""
    from ..hf.student import is_pretrained

    if is_pretrained(model):
        from ..hf.saving import save_student

        return save_student(
            model, path, example_inputs=example_inputs, verify=verify, teacher=teacher
        )
    if not isinstance(model, torch.fx.GraphModule):
        raise InputError(
            f"fxgrow.save takes a torch.fx.GraphModule (what fxgrow.widen/deepen/"
            f"grow return), got {type(model).__name__}; for other modules save "
            f"model.state_dict() (safetensors.torch.save_file)"
        )
    from safetensors.torch import save_file

    path = Path(path)
    desc, tensors = _describe(model)
    desc["inputs"] = _input_spec(example_inputs)
    if teacher is not None:
        desc["teacher"] = {"fingerprint": fingerprint(teacher)}
    try:
        save_file(tensors, str(path), metadata={"format": "pt", "fxgrow": json.dumps(desc)})
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from e
    if verify and example_inputs is not None:
        _check_round_trip(model, path, example_inputs)
    return path


def _check_round_trip(model: torch.nn.Module, path: Path, example_inputs: Any) -> None:
    from torch.utils import _pytree as pytree

    from ..modes import preserved
    from .loading import load

    xs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    try:
        loaded = load(path)
    except LoadError as e:
        raise SaveError(
            f"{path.name} was written, but fxgrow.load refuses it by default: {e}. "
            f"Whoever loads it must trust that name (trusted=... / --trust); or "
            f"save student.state_dict() instead"
        ) from e
    with preserved(model), torch.no_grad():
        model.eval()
        loaded.eval()
        a = [t for t in pytree.tree_leaves(model(*xs)) if isinstance(t, torch.Tensor)]
        b = [t for t in pytree.tree_leaves(loaded(*xs)) if isinstance(t, torch.Tensor)]
    if len(a) != len(b) or any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(a, b)):
        raise SaveError(
            f"{path.name} was written, but the model loaded back from it does not "
            f"give the same outputs; a module's state is not captured by its "
            f"constructor arguments and attributes. Save student.state_dict() "
            f"instead (and please report the model)"
        )
