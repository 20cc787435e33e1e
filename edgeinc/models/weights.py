"""Loading and saving weights. A weights file is data, not code: safetensors, or a plain state dict
read with ``torch.load(weights_only=True)``; nothing is ever unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..utils.io import atomic_open

# Where trainers and hubs nest the state dict inside a checkpoint file.
_NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


class CheckpointError(ValueError):
    """A weights file that cannot be read or does not fit the model; names the file."""


def read_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a torch file holding a plain (possibly nested)
    state dict, in torchvision's or timm's layout. ``key`` picks a nested entry explicitly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickled code refused by weights_only, ...
        raise CheckpointError(f"{path}: not a readable weights file ({load_failure(e)}); a weights file is read as "
                              f"data only (safetensors, or a plain state dict)") from e
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            raise CheckpointError(f"{path}: has no entry {key!r}")
        state = state[key]
    else:
        for k in _NESTED_KEYS:
            if isinstance(state, dict) and isinstance(state.get(k), dict):
                state = state[k]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_failure(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, without torch's advice to retry with
    ``weights_only=False`` (that would run the code a hostile file carries)."""
    text = str(error)
    if "Weights only load failed" in text:
        detail = next((line.strip() for line in text.splitlines() if line.strip().startswith(("Trying to load", "Unsupported"))), "")
        return f"it holds pickled objects or code, refused unread{': ' + detail if detail else ''}"
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True, key: str | None = None):
    """Load a torchvision/timm/edgeinc state dict into ``model``; errors name the file."""
    state = read_state_dict(path, key)
    try:
        return model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit the model: {e}") from e


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save ``model``'s weights as safetensors (atomically), with string metadata.

    edgeinc models also record how they were built (``edgeinc.model``: name and options) so that
    ``load_weights`` can rebuild them without code."""
    from safetensors.torch import save

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    spec = model_spec(model)
    if spec is not None:
        meta.setdefault("edgeinc.model", json.dumps(spec))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = save(state, metadata=meta)
    with atomic_open(path, "wb") as f:
        f.write(data)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def load_weights(path: str | os.PathLike) -> nn.Module:
    """Rebuild an edgeinc model from a file written by ``save_weights``."""
    from .factory import create_model

    meta = read_metadata(path)
    if "edgeinc.model" not in meta:
        raise CheckpointError(f"{path}: has no 'edgeinc.model' metadata; build the model and use load_checkpoint")
    try:
        spec = json.loads(meta["edgeinc.model"])
        if "kwargs" in spec:  # written before ModelOptions (schema of stop 7): the options beside num_classes
            spec = {"name": spec["name"], "num_classes": spec["kwargs"].pop("num_classes"), "options": spec["kwargs"]}
        model = create_model(spec["name"], num_classes=spec["num_classes"], **spec["options"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: metadata 'edgeinc.model' does not describe a model ({type(e).__name__}: {e})") from None
    load_checkpoint(model, path)
    return model


def model_spec(model: nn.Module) -> dict | None:
    """Name, class count and options that rebuild ``model`` with ``create_model`` (None for foreign models)."""
    from .inception_v3 import InceptionV3

    if not isinstance(model, InceptionV3) or model.variant is None:
        return None
    return {"name": model.variant.name, "num_classes": model.num_classes, "options": model.options.model_dump()}
