"""Writes to the model registry: registering artifacts (imports, trained models), and choosing a
project's generator. Every later training issue registers its models through `model_register`.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from modelhub.loading import FORMAT_GGUF, FORMAT_HF, FORMAT_PEFT, ModelLoadError, detect_format
from modelhub.models import ModelArtifact, ProjectGenerator
from studio.errors import Conflict, PermissionDeniedError, ValidationFailed
from studio.roles import ADMIN, has_role


def model_store_dir() -> Path:
    return Path(settings.MODEL_DIR)


def model_resolve_path(*, model: ModelArtifact) -> Path:
    """The artifact's absolute path: stored paths are absolute, or relative to STUDIO_MODEL_DIR
    (artifacts the store owns), so the store can move with its data dir."""
    path = Path(model.path)
    return path if path.is_absolute() else model_store_dir() / path


def _store_relative(path: Path) -> str:
    """Paths inside the model store are kept relative to it; others absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(model_store_dir().resolve()))
    except ValueError:
        return str(path)


def _check_kind(kind: str) -> str:
    if kind not in ModelArtifact.Kind.values:
        msg = f"Unknown model kind {kind!r}; use one of {', '.join(ModelArtifact.Kind.values)}."
        raise ValidationFailed(msg, {"kind": [msg]})
    return kind


@transaction.atomic
def model_register(
    *,
    name: str,
    path: str | Path,
    kind: str = ModelArtifact.Kind.BASE,
    format: str = "",
    parent: ModelArtifact | None = None,
    project=None,
    snapshot=None,
    reference_model: ModelArtifact | None = None,
    reward_model: ModelArtifact | None = None,
    config: dict | None = None,
    metrics: dict | None = None,
    library_versions: dict | None = None,
    checksum: str | None = None,
    description: str = "",
    created_by=None,
) -> ModelArtifact:
    """Add one artifact to the registry. The path must exist; its format is detected when not
    given. A peft adapter needs its parent (the model it adapts). A trained model names its
    project, the snapshot (training.DatasetSnapshot) it was trained on and the models it was
    trained against; its weights' checksum is computed here unless given."""
    name = (name or "").strip()
    if not name:
        raise ValidationFailed("A model needs a name.", {"name": ["This cannot be empty."]})
    if len(name) > 200:
        raise ValidationFailed("A model name has at most 200 characters.", {"name": ["At most 200 characters."]})
    _check_kind(kind)
    path = Path(path)
    if not path.is_absolute():
        path = model_store_dir() / path
    try:
        detected = detect_format(path)
    except ModelLoadError as exc:
        raise ValidationFailed(str(exc), {"path": [str(exc)]}) from exc
    format = format or detected
    if format not in (FORMAT_HF, FORMAT_GGUF, FORMAT_PEFT):
        raise ValidationFailed(f"Unknown model format {format!r}.", {"format": ["Use hf, gguf or peft."]})
    if format == FORMAT_PEFT and parent is None:
        raise ValidationFailed("A peft adapter needs its parent model (the model it adapts).",
                               {"parent": ["Required for an adapter."]})
    if snapshot is not None and project is None:
        project = snapshot.project
    if ModelArtifact.objects.filter(name=name).exists():
        raise Conflict(f"A model named {name!r} is already registered.")
    try:
        with transaction.atomic():
            return ModelArtifact.objects.create(
                name=name, kind=kind, format=format, path=_store_relative(path), parent=parent, project=project,
                snapshot=snapshot, reference_model=reference_model, reward_model=reward_model,
                checksum=weights_checksum(path) if checksum is None else checksum,
                library_versions=library_versions or {}, config=config or {}, metrics=metrics or {},
                description=description, created_by=created_by,
            )
    except IntegrityError as exc:
        raise Conflict(f"A model named {name!r} is already registered.") from exc


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def weights_checksum(path: Path) -> str:
    """sha256 over an artifact's weight files, each as its name then its bytes, in name order;
    "" when it has none (or cannot be read). A GGUF file is its own weights."""
    import hashlib

    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES) \
        if path.is_dir() else []
    if not files:
        return ""
    digest = hashlib.sha256()
    try:
        for file in files:
            digest.update(file.name.encode() + b"\0")
            with open(file, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def model_import(*, path: str | Path, name: str, kind: str = ModelArtifact.Kind.BASE,
                 parent: ModelArtifact | None = None, description: str = "",
                 created_by=None) -> tuple[ModelArtifact, bool]:
    """Register a local HF model directory, GGUF file or peft adapter by reference (nothing is
    copied, nothing downloaded). Idempotent: importing the same path under the same name again
    returns the registered artifact. Returns (model, created)."""
    path = Path(path).expanduser().resolve()
    existing = ModelArtifact.objects.filter(name=(name or "").strip()).first()
    if existing is not None:
        if model_resolve_path(model=existing).resolve() == path:
            return existing, False
        raise Conflict(f"A model named {name!r} is already registered with another path ({existing.path}).")
    config = {"imported_from": str(path)}
    if path.is_dir() and (path / "config.json").exists():
        import json

        try:
            hf = json.loads((path / "config.json").read_text())
            config.update({k: hf[k] for k in ("model_type", "architectures", "hidden_size", "num_hidden_layers",
                                              "vocab_size") if k in hf})
        except (OSError, ValueError):
            pass
    model = model_register(name=name, path=path, kind=kind, parent=parent, config=config,
                           description=description, created_by=created_by)
    return model, True


@transaction.atomic
def project_generator_set(*, user, project, model: ModelArtifact) -> ProjectGenerator:
    """Make `model` the one that writes `project`'s candidates (promoting a policy): the only way
    a project's generator changes. The model must write answers and be the project's own (trained
    on its labels) or an imported one (no project)."""
    if not has_role(user, ADMIN):
        raise PermissionDeniedError("Only admins can choose a project's generator.")
    if not model.is_generative:
        raise ValidationFailed(f"{model.name} is a reward model: it scores answers, it cannot write them.",
                               {"model": ["Not a generative model."]})
    if model.project_id is not None and model.project_id != project.pk:
        raise ValidationFailed(f"{model.name} was trained on another project's labels; promote it in its own "
                               "project, or import it to share it.", {"model": ["Another project's model."]})
    generator, _ = ProjectGenerator.objects.update_or_create(project=project,
                                                             defaults={"model": model, "set_by": user})
    return generator


def default_model_ensure(*, user=None) -> ModelArtifact:
    """Convert (once) and register (once) the default SmolLM2 model; see modelhub.default_model.
    Here because the bootstrap step asks the registry for it."""
    from modelhub.default_model import default_model_ensure as ensure

    return ensure(user=user)
