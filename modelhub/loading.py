"""Loading model artifacts from disk: Hugging Face safetensors directories, GGUF files and peft
adapters on a parent. Pure torch/transformers (no Django), so a GPU worker, a benchmark and a
test use the same code.

Nothing here downloads: every `from_pretrained` is given a local path and `local_files_only`.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from training.ml.models import merged_adapter  # a LoRA adapter merged; a soft prompt kept as peft applies it

log = logging.getLogger(__name__)

FORMAT_HF = "hf"
FORMAT_GGUF = "gguf"
FORMAT_PEFT = "peft"


class ModelLoadError(Exception):
    """The artifact is missing, unreadable or not a causal language model; the message says which."""


def pick_device(requested: str | None = None) -> torch.device:
    """`requested` ("cpu", "cuda", "cuda:1", "mps") wins; empty means CUDA when there is one, else CPU."""
    requested = (requested or "").strip()
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"STUDIO_DEVICE={requested!r} but this machine has no CUDA device.")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it (fp16 on older ones); fp32 on CPU, where half precision is slower."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def detect_format(path: Path) -> str:
    """What kind of artifact `path` is: a .gguf file, a peft adapter dir or a HF model dir."""
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return FORMAT_GGUF
        raise ModelLoadError(f"{path} is a file but not a .gguf file; give a model directory or a GGUF file.")
    if not path.is_dir():
        raise ModelLoadError(f"{path} does not exist.")
    if (path / "adapter_config.json").exists():
        return FORMAT_PEFT
    if (path / "config.json").exists():
        return FORMAT_HF
    raise ModelLoadError(f"{path} has neither config.json (a Hugging Face model) nor adapter_config.json "
                         "(a peft adapter).")


def read_adapter_base(path: Path) -> str:
    """The base model a peft adapter names (`base_model_name_or_path`)."""
    try:
        return json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read {path / 'adapter_config.json'}: {exc}") from exc


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF file into a safetensors directory (model + tokenizer) at `out_dir`.

    transformers loads a GGUF file dequantised to fp32 (~19 s for SmolLM2-135M) but refuses to
    `save_pretrained` a model loaded that way (its config carries a gguf quantization_config).
    So a fresh model is built from the config without it, given the dequantised weights, and
    saved; the copy then loads in a fraction of a second. Written to a temporary sibling and
    renamed, so a crash never leaves a half-written model that looks complete.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file {gguf_path} does not exist.")
    out_dir = Path(out_dir)
    tmp_dir = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                      local_files_only=True)
    except Exception as exc:  # transformers raises many kinds; the message is what matters
        raise ModelLoadError(f"Cannot read GGUF file {gguf_path}: {exc}") from exc
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings appear as "missing" (they share the input embedding's tensor).
    missing = [k for k in missing if not (config.tie_word_embeddings and k.startswith("lm_head."))]
    if missing or unexpected:
        raise ModelLoadError(f"Converting {gguf_path.name}: missing weights {missing[:5]}, unexpected {unexpected[:5]}.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(tmp_dir, safe_serialization=True)
    tokenizer.save_pretrained(tmp_dir)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp_dir.rename(out_dir)
    log.info("Converted %s into %s in %.1f s", gguf_path, out_dir, time.perf_counter() - t0)
    return out_dir


@dataclass
class LoadedModel:
    """A model ready to generate, with what it was loaded as."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    path: str
    seconds: float  # how long loading took


def load_causal_lm(path: str | Path, *, format: str = "", device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None, base_path: str | Path | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer from a local artifact, in eval mode on `device`.

    `format` is "hf", "gguf" or "peft" (detected when empty); a peft adapter needs `base_path`,
    the directory of the model it adapts (or the tokenizer/model it names must be local).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a worker's log is not a terminal
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"Model path {path} does not exist (was the model store moved or deleted?).")
    format = format or detect_format(path)
    device = device if isinstance(device, torch.device) else pick_device(device)
    dtype = dtype or pick_dtype(device)
    t0 = time.perf_counter()
    try:
        if format == FORMAT_GGUF:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True,
                                                         dtype=dtype)
        elif format == FORMAT_PEFT:
            from peft import PeftModel  # optional dependency: only adapters need it

            base = Path(base_path or read_adapter_base(path))
            if not base.exists():
                raise ModelLoadError(f"The adapter {path} needs its base model at {base}, which does not exist.")
            tok_source = path if (path / "tokenizer_config.json").exists() else base
            tokenizer = AutoTokenizer.from_pretrained(tok_source, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=dtype)
            model = merged_adapter(PeftModel.from_pretrained(model, path, local_files_only=True))
        else:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    except ModelLoadError:
        raise
    except ImportError as exc:
        raise ModelLoadError(f"Loading {path} needs a package that is not installed: {exc}") from exc
    except Exception as exc:
        raise ModelLoadError(f"Cannot load model {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=dtype, path=str(path),
                       seconds=time.perf_counter() - t0)


# --- Reward models ------------------------------------------------------------------------------

# Written beside a trained reward model's weights: where its score is read and the offset that
# centres it (training.ml.models.save_trained writes it; every scorer subtracts the offset).
from training.ml.models import REWARD_HEAD_FILE  # noqa: E402 (written there by the trainer)


def read_reward_offset(path: str | Path) -> float:
    head = Path(path) / REWARD_HEAD_FILE
    if head.exists():
        try:
            return float(json.loads(head.read_text()).get("offset", 0.0))
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"Cannot read {head}: {exc}") from exc
    return 0.0


@dataclass
class LoadedRewardModel:
    """A reward model ready to score: a sequence-classification model with one output."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    offset: float  # subtracted from every raw score
    path: str
    seconds: float


def load_reward_model(path: str | Path, *, format: str = "", device: torch.device | str | None = None,
                      base_path: str | Path | None = None) -> LoadedRewardModel:
    """Load a reward model (a Hugging Face sequence-classification model with one label, or a
    peft adapter on its base, merged) in eval mode on `device`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"Model path {path} does not exist (was the model store moved or deleted?).")
    format = format or detect_format(path)
    device = device if isinstance(device, torch.device) else pick_device(device)
    dtype = pick_dtype(device)
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if format == FORMAT_PEFT:
            from peft import PeftModel

            base = Path(base_path or read_adapter_base(path))
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, local_files_only=True,
                                                                       dtype=dtype)
            model = merged_adapter(PeftModel.from_pretrained(model, path, local_files_only=True))
        elif format == FORMAT_HF:
            model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, dtype=dtype)
        else:
            raise ModelLoadError(f"{path} is a {format} file; reward models are saved as model directories.")
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"Cannot load reward model {path}: {exc}") from exc
    if getattr(model.config, "num_labels", 1) != 1:
        raise ModelLoadError(f"{path} has {model.config.num_labels} outputs; a reward model has one.")
    model.to(device)
    model.eval()
    return LoadedRewardModel(model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                             offset=read_reward_offset(path), path=str(path), seconds=time.perf_counter() - t0)


# A worker generates for many jobs with the same model: keep the last few loaded (keyed by path,
# format, device and the artifact's mtime so a replaced directory is reloaded).
_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = int(os.environ.get("STUDIO_MODEL_CACHE_SIZE", "2"))


def _cached(key: tuple, load):
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    loaded = load()
    with _CACHE_LOCK:
        _CACHE[key] = loaded
        while len(_CACHE) > max(_CACHE_SIZE, 1):
            _CACHE.pop(next(iter(_CACHE)))
    return loaded


def _cache_key(what: str, path: Path, format: str, device, base_path) -> tuple:
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = None
    return (what, str(path), format, str(device), str(base_path or ""), mtime)


def load_cached(path: str | Path, *, format: str = "", device: str | None = None,
                base_path: str | Path | None = None) -> LoadedModel:
    path = Path(path)
    resolved = pick_device(device)
    return _cached(_cache_key("lm", path, format, resolved, base_path),
                   lambda: load_causal_lm(path, format=format, device=resolved, base_path=base_path))


def load_reward_cached(path: str | Path, *, format: str = "", device: str | None = None,
                       base_path: str | Path | None = None) -> LoadedRewardModel:
    path = Path(path)
    resolved = pick_device(device)
    return _cached(_cache_key("reward", path, format, resolved, base_path),
                   lambda: load_reward_model(path, format=format, device=resolved, base_path=base_path))


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
