"""Hugging Face folders: the model from its config on the meta device (planning without
weights), the config of the grown model, and example inputs.

``meta_model(config)`` builds the architecture named by the config with every parameter on
the meta device (``accelerate.init_empty_weights``; buffers such as rotary tables stay real, as
the model computes them) and ``use_cache=False`` (capture needs a plain output).  fxgrow's
capture and analysis then run on it exactly as on a real model: shapes are propagated on meta
tensors anyway, and nothing in planning reads a parameter's values.  That is the way to plan
for a model larger than memory::

    model = meta_model(AutoConfig.from_pretrained(folder))
    analysis = fxgrow.analyze(model, example_ids(model.config))
    plan = fxgrow.plan(analysis, factor=2)       # no parameter memory
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InputError, UnsupportedModelError
from .errors import CheckpointError
from .plan import StreamPlan

if TYPE_CHECKING:  # transformers is imported when a checkpoint is streamed
    from transformers import PreTrainedModel


def meta_model(config: Any, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The model ``config`` describes (its first ``architectures`` entry, else a causal LM),
    with parameters on the meta device in ``dtype``, in eval mode.  float32 by default whatever
    the checkpoint's dtype: a graph captured in bfloat16 would round teacher and student
    differently, and verification runs in float32."""
    import transformers
    from accelerate import init_empty_weights

    config = copy.deepcopy(config)
    config.use_cache = False
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    with init_empty_weights():
        if cls is not None:
            model = cls._from_config(config, dtype=dtype)
        else:
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    if hasattr(model, "tie_weights"):  # init_empty_weights leaves tied weights apart
        model.tie_weights()
    return model.eval()


def example_ids(
    config: Any, length: int = 8, batch: int = 1, seed: int = 0, device: str = "cpu"
) -> tuple[torch.Tensor]:
    """Random token ids in the config's vocabulary (reproducible)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, int(config.vocab_size), (batch, length), generator=g)
    return (ids.to(device),)


def expand_widths(widths: Mapping[str, int] | None, names: list[str]) -> dict[str, int] | None:
    """``widths`` with glob keys (``model.layers.*.mlp.up_proj``) expanded over ``names``."""
    if widths is None:
        return None
    out: dict[str, int] = {}
    for key, value in widths.items():
        if any(c in key for c in "*?["):
            hits = fnmatch.filter(names, key)
            if not hits:
                raise InputError(f"width pattern {key!r} matches no module or group")
            out.update(dict.fromkeys(hits, value))
        else:
            out[key] = value
    return out


def _dtype(config: Any) -> torch.dtype | None:
    d = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(d, str):
        d = getattr(torch, d, None)
    return d if isinstance(d, torch.dtype) else None


def check_dtypes(config: Any, stored: Mapping[str, torch.dtype]) -> None:
    """Every floating tensor is stored in the config's dtype (when the config names one)."""
    want = _dtype(config)
    if want is None:
        return
    for name, dt in stored.items():
        if dt.is_floating_point and dt != want:
            raise CheckpointError(
                f"tensor {name!r} is stored as {dt} but config.json says "
                f"dtype {want}; the checkpoint does not match its config"
            )


def grown_config(config: Any, model: PreTrainedModel, plan: StreamPlan) -> Any:
    """The config whose model has exactly the plan's tensors (``grown_model``'s first half)."""
    return grown_model(config, model, plan)[0]


def grown_model(
    config: Any, model: PreTrainedModel, plan: StreamPlan
) -> tuple[Any, PreTrainedModel]:
    """The config whose model has exactly the plan's tensors, or ``UnsupportedModelError``.

    Sizes are read off the student's tensors (input embedding -> hidden_size, the first
    block's query/key projections -> head counts at the unchanged head_dim, its MLP input
    projection -> intermediate_size, the stage's block count -> num_hidden_layers, per-layer
    lists remapped with the blocks); the result is then checked by building it on the meta
    device and comparing every tensor's shape."""
    new = copy.deepcopy(config)
    shapes = {t.name: t.shape for t in plan.tensors}
    emb = next(n for n, m in model.named_modules() if m is model.get_input_embeddings())
    if f"{emb}.weight" in shapes:
        new.hidden_size = shapes[f"{emb}.weight"][1]
    stage = plan.stage or next(
        (n for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)), "model.layers"
    )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    for field, names in (
        ("num_attention_heads", ("self_attn.q_proj",)),
        ("num_key_value_heads", ("self_attn.k_proj",)),
        ("intermediate_size", ("mlp.up_proj", "mlp.gate_proj", "mlp.fc1")),
    ):
        for n in names:
            shape = shapes.get(f"{stage}.0.{n}.weight")
            if shape is not None and hasattr(config, field):
                setattr(new, field, shape[0] // head_dim if field.startswith("num_") else shape[0])
                break
    if getattr(config, "head_dim", None) is not None:
        new.head_dim = head_dim
    if plan.layers is not None:
        old_n = config.num_hidden_layers
        new.num_hidden_layers = len(plan.layers)
        for key, value in config.to_dict().items():
            if isinstance(value, list) and len(value) == old_n and key != "architectures":
                setattr(new, key, [value[b] for b in plan.layers])
    student = meta_model(new)
    want = {k: tuple(v.shape) for k, v in student.state_dict().items()}
    tied = {n for n, _ in student.named_parameters(remove_duplicate=False)} - {
        n for n, _ in student.named_parameters()
    }
    changed = ", ".join(
        f"{k}={getattr(new, k)}"
        for k in (
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "num_hidden_layers",
        )
        if getattr(new, k, None) != getattr(config, k, None)
    )
    for name, shape in shapes.items():
        if name not in want:
            raise UnsupportedModelError(
                f"the grown checkpoint has {name!r}, which "
                f"{type(student).__name__}({changed}) does not"
            )
        if want[name] != tuple(shape):
            raise UnsupportedModelError(
                f"the growth has no config of {type(student).__name__}: {name!r} is "
                f"{list(shape)} in the student but {list(want[name])} with {changed or 'the same config'}"
                f" (e.g. only some blocks widened where the config has one size for all); "
                f"widen every block alike"
            )
    lacking = sorted(set(want) - set(shapes) - tied - {n for n, _ in student.named_buffers()})
    if lacking:
        raise UnsupportedModelError(
            f"the grown checkpoint lacks {lacking[0]!r}, which "
            f"{type(student).__name__}({changed}) has"
        )
    return new, student
