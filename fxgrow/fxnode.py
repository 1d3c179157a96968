"""Typed views of torch.fx node fields whose annotations are wider than what an op stores.

``Node.target`` is annotated ``Target`` (a callable or a str) and each of ``Node.args``
``Argument`` (any fx value).  A ``call_module``/``get_attr``/``call_method`` node's target is a
str (the qualified name, or the method's name), and a tensor operand is a node; the type checker
cannot see either, so these helpers say it once.  They change nothing at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch.fx


def target_name(node: torch.fx.Node) -> str:
    """The str target of a ``call_module``/``get_attr``/``call_method`` node."""
    # torch.fx stores a str for these ops; ``Node.target`` is typed for every op
    return cast(str, node.target)


def target_function(node: torch.fx.Node) -> Callable[..., Any]:
    """The callable target of a ``call_function`` node."""
    # torch.fx stores the function itself for this op
    return cast(Callable[..., Any], node.target)


def node_arg(node: torch.fx.Node, index: int) -> torch.fx.Node:
    """``node.args[index]``, a tensor operand the caller knows to be a node."""
    # fx records a tensor operand as the node that produces it
    return cast(torch.fx.Node, node.args[index])


def owner(node: torch.fx.Node) -> torch.fx.GraphModule:
    """The GraphModule whose graph holds ``node``."""
    # every graph fxgrow walks is a GraphModule's (``Graph.owning_module`` is None only for a
    # free-standing graph)
    return cast(torch.fx.GraphModule, node.graph.owning_module)
