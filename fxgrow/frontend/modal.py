"""Train/eval-aware graphs from ``torch.export``.

``torch.export`` bakes the model's mode into the graph: ``aten.dropout(x, p, train)`` carries
``train`` as a constant, ``scaled_dot_product_attention`` carries ``dropout_p`` (``p`` captured in
training mode, absent in eval mode), and ``ExportedProgram.module()`` refuses ``.train()`` and
``.eval()``.  :func:`make_modal` undoes that for dropout, the one op whose mode matters in
Hugging Face transformers:

* every ``aten.dropout`` / ``aten.feature_dropout`` / ``aten.alpha_dropout`` node (export) and
  every ``F.dropout`` / ``F.dropout2d`` / ... call (fx tracing bakes ``training=self.training``
  too) becomes a call to an ``nn.Dropout`` (``Dropout2d``, ``AlphaDropout``) module of the
  captured ``p``, placed at the path of the module that called it
  (``transformer.h.0.mlp.dropout``) or next to it.  A dropout written with a constant
  ``training=False`` cannot be told from one that read ``self.training`` in eval mode: it
  becomes mode-aware too;
* an attention node captured with ``dropout_p > 0`` reads its ``dropout_p`` from a
  :class:`TrainingOnly` module (``p`` in training mode, ``0.0`` in eval mode);
* torchvision's ``stochastic_depth(x, p, mode, training)`` (fx bakes ``training`` too) reads
  ``training`` from a :class:`TrainingFlag` module;
* ``aten.batch_norm`` with running statistics (an exported ``nn.BatchNorm*``) reads its
  ``training`` from a :class:`TrainingFlag` too: batch statistics (and running-statistics
  updates) in training mode, the running statistics in eval mode.  The count of batches seen
  (``num_batches_tracked += 1``) stays as captured: it matters only to ``momentum=None``;
* ``.train()`` / ``.eval()`` work again and set those modules' flags.

Invariant: in eval mode the graph computes the teacher's eval function whatever mode it was
captured in; in training mode dropout is active and resampled on every call, batch norm uses
batch statistics.  Other ``self.training`` branches of the model's code (router noise, a batch
count) stay as captured; the growth record's ``captured_training`` is the mode of the capture."""

from __future__ import annotations

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from ..analysis.arguments import argument, bound_arguments, with_argument
from ..analysis.rules.registry import has_trait, module_for
from ..growth import update_growth_record
from ..unique import unique_name

_SDPA = (torch.ops.aten.scaled_dot_product_attention.default, F.scaled_dot_product_attention)


class TrainingOnly(nn.Module):
    """A number that is ``p`` in training mode and ``0.0`` in eval mode (an attention's
    ``dropout_p``)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self) -> float:
        """``p`` in training mode, 0.0 in eval mode."""
        return self.p if self.training else 0.0

    def extra_repr(self) -> str:
        """Shows ``p`` in the module's repr."""
        return f"p={self.p}"


class TrainingFlag(nn.Module):
    """The module's own training flag, as a value (the ``training`` argument of
    ``torchvision.ops.stochastic_depth``)."""

    def forward(self) -> bool:
        """The module's ``training`` flag."""
        return self.training


def _stochastic_depth() -> object:
    try:
        from torchvision.ops import stochastic_depth
    except ImportError:  # torchvision is optional
        return None
    return stochastic_depth


def _free_path(gm: torch.fx.GraphModule, node: torch.fx.Node, suffix: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    owner = list(stack.values())[-1][0] if stack else ""
    owner = owner if all(p.isidentifier() or p.isdigit() for p in owner.split(".") if p) else ""
    candidates = ([owner] if owner else []) + [f"{owner}.{suffix}" if owner else suffix]
    for path in candidates[:-1]:
        if not _taken(gm, path):
            return path
    return unique_name(candidates[-1], lambda p: _taken(gm, p), start=1, bare=True)


def _taken(gm: torch.fx.GraphModule, path: str) -> bool:
    try:
        gm.get_submodule(path)
        return True
    except AttributeError:
        pass
    parent, _, leaf = path.rpartition(".")
    try:
        owner = gm.get_submodule(parent) if parent else gm
    except AttributeError:
        return False
    return hasattr(owner, leaf)


def _dropout_kind(node: torch.fx.Node) -> tuple[type, float] | None:
    """(module class, p) of a dropout call whose rate and mode are constants, else None: the
    class its rule names (``as_module``); ``torch.dropout`` and the ATen overloads call the
    mode ``train``, the functions ``training``."""
    if not has_trait(node.target, "dropout"):
        return None
    cls = module_for(node.target)
    if cls is None:
        return None
    bound = bound_arguments(node)
    p = argument(node, 1, "p", 0.5, bound=bound)
    train = argument(node, 2, "training", None, bound=bound)
    train = argument(node, 2, "train", True, bound=bound) if train is None else train
    if argument(node, 3, "inplace", False, bound=bound):
        return None  # an in-place dropout's input is reused: leave it as captured
    if not isinstance(p, (int, float)) or not isinstance(train, bool):
        return None
    return cls, float(p)


def _reads_flag(
    gm: torch.fx.GraphModule,
    node: torch.fx.Node,
    index: int,
    captured: object,
    new_modules: list[nn.Module],
) -> bool:
    """Make ``node``'s ``training`` argument (position ``index``) read a new
    :class:`TrainingFlag` instead of the constant ``captured``; False (nothing done) when the
    argument is not a captured constant."""
    if not isinstance(captured, bool):
        return False
    path = _free_path(gm, node, "training_flag")
    new_modules.append(TrainingFlag())
    gm.add_submodule(path, new_modules[-1])
    with gm.graph.inserting_before(node):
        flag = gm.graph.call_module(path, ())
    flag.meta = {k: v for k, v in node.meta.items() if k == "nn_module_stack"}
    flag.meta["val"] = captured
    node.args, node.kwargs = with_argument(node.args, node.kwargs, index, "training", flag)
    return True


def make_modal(gm: torch.fx.GraphModule, training: bool) -> torch.fx.GraphModule:
    """Make ``gm`` (``ExportedProgram.module()``) follow ``.train()`` / ``.eval()`` for dropout;
    it is left in mode ``training``.  Returns ``gm``, changed in place."""
    changed = False
    new_modules: list[nn.Module] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        kind = _dropout_kind(node)
        if kind is not None:
            x, p = argument(node, 0, "input"), kind[1]
            path = _free_path(gm, node, "dropout")
            new_modules.append(kind[0](p))
            gm.add_submodule(path, new_modules[-1])
            with gm.graph.inserting_before(node):
                new = gm.graph.call_module(path, (x,))
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            changed = True
        elif node.target is _stochastic_depth() and node.target is not None:
            if _reads_flag(gm, node, 3, argument(node, 3, "training", True), new_modules):
                changed = True
        elif node.target is torch.ops.aten.batch_norm.default and isinstance(
            argument(node, 3, "running_mean", None), torch.fx.Node
        ):
            # nn.BatchNorm with running statistics: batch statistics exactly when training
            if _reads_flag(gm, node, 5, argument(node, 5, "training", False), new_modules):
                changed = True
        elif node.target in _SDPA:
            p = argument(node, 4, "dropout_p", 0.0)
            if isinstance(p, (int, float)) and p > 0:
                path = _free_path(gm, node, "attention_dropout")
                new_modules.append(TrainingOnly(p))
                gm.add_submodule(path, new_modules[-1])
                with gm.graph.inserting_before(node):
                    rate = gm.graph.call_module(path, ())
                rate.meta = {k: v for k, v in node.meta.items() if k == "nn_module_stack"}
                rate.meta["val"] = float(p)
                node.args, node.kwargs = with_argument(node.args, node.kwargs, 4, "dropout_p", rate)
                changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    for name in ("train", "eval"):  # ExportedProgram.module() disables them per instance
        gm.__dict__.pop(name, None)
    for m in new_modules:  # only these: an fx graph shares the model's own modules
        m.training = training
    gm.training = training
    update_growth_record(gm, captured_training=training)
    return gm
