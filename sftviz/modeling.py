"""Loading models and tokenizers: the bundled ``sftviz-tiny`` or any Hugging Face causal LM.

One code path for all of them: a bundled name resolves to a folder inside the package, and that
folder (or a user's local folder, or a hub id) goes to ``transformers``' Auto classes. Weights are
loaded as safetensors only, and ``trust_remote_code`` stays off unless the caller turns it on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED_MODELS = {"sftviz-tiny": ASSETS / "sftviz-tiny"}

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device`` into a device.

    ``"auto"`` picks CUDA when a GPU is visible, else Apple's MPS, else the CPU.
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"device must be a string such as 'auto', 'cpu' or 'cuda', or a torch.device; got {type(device).__name__}."
        )
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'mps'.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but no CUDA GPU is visible. Use device='auto' or 'cpu'.")
    return dev


def model_device(model: Any) -> torch.device:
    """The device that holds ``model``'s weights (its first parameter's; the CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError, TypeError):
        return torch.device("cpu")


def to_model_device(batch: dict, model: Any) -> dict:
    """``batch`` (a collator's or ``sv.pack``'s dict) with every tensor on ``model``'s device, so that a
    model loaded on a GPU (``device="auto"``) reads batches that were built on the CPU."""
    device = model_device(model)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _resolve_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"Unknown dtype {dtype!r}: use None (the model's default), 'float32', 'bfloat16' or 'float16'.")


def bundled_model_path(name: str = "sftviz-tiny") -> Path:
    """The folder of a bundled model, e.g. for ``AutoModelForCausalLM.from_pretrained``."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"{name!r} is not a bundled model; bundled: {sorted(BUNDLED_MODELS)}.")
    return BUNDLED_MODELS[name]


def ensure_pad_token(tok: Any) -> None:
    """Give a tokenizer without a pad token one: its EOS token, as GPT-2 fine-tunes usually do.

    This is safe here and only here because sftviz never masks labels by token id: the collator pads
    ``labels`` with -100 *by length*, so a real EOS at the end of a completion stays a trained target
    even though it has the same id as the padding. (Masking ``labels == pad_token_id`` would silently
    stop the model from learning to end its answers: see ``sftviz.faults``.)
    """
    if tok.pad_token_id is not None:
        return
    if tok.eos_token is None:
        raise ValueError(
            "This tokenizer has neither a pad token nor an EOS token. Add one before fine-tuning, e.g. "
            "tok.add_special_tokens({'pad_token': '<pad>'}) and model.resize_token_embeddings(len(tok))."
        )
    tok.pad_token = tok.eos_token


def model_source(name: str | os.PathLike) -> str:
    """Where ``name`` loads from: a bundled model's folder, a real model's converted folder
    (:mod:`sftviz.models`), or ``name`` itself (a folder or a hub id)."""
    from .models import REAL_MODELS, converted_path

    if str(name) in REAL_MODELS:
        source = str(converted_path(str(name)))  # found in its package, converted once (sftviz.models)
    else:
        source = str(BUNDLED_MODELS.get(str(name), name))
    if source.strip() == "":
        raise ValueError("name is empty: pass 'sftviz-tiny', a folder path, or a hub id such as 'gpt2'.")
    return source


def load_tokenizer(name: str | os.PathLike = "sftviz-tiny", *, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model, as it ships (no pad token added): ``name`` as in :func:`load_model`."""
    from transformers import AutoTokenizer

    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a model name, hub id or folder path (a string); got {type(name).__name__}.")
    source = model_source(name)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"Could not load the tokenizer of {str(name)!r} from {source!r}: {err}") from err


def _from_pretrained(name: str | os.PathLike, torch_dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    """Find ``name`` (a bundled or real model, a folder or a hub id) and load (tokenizer, model) from it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = model_source(name)
    local = Path(source).expanduser()
    if local.exists() and not local.is_dir():
        raise ValueError(f"{source!r} is a file; pass the folder that holds config.json and model.safetensors.")

    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per call clutters notebooks
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        kwargs = {"use_safetensors": True, "trust_remote_code": trust_remote_code}
        if torch_dtype is not None:
            kwargs["dtype"] = torch_dtype
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        where = "a local folder" if local.is_dir() else "the Hugging Face hub (or its local cache)"
        hint = (
            " The hub is switched off here (HF_HUB_OFFLINE=1) and the model is not in the local cache."
            if offline and not local.is_dir()
            else ""
        )
        raise ValueError(
            f"Could not load the model {str(name)!r} from {where}: {err}.{hint} "
            "sftviz loads safetensors weights only. To work offline, use the bundled model: "
            "sv.load_model() or sv.load_model('sftviz-tiny')."
        ) from err
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()

    return tok, model


def load_model(
    name: str | os.PathLike = "sftviz-tiny",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    *,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load a causal language model and its tokenizer; returns ``(model, tokenizer)``.

    Args:
        name: ``"sftviz-tiny"`` (the default, bundled with the package, works offline),
            ``"smollm2-135m-instruct"`` (a real instruct model, offline once ``python -m sftviz.models
            install`` has installed its package: see :mod:`sftviz.models`), a local folder
            with ``config.json``, ``model.safetensors`` and tokenizer files, or a Hugging Face hub id
            such as ``"gpt2"`` (needs the network the first time, or a local cache).
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"mps"`` or a torch.device.
        dtype: ``None`` for the checkpoint's default, or ``"float32"``, ``"bfloat16"``, ``"float16"``.
        trust_remote_code: off by default; only turn it on for code you have read.

    The model comes back in eval mode on ``device``. A tokenizer without a pad token gets its EOS token
    as pad (see :func:`ensure_pad_token` for why that is safe here). Only safetensors weights are loaded.

    Example:
        >>> model, tok = sv.load_model()            # the bundled sftviz-tiny, offline
        >>> type(model).__name__, model.config.n_layer, tok.eos_token
        ('GPT2LMHeadModel', 5, '<|eos|>')
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a model name, hub id or folder path (a string); got {type(name).__name__}.")
    if not isinstance(trust_remote_code, bool):
        raise TypeError("trust_remote_code must be True or False.")
    torch_dtype = _resolve_dtype(dtype)
    dev = resolve_device(device)
    tok, model = _from_pretrained(name, torch_dtype, trust_remote_code)
    ensure_pad_token(tok)
    if getattr(model, "loss_type", None) is None and model.__class__.__name__.endswith(("LMHeadModel", "ForCausalLM")):
        # transformers cannot map "GPT2LMHeadModel" to a loss and warns that loss_type=None is unrecognized
        # before using its causal-LM loss anyway; name that loss so students do not see the warning.
        model.loss_type = "ForCausalLM"
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    model.to(dev)
    model.eval()
    return model, tok
