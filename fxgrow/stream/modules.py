"""Layer-streamed run of a model built on the meta device, without capturing it: each module's
own parameters are read from the checkpoint right before its ``forward`` and dropped right
after it.

Invariant: ``run_modules(model, ckpt, inputs)`` computes what ``model`` with the checkpoint's
tensors computes (its own Python code runs, every layer of it), holding at most the parameters
of the modules being called at once; when the model touches a parameter outside its module's
call, the run fails (a meta tensor reaches a CPU op or the output) instead of answering.  No
``torch.export`` is involved, so a run costs the compute and the reads only: this is the
verification of Hugging Face folders (``grow_checkpoint``), where the model class is known."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch.utils import _pytree as pytree

from ..errors import PreservationError
from .buffers import Buffers, alone
from .checkpoint import Checkpoint


def _streamed(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module._parameters`` as the hooks use it: the streamed leaves are tensors, plain
    ones (no Parameter) while the call runs."""
    # torch types the table for Parameters (or None); only its non-None leaves are streamed
    return cast(dict[str, torch.Tensor], module._parameters)


class ModuleStream:
    """Hooks on every module that owns parameters: ``forward`` sees them read from ``ckpt`` (in
    ``dtype`` when floating, in memory that earlier calls released: ``buffers``) and the meta
    ones are put back when it returns.  ``aliases`` maps a parameter's name to the checkpoint
    name holding it (tied weights stored once)."""

    def __init__(
        self,
        model: torch.nn.Module,
        ckpt: Checkpoint,
        *,
        dtype: torch.dtype,
        aliases: dict[str, str] | None = None,
    ) -> None:
        self.ckpt, self.dtype, self.aliases = ckpt, dtype, aliases or {}
        self.live = self.peak_param_bytes = 0
        self.loaded: list[str] = []
        self._hooks: list[Any] = []
        self._touched: list[torch.nn.Module] = []
        self._buffers = Buffers()  # the weights' memory, reused from call to call
        for prefix, module in model.named_modules():
            own = [n for n, p in module._parameters.items() if p is not None]
            if own:
                names = {n: f"{prefix}.{n}" if prefix else n for n in own}
                self._hooks.append(module.register_forward_pre_hook(self._pre(names)))
                self._hooks.append(module.register_forward_hook(self._post(names)))

    def _pre(self, names: dict[str, str]):
        def hook(module: torch.nn.Module, args: Any) -> None:
            saved = {}
            params = _streamed(module)
            for leaf, full in names.items():
                stored = self.aliases.get(full, full)
                if stored not in self.ckpt.tensors:
                    raise PreservationError(f"{full!r} is not in the checkpoint {self.ckpt.path}")
                t = self._read(stored)
                saved[leaf] = params[leaf]
                params[leaf] = t  # a plain tensor: no autograd, no copy
                self.live += t.numel() * t.element_size()
                self.loaded.append(stored)
            self.peak_param_bytes = max(self.peak_param_bytes, self.live)
            module.__dict__.setdefault("_fxgrow_saved", []).append(saved)
            self._touched.append(module)

        return hook

    def _post(self, names: dict[str, str]):
        def hook(module: torch.nn.Module, args: Any, out: Any) -> None:
            params = _streamed(module)
            for leaf, p in module.__dict__["_fxgrow_saved"].pop().items():
                t = params[leaf]
                params[leaf] = p
                self.live -= t.numel() * t.element_size()
                if t.dtype == self.dtype and alone(t):
                    self._buffers.give(t)

        return hook

    def _read(self, name: str) -> torch.Tensor:
        """Stored tensor ``name``; floating ones in ``dtype``, in reused memory."""
        info = self.ckpt.tensors[name]
        if not info.torch_dtype.is_floating_point:
            return self.ckpt.read(name)
        t = self._buffers.take(self.dtype, info.shape)
        if info.torch_dtype == self.dtype:
            self.ckpt.read(name, out=t.reshape(-1).view(torch.uint8))
        else:
            t.copy_(self.ckpt.read(name, out=self._buffers.staging(info.nbytes)))
        return t

    def close(self) -> None:
        """Remove the hooks; a call that raised gets its meta parameters back too."""
        for module in self._touched:
            for saved in reversed(module.__dict__.pop("_fxgrow_saved", [])):
                module._parameters.update(saved)
        self._touched.clear()
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._buffers.clear()

    def __enter__(self) -> ModuleStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_modules(
    model: torch.nn.Module,
    ckpt: Checkpoint,
    inputs: tuple,
    *,
    dtype: torch.dtype = torch.float32,
    aliases: dict[str, str] | None = None,
) -> tuple[Any, int]:
    """Outputs of the meta-device ``model`` on ``inputs`` with its weights from ``ckpt``, and
    the most parameter bytes held at once."""
    with ModuleStream(model, ckpt, dtype=dtype, aliases=aliases) as run, torch.no_grad():
        out = model(*inputs)
    leaves = [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]
    if not leaves or any(x.is_meta for x in leaves):
        raise PreservationError(
            f"{type(model).__name__} read a parameter outside its module's "
            f"call: its output is on the meta device"
        )
    return out, run.peak_param_bytes
