"""Demo content and the default model for a fresh install (used by `studio_bootstrap`)."""
from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from labeling.models import ImportRun, Project

# (slug, name, data file, import format, K, guidelines)
DEMO_PROJECTS = (
    ("self-instruct-demo", "Self-Instruct seed tasks", "self_instruct_seed_tasks.jsonl", "self-instruct", 4,
     "Write prompts a real user would ask and the answer you would be proud of.\n\n"
     "* Follow the instruction exactly.\n* Be **truthful**: say when you do not know.\n"
     "* Be **harmless**: refuse dangerous requests politely."),
    ("fgrlhf-qa-demo", "Long-form QA (FineGrainedRLHF)", "fgrlhf_qa_dev_feedback.json", "fgrlhf", 4,
     "Rank answers by how **correct, complete and relevant** they are to the question, using the "
     "reference passages.\n\n* Factual errors weigh most.\n* Irrelevant padding is a defect."),
)


def demo_data_dir() -> Path:
    return Path(os.environ.get("STUDIO_DEMO_DATA_DIR", settings.BASE_DIR.parent / "shared" / "data"))


def bootstrap_demo_projects(*, user) -> list[str]:
    """Create and fill the demo projects once; a file already imported is not read again."""
    from labeling.importers import import_run_in_process
    from labeling.services import project_create

    folder = demo_data_dir()
    if not folder.is_dir():
        return [f"No demo data at {folder}; skipping demo projects."]
    lines = []
    for slug, name, filename, fmt, k, guidelines in DEMO_PROJECTS:
        path = folder / filename
        if not path.exists():
            continue
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            project = project_create(user=user, name=name, slug=slug, guidelines=guidelines, k_candidates=k)
        if ImportRun.objects.filter(project=project, filename=filename, status=ImportRun.Status.SUCCEEDED).exists():
            continue
        with path.open("rb") as stream:
            run = import_run_in_process(project=project, user=user, stream=stream, filename=filename,
                                        format=fmt)
        lines.append(f"Demo project {slug}: imported {filename} ({run.status}, {run.counts}).")
    return lines


def bootstrap_default_model(*, user) -> list[str]:
    """Convert the shipped SmolLM2 GGUF into the model store once and register it as the base."""
    try:
        from modelhub.registry import default_model_ensure
    except ImportError:  # the model hub is not installed in this build
        return ["Model hub not available; skipping the default model."]
    model = default_model_ensure(user=user)
    return [f"Default model: {model.name} ({model.path})."]
