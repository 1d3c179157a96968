"""The grown graph as an instance of the teacher's own Hugging Face class.

Invariant: ``to_pretrained(teacher, gm)`` returns ``type(teacher)(new_config)`` holding the
graph's tensors (a strict ``load_state_dict``), where ``new_config`` is the teacher's config
with the fields the shapes demand (``config.infer_config``), and it computes the teacher's
function on fresh inputs -- other batch sizes and lengths, a padding mask -- or raises.
Tie-compensation buffers are folded into the final norm first, and constants HF derives from
the config (non-persistent buffers such as Gemma's embedding scale) are compensated in the
weights.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx

from ..errors import ConfigError, PreservationError
from ..growth import GrowthRecord, growth_record, set_growth_record, update_growth_record
from ..optional import instance_of
from . import config as cfg
from .fold import fold_tie_scales, rescale_width_constant, scale_constant


def is_pretrained(model: Any) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (never imports transformers: a
    model of its classes has imported it already)."""
    return instance_of(model, "transformers", "PreTrainedModel")


def is_encoder_decoder(model: Any) -> bool:
    """Whether ``model`` is a Hugging Face encoder-decoder (its config says so)."""
    return is_pretrained(model) and bool(getattr(model.config, "is_encoder_decoder", False))


def default_outputs(model: Any, outputs: str) -> str:
    """A Hugging Face encoder-decoder also returns its encoder's last hidden state, which
    grows with ``d_model``: only its first output (the logits) stays fixed (``"main"``)."""
    return "main" if outputs == "fixed" and is_encoder_decoder(model) else outputs


def finish(
    teacher: torch.nn.Module, student: torch.fx.GraphModule, as_graph: bool = False
) -> torch.nn.Module:
    """What widen / deepen / grow return: the student as the teacher's class when the
    teacher is a Hugging Face model (unless ``as_graph``), else the graph."""
    record = growth_record(student)
    grown_outputs = record is not None and record.output_positions is not None
    if (
        as_graph
        or not is_pretrained(teacher)
        or (grown_outputs and not is_encoder_decoder(teacher))
    ):  # outputs="grow"
        return student
    return to_pretrained(teacher, student)


def _tensors(gm: torch.nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = dict(gm.named_parameters(remove_duplicate=False))
    out.update(dict(gm.named_buffers(remove_duplicate=False)))
    return out


def _hf_tensors(teacher, gm: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The student's tensors under Hugging Face names: block copies the graph inserted
    (``model.layers.1_deepen0``) renumbered into their layer stack in running order
    (``fxgrow.rewrite.hf_depth.hf_numbering``); records which teacher layer each new layer
    copies (the growth record's ``layer_sources``, for per-layer config lists)."""
    tensors = _tensors(gm)
    if not any("_deepen" in k for k in tensors):
        return tensors
    from ..rewrite.hf_depth import _graph_layers, hf_numbering, layer_stacks

    stacks = {p: n for p, (_, n) in layer_stacks(teacher.state_dict(), teacher.config).items()}
    renamed = hf_numbering(tensors, stacks)
    record = growth_record(gm)
    if len(stacks) == 1 and (record is None or record.layer_sources is None):
        ((prefix, n),) = stacks.items()
        sources = tuple(i for _, i, _ in _graph_layers(tensors, prefix, n))
        update_growth_record(gm, layer_sources=sources)
    return renamed


def _layer_count_fields(teacher, gm_shapes: cfg.Shapes) -> dict[str, Any]:
    """Structural fields (num_hidden_layers) matched by the tensors the student has."""
    config, cls = teacher.config, type(teacher)
    p = cfg.probe(cls, config)
    fields: dict[str, Any] = {}
    counted = set()
    try:  # the layer stacks (T5: encoder.block, decoder.block): their count is their field
        from ..rewrite.hf_depth import layer_stacks

        stacks = layer_stacks(teacher.state_dict(), config)
    except Exception:
        stacks = {}
    for prefix, (f, n) in stacks.items():
        indices = {
            k[len(prefix) + 1 :].split(".")[0] for k in gm_shapes if k.startswith(prefix + ".")
        }
        got = 1 + max((int(i) for i in indices if i.isdigit()), default=n - 1)
        counted.add(f)
        if got != n:
            fields[f] = got
            fields.update(_lists(config, got))
    for f in p.structural:
        if f in counted:
            continue
        base = set(cfg.shapes_for(cls, config))
        if (
            base <= set(gm_shapes)
            and len(base) == len(set(gm_shapes) & base)
            and not (set(gm_shapes) - base)
        ):
            continue
        v = getattr(config, f)
        for n in range(v + 1, 8 * v + 2):
            trial = cfg.with_fields(config, dict(fields, **{f: n}, **_lists(config, n)))
            names = set(cfg.shapes_for(cls, trial))
            if names <= set(gm_shapes) and not _extra_params(gm_shapes, names):
                fields[f] = n
                fields.update(_lists(config, n))
                break
    return fields


def _extra_params(gm_shapes, names) -> set:
    return {
        n for n in gm_shapes if n not in names and not n.startswith("fxgrow_") and ".layers." in n
    }


def _lists(config, n: int) -> dict[str, Any]:
    """Per-layer lists extended to ``n`` layers by repeating their pattern (set exactly from
    the copied layers by ``deepen``'s bookkeeping where it records them)."""
    out = {}
    for name in cfg.LAYER_LISTS:
        v = getattr(config, name, None)
        if isinstance(v, (list, tuple)) and v and len(v) != n:
            out[name] = [v[i % len(v)] for i in range(n)]
    return out


def new_config(
    teacher, shapes: cfg.Shapes, sources: Sequence[int] | None = None
) -> tuple[Any, dict]:
    """The teacher's config with the fields that give ``shapes``; (config, changed fields)."""
    config, cls = teacher.config, type(teacher)
    fields = _layer_count_fields(teacher, shapes)
    if sources is not None:
        for name in cfg.LAYER_LISTS:
            v = getattr(config, name, None)
            if isinstance(v, (list, tuple)) and len(sources) == fields.get(
                config.attribute_map.get("num_hidden_layers", "num_hidden_layers")
            ):
                fields[name] = [v[s] for s in sources]
    deeper = cfg.with_fields(config, fields)
    widths = cfg.solve_widths(cls, deeper, shapes)
    widths = cfg.keep_quotients(deeper, widths, set(cfg.probe(cls, deeper).exponents))
    fields.update(widths)
    new = cfg.with_fields(config, fields)
    new.use_cache = getattr(config, "use_cache", True)
    return new, fields


def to_pretrained(
    teacher, gm: torch.fx.GraphModule, *, check: bool = True, extra: dict | None = None
):
    """``gm`` (a student of ``teacher``) as an instance of ``type(teacher)``; ``extra``:
    config fields no shape shows (a padded stream's eps)."""
    from transformers.initialization import no_init_weights

    gm = copy.deepcopy(gm)
    fold_tie_scales(gm)
    tensors = _hf_tensors(teacher, gm)
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    record = growth_record(gm) or GrowthRecord()
    config, fields = new_config(teacher, shapes, record.layer_sources)
    if extra:
        config = cfg.with_fields(config, extra)
        fields.update(extra)
    untied = [
        a
        for a, src in _tie_sources(teacher).items()
        if a in tensors and src in tensors and tensors[a] is not tensors[src]
    ]
    if untied and getattr(config, "tie_word_embeddings", False):  # untie=True
        config.tie_word_embeddings = False
        fields["tie_word_embeddings"] = False
    cls = type(teacher)
    dtype = next((p.dtype for p in teacher.parameters() if p.is_floating_point()), None)
    with no_init_weights():
        model = cls._from_config(config, dtype=dtype)
    if getattr(config, "scale_decoder_outputs", False):  # T5: output * d_model ** -0.5
        hidden = config.attribute_map.get("hidden_size", "hidden_size")
        rescale_width_constant(gm, getattr(teacher.config, hidden), getattr(config, hidden))
    state_names = set(model.state_dict())
    for name, buf in model.named_buffers():  # constants HF computes from the config
        if name in state_names or name not in tensors:
            continue
        old = tensors[name]
        if (
            old.shape == buf.shape
            and old.dtype != buf.dtype
            and torch.equal(old, buf.to(old.device, old.dtype))
        ):
            # the same constant, rounded to the teacher's dtype (a bf16 model's rotary
            # frequencies): take the teacher's values, which is what it computed with
            with torch.no_grad():
                buf.copy_(old.to(buf.device, buf.dtype))
            continue
        if old.shape == buf.shape and not torch.equal(old.to(buf.device, buf.dtype), buf):
            if buf.numel() != 1:
                raise ConfigError(
                    f"the config found for the student ({fields}) gives {name} other values "
                    f"than the student has (a constant derived from the config, e.g. a "
                    f"rotary size); fxgrow compensates scalar constants only: keep the graph "
                    f"(as_graph=True) or grow by whole multiples"
                )
            scale_constant(gm, name, buf)
    tensors = _hf_tensors(teacher, gm)
    state = {}
    tied = _tie_sources(model)
    for name in model.state_dict():
        src = name if name in tensors else tied.get(name)
        if src not in tensors:
            raise ConfigError(f"the student has no tensor for {name} of {cls.__name__}")
        state[name] = tensors[src]
    unplaced = [
        k
        for k in tensors
        if k not in state
        and k not in dict(model.named_buffers())
        and not _alias_of_state(k, tensors, state)
    ]
    if unplaced:
        inserted = sorted(
            {
                k.split("_deepen")[0] + "_deepen" + k.split("_deepen")[1].split(".")[0]
                for k in unplaced
                if "_deepen" in k
            }
        )
        why = (
            (
                f": the inserted blocks {', '.join(inserted)} are no layers of its config; "
                f"grow(blocks=...) or to_config={{'num_hidden_layers': N}} append layers the "
                f"config holds"
            )
            if inserted
            else ""
        )
        raise ConfigError(
            f"{cls.__name__} has no place for the student's tensors "
            f"{', '.join(unplaced[:4])}{why}; or keep the graph (as_graph=True)"
        )
    wanted = model.state_dict()
    off = [
        f"{k} is {list(v.shape)}, the config gives {list(wanted[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(wanted[k].shape)
    ]
    if off:  # a config of the class cannot hold these widths (e.g. heads x head size tied)
        raise ConfigError(
            f"no config of {cls.__name__} gives the student's shapes (nearest: {fields}): "
            f"{'; '.join(off[:4])}"
            + (f"; and {len(off) - 4} more" if len(off) > 4 else "")
            + ". Keep the graph (as_graph=True), or grow to a config of the class "
            "(grow(to_config=...))"
        )
    model.load_state_dict(state, strict=True)
    if getattr(config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()  # the same tensor under both names, as from_pretrained gives
    model.train(teacher.training)
    # the growth record: the config fields that changed (read by save_folder) and the
    # expansions optimizer transfer reads (fxgrow.transfer_optimizer), keyed by parameter
    # names, which are the graph's unless blocks were renumbered
    renumbered = any("_deepen" in k for k in _tensors(gm))
    set_growth_record(
        model,
        GrowthRecord(
            expansions={} if renumbered else dict(record.expansions),
            renumbered=renumbered,
            config_fields=fields,
            group_widths=None if renumbered else record.group_widths,
        ),
    )
    if check and not record.inexact:
        update_growth_record(model, fresh_error=check_fresh(teacher, model))
    return model


def _alias_of_state(name: str, tensors: dict, state: dict) -> bool:
    t = tensors[name]
    return any(v is t for v in state.values())


def _tie_sources(model) -> dict[str, str]:
    """Tied parameter name -> the name holding the same tensor first."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


def fresh_inputs(
    config, batch: int = 3, length: int = 11, seed: int = 123, pad: int = 3
) -> dict[str, torch.Tensor]:
    """Token ids and a left-padding attention mask (row 0 padded by ``pad``) of a shape the
    graph was not captured at; decoder ids for encoder-decoders; for an image model (a config
    with ``image_size`` and ``num_channels`` and no vocabulary), ``batch`` random images."""
    g = torch.Generator().manual_seed(seed)
    side, channels = getattr(config, "image_size", None), getattr(config, "num_channels", None)
    if getattr(config, "vocab_size", None) is None and isinstance(side, int) and channels:
        return {"pixel_values": torch.randn(batch, channels, side, side, generator=g)}
    vocab = getattr(config, "vocab_size", 100) or 100
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad and batch > 1:
        mask[0, :pad] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if getattr(config, "is_encoder_decoder", False):
        out["decoder_input_ids"] = torch.randint(
            0, vocab, (batch, max(2, length // 2)), generator=g
        )
    return out


def main_output(out) -> torch.Tensor:
    """The tensor a comparison reads from a model's output: ``logits``, else ``last_hidden_state``,
    else the first element of a tuple, else the output itself."""
    for key in ("logits", "last_hidden_state"):
        if hasattr(out, key) and getattr(out, key) is not None:
            return getattr(out, key)
    return out[0] if isinstance(out, (tuple, list)) else out


def _fresh_deviation(teacher, student) -> tuple[float, list]:
    """Largest relative difference of the main outputs (logits) on fresh inputs with padding,
    at the positions the mask keeps, and the outputs themselves (teacher's, student's) per
    input."""
    worst, outs = 0.0, []
    for batch, length in ((1, 5), (3, 11)):
        kw = fresh_inputs(teacher.config, batch, length)
        device = next(teacher.parameters()).device
        kw = {k: v.to(device) for k, v in kw.items()}
        text = {"use_cache": False} if "input_ids" in kw else {}
        with torch.no_grad():
            t = main_output(teacher(**kw, **text)).double()
            s = main_output(student(**kw, **text)).double()
        if t.shape != s.shape:
            raise PreservationError(
                f"the grown {type(student).__name__} returns "
                f"{tuple(s.shape)}, the teacher {tuple(t.shape)}"
            )
        keep = kw.get("attention_mask", torch.ones(0)).bool()
        if t.dim() >= 2 and t.shape[:2] == keep.shape:
            t, s = t[keep], s[keep]
        scale = float(t.abs().max()) or 1.0
        worst = max(worst, float((t - s).abs().max()) / scale)
        outs.append((t, s))
    return worst, outs


def _reference_agrees(teacher, student, outs: list, worst: float, dtype: torch.dtype) -> bool:
    """The graph verifier's calibration (``fxgrow.verify``) on the fresh inputs: copies of
    both models in a more precise dtype that fits in memory; the student passes when the
    copies agree or its deviation is within ``CALIBRATION`` x the teacher's own."""
    from ..verify.compare import CALIBRATION, TOLERANCE, _reference_dtypes

    precise = _reference_dtypes(teacher, student, dtype)
    if not precise:
        return False
    t_ref = copy.deepcopy(teacher).to(precise[0]).eval()
    s_ref = copy.deepcopy(student).to(precise[0]).eval()
    ref, ref_outs = _fresh_deviation(t_ref, s_ref)
    own = max(
        float((t - r).abs().max()) / (float(r.abs().max()) or 1.0)
        for (t, _), (r, _) in zip(outs, ref_outs)
    )
    return ref <= TOLERANCE[precise[0]] or worst <= CALIBRATION * own


def check_fresh(teacher, student, tol: float | None = None) -> float:
    """Largest relative difference of the main output (logits) on fresh inputs with padding,
    at the positions the mask keeps; raises PreservationError beyond the dtype's floor unless
    more precise copies show the difference is the dtype's own rounding."""
    from ..verify.compare import TOLERANCE

    dtype = next((p.dtype for p in teacher.parameters() if p.is_floating_point()), torch.float32)
    tol = TOLERANCE.get(dtype, 1e-5) if tol is None else tol
    modes = (teacher.training, student.training)
    teacher.eval(), student.eval()
    try:
        worst, outs = _fresh_deviation(teacher, student)
        calibrated = worst <= tol or _reference_agrees(teacher, student, outs, worst, dtype)
    finally:
        teacher.train(modes[0]), student.train(modes[1])
    if not calibrated:
        raise PreservationError(
            f"the grown {type(student).__name__} differs from the teacher on fresh inputs "
            f"(max rel err {worst:.3g} > {tol:g}, and more precise copies of both do not "
            f"account for it); the config fields {_fields(student)} do not reproduce "
            f"the graph. Keep the graph (as_graph=True) and please report it"
        )
    return worst


def _fields(model: Any) -> dict[str, Any]:
    """The config fields the growth record of ``model`` says changed."""
    record = growth_record(model)
    return dict(record.config_fields or {}) if record is not None else {}
