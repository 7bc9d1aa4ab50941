"""Model hub API: HTTP only. Each view validates input, calls one service or selector, and
serialises the result; role rules live in selectors/services and studio.api_permissions."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import selectors as labeling_selectors
from labeling.models import Candidate
from modelhub import registry, selectors, services
from modelhub.models import GenerationJob, ModelArtifact
from studio.api_permissions import IsAdmin, IsReviewer

# --- Models ------------------------------------------------------------------------------------


class ModelRefSerializer(serializers.ModelSerializer):
    snapshot = serializers.CharField(source="snapshot_sha256", read_only=True)

    class Meta:
        model = ModelArtifact
        fields = ("id", "name", "kind", "format", "snapshot", "created_at")


class ModelOutputSerializer(serializers.ModelSerializer):
    """A registered model. `parent` is the id of the model it was trained from (null for a base),
    `project` the project whose labels trained it (null for imported models), `snapshot` the
    sha256 of the dataset snapshot it was trained on ("" for imported models), `reference_model`
    and `reward_model` the models it was trained against, `training_run` the run that made it,
    `checksum` the sha256 of its weight files, `lineage` the chain from this model back to its root."""

    snapshot = serializers.CharField(source="snapshot_sha256", read_only=True)
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    training_run = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    lineage = serializers.SerializerMethodField()

    class Meta:
        model = ModelArtifact
        fields = ("id", "name", "kind", "format", "path", "parent", "project", "snapshot", "reference_model",
                  "reward_model", "training_run", "checksum", "library_versions", "config", "metrics", "description",
                  "created_by", "created_at", "lineage")

    def get_lineage(self, obj) -> list[dict]:
        return ModelRefSerializer(selectors.model_lineage(model=obj), many=True).data

    def get_training_run(self, obj) -> int | None:
        run = getattr(obj, "training_run", None)
        return run.pk if run is not None else None


class ModelListApi(ListAPIView):
    permission_classes = [IsReviewer]
    serializer_class = ModelOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ModelArtifact.objects.none()
        return selectors.model_list(user=self.request.user)


class ModelDetailApi(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(responses=ModelOutputSerializer)
    def get(self, request, model_id: int):
        model = selectors.access_model(user=request.user, model_id=model_id)
        return Response(ModelOutputSerializer(model).data)


class ProjectGeneratorApi(APIView):
    """GET the model that writes a project's candidates; PUT {"model": id} to choose it (admins)."""

    permission_classes = [IsReviewer]

    class GeneratorInputSerializer(serializers.Serializer):
        model = serializers.IntegerField()

    @extend_schema(responses=ModelOutputSerializer)
    def get(self, request, slug: str):
        project = labeling_selectors.access_project(user=request.user, slug=slug)
        model = selectors.project_generator_model(project=project)
        return Response(ModelOutputSerializer(model).data if model else None)

    @extend_schema(request=GeneratorInputSerializer, responses=ModelOutputSerializer)
    def put(self, request, slug: str):
        project = labeling_selectors.access_project(user=request.user, slug=slug)
        data = self.GeneratorInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = selectors.access_model(user=request.user, model_id=data.validated_data["model"])
        generator = registry.project_generator_set(user=request.user, project=project, model=model)
        return Response(ModelOutputSerializer(generator.model).data)


# --- Generation jobs ---------------------------------------------------------------------------


class GenerationJobOutputSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    model = ModelRefSerializer(read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.IntegerField(source="progress_percent", read_only=True)

    class Meta:
        model = GenerationJob
        fields = ("id", "project", "model", "status", "k", "prompt_ids", "generation_settings", "seed",
                  "prompts_done", "prompts_total", "candidates_done", "candidates_total", "progress",
                  "tokens_generated", "tokens_per_second", "eta_seconds", "device", "error", "created_by",
                  "created_at", "started_at", "finished_at", "updated_at")


class GenerationJobListCreateApi(ListAPIView):
    """GET a project's jobs (reviewers, admins). POST starts one (admins): body optional
    {"prompt_ids": [...], "model": id, "k": n}; 202 with the queued job; 503 when the task broker
    cannot be reached (the job is then recorded as failed, never run inline)."""

    permission_classes = [IsReviewer]
    serializer_class = GenerationJobOutputSerializer

    class GenerationJobInputSerializer(serializers.Serializer):
        prompt_ids = serializers.ListField(child=serializers.IntegerField(), required=False, allow_empty=False,
                                           max_length=services.MAX_PROMPTS_PER_JOB)
        model = serializers.IntegerField(required=False)
        k = serializers.IntegerField(required=False, min_value=1, max_value=9)
        seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return GenerationJob.objects.none()
        project = labeling_selectors.access_project(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.generation_job_list(user=self.request.user, project=project)

    @extend_schema(request=GenerationJobInputSerializer, responses={202: GenerationJobOutputSerializer})
    def post(self, request, slug: str):
        if not IsAdmin().has_permission(request, self):
            self.permission_denied(request, message=IsAdmin.message)
        project = labeling_selectors.access_project(user=request.user, slug=slug)
        data = self.GenerationJobInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        try:
            job = services.generation_job_create(user=request.user, project=project, **data.validated_data)
        except services.BrokerUnavailable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(GenerationJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class GenerationJobDetailApi(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(responses=GenerationJobOutputSerializer)
    def get(self, request, job_id: int):
        job = selectors.access_generation_job(user=request.user, job_id=job_id)
        return Response(GenerationJobOutputSerializer(job).data)


class GenerationJobCancelApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=GenerationJobOutputSerializer)
    def post(self, request, job_id: int):
        job = selectors.access_generation_job(user=request.user, job_id=job_id)
        job = services.generation_job_cancel(user=request.user, job=job)
        return Response(GenerationJobOutputSerializer(job).data)


# --- Candidates ----------------------------------------------------------------------------------


class CandidateOutputSerializer(serializers.ModelSerializer):
    """A candidate with how it was made: `generation` holds model, temperature, top_p, seed,
    max_new_tokens, template, tokens generated and seconds; `safety_flags` the screen's marks."""

    model = ModelRefSerializer(read_only=True)
    temperature = serializers.SerializerMethodField()
    seed = serializers.SerializerMethodField()
    flagged = serializers.BooleanField(source="is_flagged", read_only=True)

    class Meta:
        model = Candidate
        fields = ("id", "prompt", "text", "source", "model", "temperature", "seed", "generation", "safety_flags",
                  "flagged", "external_id", "created_at")

    def get_temperature(self, obj) -> float | None:
        return (obj.generation or {}).get("temperature")

    def get_seed(self, obj) -> int | None:
        return (obj.generation or {}).get("seed")


class PromptCandidateListApi(ListAPIView):
    permission_classes = [IsReviewer]
    serializer_class = CandidateOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Candidate.objects.none()
        prompt = labeling_selectors.access_prompt(user=self.request.user, prompt_id=self.kwargs["prompt_id"])
        return selectors.candidate_list(user=self.request.user, prompt=prompt)
