"""Recurrent layers: nn.RNN, nn.GRU, nn.LSTM (the module form).

Layer l, direction d: gate pre-activations ``W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` with
``W_ih: [G H, I_l]``, ``W_hh: [G H, H]`` (G = 1, 3, 4 gates for RNN, GRU, LSTM, each a block
of H rows).  The gates combine unit by unit (``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``;
GRU: ``n = tanh(.. + r (W_hn h + b_hn))``, ``h_t = (1 - z) n + z h_{t-1}``).

* Input features I are a fan-in: the columns of ``W_ih`` are consumed (divided by the count).
* Hidden units H: copy rows (k, g(j)) of ``W_ih``, ``W_hh`` and the biases into row (k, j) of
  every gate block k, and divide the columns of ``W_hh`` (and of the next layer's ``W_ih``).
  By induction over t, with h_0 = c_0 = 0, unit j of the student carries unit g(j)'s value:
  its pre-activations are row g(j)'s sums, ``sum_j' W[., g(j')] / c(g(j')) h_{g(j')}`` being
  ``sum_i W[., i] h_i``; the unit-by-unit gate maths then keeps the equality.  Exact.
* One ``hidden_size`` serves every layer and direction: their hidden spaces are one class.
  The output concatenates the directions' hidden units; ``h_n`` / ``c_n`` stack them.

Refused (the rule raises, the spaces block): ``proj_size`` (an LSTM projection), a given
initial state ``hx`` (it would have to be replicated by the caller), packed sequences."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..context import CONSUME, PRODUCE, RuleContext, RuleError
from ..layout import Layout
from ..values import TensorInfo
from .registry import rule

_GATES = {nn.RNN: 1, nn.GRU: 3, nn.LSTM: 4}


def _gate_rows(cx: RuleContext, layout: Layout, gates: int, hidden: Layout) -> None:
    """A [G H] axis of a weight or bias: G gate blocks, each along the hidden space."""
    rows = cx.spaces.merge(cx.fixed(gates, "gate blocks of a recurrent layer"), hidden)
    cx.unify(layout, rows, "gate rows of a recurrent layer")


@rule(nn.RNN, nn.GRU, nn.LSTM)
def recurrent(cx: RuleContext):
    """nn.RNN / GRU / LSTM: see the module docstring."""
    m = cx.module_as(nn.RNNBase)
    if getattr(m, "proj_size", 0):
        raise RuleError("an LSTM with proj_size: the projection is not supported")
    if cx.arg(1, "hx", None) is not None:
        raise RuleError(
            "an initial state hx is given; fxgrow widens recurrent layers that start from zeros"
        )
    x = cx.value(cx.arg(0, "input"))
    if not isinstance(x, TensorInfo):
        raise RuleError("the input is not a plain tensor (packed sequences are not supported)")
    gates = _GATES[type(m)]
    dirs = 2 if m.bidirectional else 1
    layer_in = x.layouts[-1]
    hidden_first: Layout | None = None
    for layer in range(m.num_layers):
        outs = []
        for sfx in ("", "_reverse")[:dirs]:
            hidden = cx.spaces.new(m.hidden_size)
            if hidden_first is None:
                hidden_first = hidden
            else:
                cx.unify(hidden_first, hidden, "one hidden_size for every layer and direction")
            name = f"l{layer}{sfx}"
            w_ih = cx.module_param_required(f"weight_ih_{name}", 0, PRODUCE)
            _gate_rows(cx, w_ih, gates, hidden)
            cols = (
                cx.module_consume(f"weight_ih_{name}", 1, (cx.arg(0), x.ndim - 1))
                if layer == 0
                else cx.module_param_required(f"weight_ih_{name}", 1, CONSUME)
            )
            cx.unify(layer_in, cols, "input features of a recurrent layer")
            w_hh = cx.module_param_required(f"weight_hh_{name}", 0, PRODUCE)
            _gate_rows(cx, w_hh, gates, hidden)
            # h_{t-1} is not a graph node: the divided columns need no activation to compensate
            cx.unify(
                hidden,
                cx.module_param_required(f"weight_hh_{name}", 1, CONSUME),
                "recurrent input of a recurrent layer",
            )
            for b in ("bias_ih", "bias_hh"):
                lay = cx.module_param(f"{b}_{name}", 0, PRODUCE)
                if lay is not None:
                    _gate_rows(cx, lay, gates, hidden)
            outs.append(hidden)
        layer_in = tuple(seg for h in outs for seg in h)
    assert hidden_first is not None  # nn.RNNBase has num_layers >= 1
    cx.size_attr("input_size", x.layouts[-1])
    cx.size_attr("hidden_size", hidden_first)
    out, state = cx.example()
    out_info = TensorInfo(tuple(out.shape), (*x.layouts[:-1], layer_in))
    states = state if isinstance(state, tuple) else (state,)
    infos = tuple(
        TensorInfo(
            tuple(s.shape),
            (*(cx.fixed(n, "layers x directions, batch") for n in s.shape[:-1]), hidden_first),
        )
        for s in states
    )
    if not isinstance(out, torch.Tensor) or any(i.shape[-1] != m.hidden_size for i in infos):
        raise RuleError("unexpected output structure")
    return out_info, (infos if isinstance(state, tuple) else infos[0])
