"""The command line's models and inputs: model specs (``torchvision:NAME``, ``timm:NAME``,
``hf:CLASS?config``, ``file.py:factory``, a saved ``.safetensors``) turned into a model and its
example inputs.

Invariant: a spec imports only the library it names (timm for ``timm:``, transformers for
``hf:``), builds the model with random weights (nothing is downloaded), and a saved file is
loaded through ``fxgrow.load``'s allowlist (without its weights where the command only
analyses it); every mistake is a :class:`SpecError` naming the fix."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from ..errors import SpecError
from ..params import count_parameters as _count_params
from ..suggest import did_you_mean


def _short(s: object, n: int = 72) -> str:
    text = " ".join(str(s).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# -- model specs -----------------------------------------------------------------------------------


@dataclass
class Loaded:
    """A model ready for a command: the module, its example inputs, a label for messages, and
    where it came from."""

    model: Any
    inputs: tuple
    label: str
    source: str  # torchvision | timm | hf | file | saved


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def _split_spec(spec: str) -> tuple[str, dict]:
    name, _, query = spec.partition("?")
    options = {}
    if query:
        for part in query.split("&"):
            if not part:
                continue
            if "=" not in part:
                raise SpecError(f"option {part!r} in {spec!r} needs a value: key=value")
            key, value = next(iter(parse_qsl(part, keep_blank_values=True)), (part, ""))
            if not key.isidentifier():
                raise SpecError(f"option name {key!r} in {spec!r} is not a valid name")
            options[key] = _value(value)
    return name, options


def _close(name: str, known: list[str], what: str, shown: int = 40) -> str:
    """'did you mean ...?', or the list itself (the first ``shown`` of it)."""
    close = did_you_mean(name, known, quote=False)
    if close:
        return close
    if not known:
        return f"; there are no {what}"
    more = f" ... ({len(known)} in all)" if len(known) > shown else ""
    return f"; {what}: {', '.join(sorted(known)[:shown])}{more}"


def _torchvision(name: str, options: dict) -> Any:
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        raise SpecError(
            f"torchvision has no model {name!r}" + _close(name, known, "torchvision's models")
        )
    try:
        return torchvision.models.get_model(name, weights=None, **options)
    except (TypeError, ValueError) as e:
        raise SpecError(f"torchvision:{name} does not accept {options}: {e}") from e


def _timm(name: str, options: dict) -> Any:
    try:
        import timm
    except ImportError as e:
        raise SpecError("timm is not installed (pip install timm)") from e
    if not timm.is_model(name):
        raise SpecError(
            f"timm has no model {name!r}"
            + _close(
                name,
                timm.list_models(),
                "timm's models (all: python -c 'import timm; print(timm.list_models())')",
            )
        )
    try:
        return timm.create_model(name, pretrained=False, **options)
    except (TypeError, ValueError) as e:
        raise SpecError(f"timm:{name} does not accept {options}: {e}") from e


LARGE = 2_000_000_000  # parameters; hf: models are built from config, larger ones need a flag


def _hf(name: str, options: dict, allow_large: bool) -> Any:
    try:
        import transformers
    except ImportError as e:
        raise SpecError("transformers is not installed (pip install transformers)") from e
    import torch

    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        known = [
            n
            for n in dir(transformers)
            if n[:1].isupper()
            and n.endswith(
                (
                    "Model",
                    "ForCausalLM",
                    "ForMaskedLM",
                    "ForSequenceClassification",
                    "ForImageClassification",
                    "ForTokenClassification",
                )
            )
        ]
        raise SpecError(
            f"transformers has no model class {name!r}"
            + _close(name, known, "transformers' model classes")
        )
    config_cls = getattr(cls, "config_class", None)
    options = {"use_cache": False, **options}
    try:
        if config_cls is not None and config_cls is not transformers.PretrainedConfig:
            config = config_cls(**options)
        else:
            model_type = options.pop("model_type", None)
            if model_type is None:
                raise SpecError(f"{name} has no config class; give ?model_type=...")
            config = transformers.AutoConfig.for_model(model_type, **options)
    except SpecError:
        raise
    except Exception as e:
        raise SpecError(
            f"hf:{name}: invalid config {options}: {type(e).__name__}: {_short(e, 200)}"
        ) from e
    try:
        with torch.device("meta"):
            size = _count_params(cls(config))
    except Exception:
        size = 0
    if size > LARGE and not allow_large:
        raise SpecError(
            f"hf:{name} with this config has {size / 1e9:.1f}B parameters; pass "
            f"smaller sizes (e.g. hf:{name}?hidden_size=64&num_hidden_layers=2) or "
            f"--allow-large"
        )
    try:
        return cls(config)
    except Exception as e:
        raise SpecError(
            f"hf:{name} cannot be built from config {options}: {type(e).__name__}: {_short(e, 200)}"
        ) from e


def _from_file(path: str, factory: str, options: dict) -> Any:
    import torch

    file = Path(path)
    if not file.is_file():
        raise SpecError(f"no such file: {path}")
    mod_name = f"fxgrow_user_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, file)
    if spec is None or spec.loader is None:
        raise SpecError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise SpecError(f"importing {path} failed: {type(e).__name__}: {_short(e, 200)}") from e
    obj = getattr(module, factory, None)
    if obj is None:
        known = [n for n in vars(module) if not n.startswith("_")]
        raise SpecError(
            f"{path} has no {factory!r}" + _close(factory, known, f"the public names in {path}")
        )
    if isinstance(obj, torch.nn.Module):
        return obj
    if not callable(obj):
        raise SpecError(f"{path}:{factory} is neither a module nor a function returning one")
    try:
        model = obj(**options)
    except Exception as e:
        raise SpecError(f"{path}:{factory}() failed: {type(e).__name__}: {_short(e, 200)}") from e
    if not isinstance(model, torch.nn.Module):
        raise SpecError(
            f"{path}:{factory}() returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _shape(text: str, what: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        shape = ()
    if not shape or any(n <= 0 for n in shape):
        raise SpecError(
            f"{what} must be positive integers separated by commas, e.g. 1,3,224,224; got {text!r}"
        )
    return shape


def _dtype(name: str) -> Any:
    import torch

    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise SpecError(
            f"--dtype must be a floating dtype (float32, float64, bfloat16, float16), got {name!r}"
        )
    return dt


def load_model(args: argparse.Namespace) -> Loaded:
    """The model and example inputs the command line names."""
    import torch

    spec = args.model
    torch.manual_seed(args.seed)
    source = ""
    if spec.startswith("torchvision:"):
        name, options = _split_spec(spec[len("torchvision:") :])
        model, source = _torchvision(name, options), "torchvision"
    elif spec.startswith("timm:"):
        name, options = _split_spec(spec[len("timm:") :])
        model, source = _timm(name, options), "timm"
    elif spec.startswith(("hf:", "transformers:")):
        name, options = _split_spec(spec.partition(":")[2])
        model, source = _hf(name, options, args.allow_large), "hf"
    elif ".py:" in spec:
        path, _, rest = spec.rpartition(".py:")
        factory, options = _split_spec(rest)
        model, source = _from_file(path + ".py", factory, options), "file"
    elif spec.endswith(".safetensors") or Path(spec).is_file():
        if not Path(spec).is_file():
            raise SpecError(f"no such file: {spec}")
        from ..io import load

        model, source = (
            load(spec, trusted=args.trust or (), weights=getattr(args, "run", True)),
            "saved",
        )
    else:
        raise SpecError(
            f"cannot tell what model {spec!r} names: use torchvision:NAME, "
            f"timm:NAME, hf:ArchitectureClass?key=value, path/to/file.py:factory or "
            f"a .safetensors file saved by fxgrow"
        )
    dtype = _dtype(args.dtype) if args.dtype else None
    model = model.to(dtype) if dtype is not None else model
    from ..modes import set_training

    set_training(model, False)
    inputs = _inputs(args, model, source, spec, dtype or torch.float32)
    return Loaded(model, inputs, spec, source)


def _inputs(args: argparse.Namespace, model: Any, source: str, spec: str, dtype: Any) -> tuple:
    import torch

    g = torch.Generator().manual_seed(args.seed)
    out: list = []
    for text in args.input_shape or []:
        out.append(torch.randn(_shape(text, "--input-shape"), generator=g, dtype=dtype))
    if args.input_ids:
        shape = _shape(args.input_ids, "--input-ids")
        if len(shape) != 2:
            raise SpecError(f"--input-ids takes batch,length (e.g. 2,16), got {args.input_ids!r}")
        vocab = args.vocab or getattr(getattr(model, "config", None), "vocab_size", None) or 100
        out.append(torch.randint(0, int(vocab), shape, generator=g))
    if out:
        return tuple(out)
    if source == "saved":
        from ..io import example_inputs

        recorded = example_inputs(spec, args.seed)
        if recorded:
            return recorded
        raise SpecError(f"{spec} records no input shapes; give --input-shape (or --input-ids)")
    if source == "hf":
        vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 100
        return (torch.randint(0, int(vocab), (2, 16), generator=g),)
    if source == "timm":
        return (torch.randn((1, *_timm_input_size(model)), generator=g, dtype=dtype),)
    if source == "torchvision":
        return (torch.randn((1, 3, 224, 224), generator=g, dtype=dtype),)
    raise SpecError(
        "give the example input shape: --input-shape 1,3,224,224 (repeat for "
        "several inputs) or --input-ids batch,length"
    )


def _timm_input_size(model: Any) -> tuple[int, ...]:
    """(C, H, W) a timm model takes: its pretrained config's, with the image size and channels
    the model was actually built with (``?img_size=64``, ``?in_chans=1``)."""
    size = list(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224)))
    chans = getattr(model, "in_chans", None) or getattr(
        getattr(model, "patch_embed", None), "in_chans", None
    )
    if isinstance(chans, int):
        size[0] = chans
    img = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(img, int):
        img = (img, img)
    if (
        isinstance(img, (tuple, list))
        and len(img) == len(size) - 1
        and all(isinstance(n, int) for n in img)
    ):
        size[1:] = img
    return tuple(size)


def _describe_inputs(inputs: tuple) -> str:
    parts = []
    for x in inputs:
        shape = "x".join(str(n) for n in x.shape)
        parts.append(shape if x.is_floating_point() else f"{shape} ids")
    return ", ".join(parts)
