"""The text of a drawn node: its op (module class, torch function or aten overload by its public
name), its module path relative to the cluster it sits in, and its output shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx

from ..fxnode import target_name


def shape_text(value: Any) -> str:
    """A short label for a node's example value: ``2×64×8×8``, ``scalar``, ``size``, a tuple of
    up to four, a number's type name; "" for anything else."""
    if isinstance(value, torch.Tensor):
        return "×".join(str(int(n)) for n in value.shape) if value.dim() else "scalar"
    if isinstance(value, torch.Size):
        return "size"
    if isinstance(value, (tuple, list)):
        parts = [t for t in (shape_text(v) for v in value[:4]) if t]
        if len(parts) == 1 and len(value) <= 4:
            return parts[0]
        return "(" + ", ".join(parts) + (", …" if len(value) > 4 else "") + ")"
    if isinstance(value, (int, float, bool, torch.SymInt)):
        return type(value).__name__
    return ""


# ATen ops drawn under the name of the torch function a user wrote
_TORCH_NAMES = {
    "_to_copy": "to",
    "_unsafe_view": "view",
    "mm": "matmul",
    "bmm": "matmul",
    "addmm": "linear",
    "sym_size": "size",
    "native_layer_norm": "layer_norm",
    "_native_batch_norm_legit_no_training": "batch_norm",
    "_native_batch_norm_legit": "batch_norm",
    "native_batch_norm": "batch_norm",
    "convolution": "conv",
    "_softmax": "softmax",
    "_log_softmax": "log_softmax",
    "rsub": "sub",
    "clone": "contiguous",
    "_scaled_dot_product_flash_attention_for_cpu": "scaled_dot_product_attention",
    "_scaled_dot_product_efficient_attention": "scaled_dot_product_attention",
    "_assert_tensor_metadata": "assert",
    "scalar_tensor": "tensor",
    "lift_fresh_copy": "tensor",
}


def torch_name(op: torch._ops.OpOverload) -> str:
    """``aten.add.Tensor`` -> ``add``; ``aten._to_copy.default`` -> ``to``: the name a user
    writes in torch, not the overload's."""
    base = op._schema.name.split("::")[-1]
    return _TORCH_NAMES.get(base, base.lstrip("_"))


def op_text(node: torch.fx.Node, gm: torch.fx.GraphModule) -> tuple[str, str]:
    """(title, subtitle) of an fx node."""
    if node.op == "call_module":
        try:
            kind = type(gm.get_submodule(target_name(node))).__name__
        except AttributeError:
            kind = "module"
        return str(node.target), kind
    if node.op == "call_method":
        return f".{node.target}()", ""
    if node.op == "call_function":
        target = node.target
        name = getattr(target, "__name__", None) or str(target)
        if isinstance(target, torch._ops.OpOverload):
            return torch_name(target), ""
        return name, ""
    if node.op == "placeholder":
        return str(node.target), "input"
    return node.op, ""


def _relative(path: str, ancestors: Sequence[str]) -> str:
    for a in reversed(ancestors):
        if path.startswith(a + "."):
            return path[len(a) + 1 :]
    return path
