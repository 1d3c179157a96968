"""Depth growth in Hugging Face numbering: the state dict and config of a deeper HF model.

A student made by inserting zero-output copies of decoder layers (``deepen(kind="block")``,
``grow(blocks=...)``, LLaMA-Pro) is, in HF terms, the same class with more layers: the layers
``model.layers.{i}`` renumbered, each copy's tensors those of the layer it copies with its
output projections zeroed, and the per-layer config lists (``layer_types``) extended with the
copied layer's entry.  HF keys the attention's ``layer_idx`` and the KV cache on the position
in the stack, taken from the config at construction, so a model built from the new config
indexes its cache correctly by construction.

``deeper_state_dict`` is pure: tensors and a config in, tensors and config updates out.  What to
zero comes from the graph (``graph_zero_targets``: the last layer on every residual branch,
the same walk that ``deepen`` uses, which refuses post-norm blocks) or, for the families listed
in ``ZERO_BY_MODEL_TYPE``, from their module names; an unlisted family without ``zero=`` is
refused rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InputError
from .deepen import DeepenError

# module names (relative to a layer) whose output is added to the residual stream, for families
# whose layers are pre-norm (or sandwich-norm with RMSNorm, which maps 0 to 0)
_LLAMA_LIKE = ("self_attn.o_proj", "mlp.down_proj")
ZERO_BY_MODEL_TYPE: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2"),
        _LLAMA_LIKE,
    ),
    "gpt2": ("attn.c_proj", "mlp.c_proj"),
    "gpt_neox": ("attention.dense", "mlp.dense_4h_to_h"),
    "opt": ("self_attn.out_proj", "fc2"),
    "t5": ("SelfAttention.o", "EncDecAttention.o", "DenseReluDense.wo"),
}
# tensors HF gives to the first layer of a stack only (a copy never sits at index 0); with two
# or more teacher layers this is also found from the state dict (tensors not every layer has)
_FIRST_LAYER_ONLY: dict[str, tuple[str, ...]] = {"t5": ("relative_attention_bias",)}
_LAYER_KEY = re.compile(r"^(?P<stack>.+?)\.(?P<index>\d+)\.(?P<rest>.+)$")


def layer_stacks(state_dict: Mapping[str, Any], config: Any) -> dict[str, tuple[str, int]]:
    """The numbered layer stacks of an HF state dict: {prefix: (config field, layer count)},
    e.g. {"model.layers": ("num_hidden_layers", 4)}; T5 has "encoder.block" (``num_layers``)
    and "decoder.block" (``num_decoder_layers``)."""
    counts: dict[str, int] = {}
    for key in state_dict:
        m = _LAYER_KEY.match(key)
        if m:
            counts[m["stack"]] = max(counts.get(m["stack"], 0), int(m["index"]) + 1)
    field = getattr(config, "attribute_map", {}).get("num_hidden_layers", "num_hidden_layers")
    stacks = {}
    for prefix, n in counts.items():
        f = field
        if prefix.split(".")[0] == "decoder" and hasattr(config, "num_decoder_layers"):
            f = "num_decoder_layers"
        if getattr(config, f, None) == n:
            stacks[prefix] = (f, n)
    if not stacks:
        raise InputError(
            f"no numbered layer stack in the state dict matches the config's layer "
            f"count ({field}={getattr(config, field, None)}); is this the state "
            f"dict of a model built from this config?"
        )
    return stacks


def _zero_modules(config: Any, zero: Sequence[str] | None) -> tuple[str, ...]:
    if zero is not None:
        return tuple(zero)
    model_type = getattr(config, "model_type", None)
    if model_type not in ZERO_BY_MODEL_TYPE:
        raise DeepenError(
            f"fxgrow does not know which tensors of a {model_type!r} layer to zero so that a "
            f"copy adds nothing to the residual stream; pass "
            f"zero=graph_zero_targets(model, example_inputs, '<a layer path>'), which finds "
            f"them in the traced graph (and refuses post-norm layers)"
        )
    if model_type == "opt" and not getattr(config, "do_layer_norm_before", True):
        raise DeepenError(
            "this OPT config normalises after the residual add "
            "(do_layer_norm_before=False, a post-norm layer): a zeroed copy "
            "would apply the LayerNorm twice, so it cannot be the identity"
        )
    return ZERO_BY_MODEL_TYPE[model_type]


def _index_compensated(config: Any, rest: str, t: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """``t`` (tensor ``rest`` of teacher layer ``old``, now at index ``new``) with constants
    that HF derives from the layer index compensated: GPT-2 with
    ``scale_attn_by_inverse_layer_idx`` scales attention logits by 1/(index + 1), so the query
    part of ``c_attn`` is multiplied by (new + 1)/(old + 1)."""
    if (
        old == new
        or getattr(config, "model_type", None) != "gpt2"
        or not getattr(config, "scale_attn_by_inverse_layer_idx", False)
        or rest not in ("attn.c_attn.weight", "attn.c_attn.bias")
    ):
        return t
    t = t.detach().clone()
    width = config.n_embd
    with torch.no_grad():
        t[..., :width] *= (new + 1) / (old + 1)  # Conv1D: [in, 3 * width], q first
    return t


def _matches(rest: str, names: Sequence[str]) -> bool:
    """Whether tensor ``rest`` (relative to a layer) is a tensor of one of the ``names``: the
    module path ends with the name, component by component (or names the tensor itself)."""
    module = rest.rpartition(".")[0]
    return any(rest == n or module == n or module.endswith("." + n) for n in names)


def deeper_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config: Any,
    insert_after: Sequence[int] | Mapping[str, Sequence[int]],
    *,
    zero: Sequence[str] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and config updates of the deeper HF model with a zero-output copy of
    layer ``i`` right after layer ``i`` for every ``i`` in ``insert_after``.

    Contract:

    * ``insert_after``: teacher layer indices (0-based, repeats give several copies, ``[n-1]
      * k`` appends ``k`` copies at the end); a sequence applies to every layer stack (T5's
      encoder and decoder), a mapping {stack prefix: indices} to the named stacks only.
    * Result keys: every teacher key outside the stacks unchanged (same tensor objects);
      teacher layer ``i`` becomes layer ``i + (number of copies inserted before it)``; a copy
      is a clone of its layer's tensors with those of ``zero`` set to 0 (weight and bias).
      Tensors only some teacher layers have (T5's ``relative_attention_bias``, in layer 0) stay
      with the original layer and are not copied.
    * ``zero``: module or tensor names relative to a layer (``"self_attn.o_proj"``), as
      ``graph_zero_targets`` returns them; by default ``ZERO_BY_MODEL_TYPE[config.model_type]``,
      and ``DeepenError`` for a family not listed there or a post-norm config.  Each copy must
      zero at least one tensor.
    * Constants HF derives from the layer index are compensated in the weights: GPT-2's
      ``scale_attn_by_inverse_layer_idx`` (the query projection of a layer moved from index
      ``i`` to ``j`` is scaled by (j + 1)/(i + 1)).
    * Config updates: the layer count field (``num_hidden_layers``, GPT-2's ``n_layer``, T5's
      ``num_layers`` / ``num_decoder_layers``) and every config list with one entry per layer
      (``layer_types``: the copy gets its layer's entry).  Apply them with
      ``deeper_config(config, updates)``.

    Then ``type(model)(deeper_config(config, updates)).load_state_dict(sd, strict=True)``
    computes the teacher's function, with ``generate(use_cache=True)``: attention
    ``layer_idx`` and the cache layers follow the new config."""
    names = _zero_modules(config, zero)
    stacks = layer_stacks(state_dict, config)
    if isinstance(insert_after, Mapping):
        unknown = [p for p in insert_after if p not in stacks]
        if unknown:
            raise InputError(f"no layer stack {unknown[0]!r}; stacks: {', '.join(stacks)}")
        wanted = {p: list(v) for p, v in insert_after.items()}
    else:
        wanted = {p: list(insert_after) for p in stacks}
    out: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[int, dict[str, torch.Tensor]]] = {p: {} for p in stacks}
    for key, t in state_dict.items():
        m = _LAYER_KEY.match(key)
        if m and m["stack"] in stacks:
            layers[m["stack"]].setdefault(int(m["index"]), {})[m["rest"]] = t
        else:
            out[key] = t
    updates: dict[str, Any] = {}
    for prefix, (field, n) in stacks.items():
        after = wanted.get(prefix, [])
        for i in after:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
                raise InputError(
                    f"insert_after must hold layer indices 0..{n - 1} of {prefix!r}, got {i!r}"
                )
        first_only = _FIRST_LAYER_ONLY.get(getattr(config, "model_type", ""), ())
        common = {
            rest
            for rest in set.intersection(*(set(layers[prefix][i]) for i in range(n)))
            if not _matches(rest, first_only)
        }
        order: list[tuple[int, bool]] = []
        for i in range(n):
            order.append((i, False))
            order += [(i, True)] * after.count(i)
        for j, (i, is_copy) in enumerate(order):
            zeroed = 0
            for rest, t in layers[prefix][i].items():
                t = _index_compensated(config, rest, t, i, j)
                if not is_copy:
                    out[f"{prefix}.{j}.{rest}"] = t
                elif rest in common:
                    t = t.detach().clone()
                    if _matches(rest, names):
                        t.zero_()
                        zeroed += 1
                    out[f"{prefix}.{j}.{rest}"] = t
            if is_copy and not zeroed:
                raise DeepenError(
                    f"no tensor of {prefix}.{i} matches zero={list(names)}; its "
                    f"copy would not be the identity"
                )
        if prefix in wanted:
            updates[field] = len(order)
        for key, value in config.to_dict().items():
            if (
                isinstance(value, (list, tuple))
                and len(value) == n
                and key != "architectures"
                and ("layer" in key or "window" in key)
                and len(stacks) == 1
            ):
                updates[key] = type(value)(value[i] for i, _ in order)
    return out, updates


def deeper_config(config: Any, updates: Mapping[str, Any]) -> Any:
    """A new config of ``config``'s class with ``updates`` applied (the teacher's untouched)."""
    return type(config).from_dict({**config.to_dict(), **updates})


def graph_zero_targets(model: torch.nn.Module, example_inputs: Any, layer: str) -> list[str]:
    """The tensors (relative to module ``layer``) that ``deepen`` zeroes in a copy of
    ``layer``, found in the traced graph; ``DeepenError`` if a copy cannot be the identity
    (post-norm)."""
    from ..analysis.blocks import find_blocks, why_not_residual
    from ..api import analyze
    from .block_copy import residual_stream

    analysis = analyze(model, example_inputs)
    gm = analysis.gm
    vals = analysis.state.vals_by_name(gm)
    blocks = {b.path: b for b in find_blocks(gm, vals, nested=True) if b.residual}
    if layer not in blocks:
        why = why_not_residual(gm, vals, layer, nested=True)
        raise DeepenError(f"{layer!r} is no residual block" + (f": {why}" if why else ""))
    return [t[len(layer) + 1 :] for t in residual_stream(gm, blocks[layer])]


_GRAPH_COPY = re.compile(r"^(?P<index>\d+)(?:_deepen(?P<copy>\d+))?$")


def _graph_layers(
    state_dict: Mapping[str, torch.Tensor], prefix: str, n: int
) -> list[tuple[str, int, bool]]:
    """The children of stack ``prefix`` in a grown graph, in running order: (child name,
    the teacher layer it is or copies, whether it is a copy).  ``i_deepen{k}`` is a copy of
    layer ``i`` inserted after it (a later copy runs nearer its layer, so ``_deepen1`` before
    ``_deepen0``); ``i >= n`` a copy of the last layer appended by ``grow``."""
    children: set[str] = set()
    for key in state_dict:
        if key.startswith(prefix + "."):
            child = key[len(prefix) + 1 :].split(".")[0]
            if not _GRAPH_COPY.match(child):
                raise InputError(
                    f"{prefix}.{child} is neither a numbered layer nor a copy "
                    f"fxgrow inserted ({prefix}.<i>_deepen<k>)"
                )
            children.add(child)

    def rank(child: str) -> tuple[int, int, int]:
        m = _GRAPH_COPY.match(child)
        assert m is not None
        return (
            (int(m["index"]), 0, 0) if m["copy"] is None else (int(m["index"]), 1, -int(m["copy"]))
        )

    layers = []
    for child in sorted(children, key=rank):
        i, copy_rank, _ = rank(child)
        layers.append((child, min(i, n - 1), copy_rank == 1 or i >= n))
    if sum(not c for _, _, c in layers) != n:
        raise InputError(
            f"{prefix} holds {sum(not c for _, _, c in layers)} original layers, "
            f"not the teacher's {n}"
        )
    return layers


def graph_insertions(
    state_dict: Mapping[str, torch.Tensor], stacks: Mapping[str, int]
) -> dict[str, list[int]]:
    """What a grown graph inserted, as ``deeper_state_dict``'s ``insert_after``: {stack
    prefix: [the teacher layer each copy copies]}, given {stack prefix: teacher layer count}."""
    return {
        p: [i for _, i, is_copy in _graph_layers(state_dict, p, n) if is_copy]
        for p, n in stacks.items()
    }


def hf_numbering(
    state_dict: Mapping[str, torch.Tensor], stacks: Mapping[str, int]
) -> dict[str, torch.Tensor]:
    """A grown graph's state dict in HF numbering, given {stack prefix: teacher layer count}:
    the stack's children renumbered 0, 1, ... in running order.  As in ``deeper_state_dict``,
    a copy keeps only the tensors every teacher layer has (the graph's copy of T5's first
    block carries its own position-bias table, which HF gives to layer 0 only)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, n in stacks.items():
        layers = _graph_layers(state_dict, prefix, n)
        tensors: dict[str, dict[str, torch.Tensor]] = {c: {} for c, _, _ in layers}
        for key, t in state_dict.items():
            if key.startswith(prefix + "."):
                child, _, rest = key[len(prefix) + 1 :].partition(".")
                tensors[child][rest] = t
        common = set.intersection(*(set(tensors[c]) for c, _, is_copy in layers if not is_copy))
        for j, (child, _, is_copy) in enumerate(layers):
            for rest, t in tensors[child].items():
                if not is_copy or rest in common:
                    out[f"{prefix}.{j}.{rest}"] = t
    for key, t in state_dict.items():
        if not any(key.startswith(p + ".") for p in stacks):
            out[key] = t
    return out
