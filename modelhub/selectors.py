"""Reads for the model hub, with the role rules applied: `access_*` fetches with a permission
check (raises NotFound/PermissionDeniedError), `*_list` returns what the user may see.

Who sees what: models, lineage and generation jobs are for reviewers and admins (annotators
rank blind: they are not told which model wrote a candidate); a prompt's candidates with their
parameters likewise. Starting and cancelling jobs is for admins (services check that).
"""
from __future__ import annotations

from django.db.models import Count, QuerySet

from labeling.models import Candidate, Project, Prompt
from modelhub.models import GenerationJob, ModelArtifact, ProjectGenerator
from studio.errors import NotFound, PermissionDeniedError
from studio.roles import REVIEWER, has_role

def _check_reviewer(user, what: str) -> None:
    if not has_role(user, REVIEWER):
        raise PermissionDeniedError(f"Only reviewers and admins can see {what}.")


def model_list(*, user) -> QuerySet[ModelArtifact]:
    _check_reviewer(user, "models")
    return ModelArtifact.objects.select_related("parent", "created_by").annotate(
        candidate_count=Count("candidates", distinct=True)).order_by("id")


def access_model(*, user, model_id: int) -> ModelArtifact:
    _check_reviewer(user, "models")
    model = ModelArtifact.objects.select_related("parent", "created_by").filter(pk=model_id).first()
    if model is None:
        raise NotFound(f"No model with id {model_id}.")
    return model


def model_lineage(*, model: ModelArtifact) -> list[ModelArtifact]:
    """The chain from `model` back to its root (usually the base): [model, parent, grandparent…]."""
    chain = [model]
    seen = {model.pk}
    current = model
    while current.parent_id is not None and current.parent_id not in seen:
        current = ModelArtifact.objects.select_related("created_by").get(pk=current.parent_id)
        chain.append(current)
        seen.add(current.pk)
    return chain


def model_children(*, model: ModelArtifact) -> QuerySet[ModelArtifact]:
    return model.children.order_by("id")


def project_generator_model(*, project: Project) -> ModelArtifact | None:
    """The model that writes `project`'s candidates: the one an admin promoted for the project
    (ProjectGenerator), else the default model (the first imported base model). Training a model
    never changes it: a policy trained on one project's labels must not start writing another
    project's candidates because it is the newest."""
    from modelhub.default_model import DEFAULT_MODEL_NAME

    chosen = ProjectGenerator.objects.select_related("model").filter(project=project).first()
    if chosen is not None:
        return chosen.model
    default = ModelArtifact.objects.filter(name=DEFAULT_MODEL_NAME, kind=ModelArtifact.Kind.BASE).first()
    return default or ModelArtifact.objects.filter(kind=ModelArtifact.Kind.BASE, project__isnull=True).order_by(
        "created_at", "id").first()


def project_reward_model(*, project: Project) -> ModelArtifact | None:
    """The reward model that scores `project`'s answers on the review pages: the newest one
    trained on its labels (None when it has none). Imported reward models are never picked:
    a reward model says what this project's annotators prefer only if it learnt from them."""
    return ModelArtifact.objects.filter(kind=ModelArtifact.Kind.REWARD, project=project).order_by(
        "-created_at", "-id").first()


def generation_job_list(*, user, project: Project | None = None) -> QuerySet[GenerationJob]:
    _check_reviewer(user, "generation jobs")
    qs = GenerationJob.objects.select_related("project", "model", "created_by")
    if project is not None:
        qs = qs.filter(project=project)
    return qs.order_by("-id")


def access_generation_job(*, user, job_id: int) -> GenerationJob:
    _check_reviewer(user, "generation jobs")
    job = GenerationJob.objects.select_related("project", "model", "created_by").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No generation job with id {job_id}.")
    return job


def candidate_list(*, user, prompt: Prompt) -> QuerySet[Candidate]:
    """A prompt's candidates with their provenance, for reviewers and admins."""
    _check_reviewer(user, "candidates with their generation parameters")
    return prompt.candidates.select_related("model").order_by("id")


def job_candidates(*, job: GenerationJob) -> QuerySet[Candidate]:
    """The candidates a job wrote so far (its external ids are job<id>-k<slot>)."""
    return Candidate.objects.filter(prompt_id__in=job.prompt_ids,
                                    external_id__startswith=f"job{job.pk}-k").select_related("prompt")
