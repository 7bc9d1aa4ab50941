"""Labeling API: HTTP only. Each view validates input, calls one service or selector, and
serialises the result; role rules live in selectors/services and studio.api_permissions."""
from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling import selectors, services
from labeling.importers import IMPORT_FORMATS, import_run_cancel, import_run_create
from labeling.importers.run import access_import
from labeling.models import Demonstration, ImportRun, Project, Prompt
from studio.api_permissions import AnyRoleReadsAdminWrites, HasAnyRole, IsAdmin
from studio.jobs import BrokerUnavailable
from studio.roles import REVIEWER, has_role


def _idempotency_key(request, body_key: str | None) -> str:
    return body_key or request.headers.get("Idempotency-Key", "")


# --- Projects ---------------------------------------------------------------------------------

class ProjectOutputSerializer(serializers.ModelSerializer):
    prompt_count = serializers.IntegerField(read_only=True, required=False)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Project
        fields = ("id", "name", "slug", "description", "guidelines", "k_candidates", "overlap", "lease_minutes",
                  "generation_settings", "is_archived", "created_by", "created_at", "updated_at", "prompt_count")


class ProjectInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80)
    description = serializers.CharField(required=False, allow_blank=True)
    guidelines = serializers.CharField(required=False, allow_blank=True)
    k_candidates = serializers.IntegerField(required=False, min_value=2, max_value=9)
    overlap = serializers.IntegerField(required=False, min_value=1, max_value=20)
    lease_minutes = serializers.IntegerField(required=False, min_value=1, max_value=1440)
    generation_settings = serializers.JSONField(required=False)
    is_archived = serializers.BooleanField(required=False)


class ProjectListCreateApi(ListAPIView):
    permission_classes = [AnyRoleReadsAdminWrites]
    serializer_class = ProjectOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user, no role
            return Project.objects.none()
        return selectors.project_list(user=self.request.user, include_archived=True)

    @extend_schema(request=ProjectInputSerializer, responses={201: ProjectOutputSerializer})
    def post(self, request):
        data = ProjectInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_create(user=request.user, **data.validated_data)
        return Response(ProjectOutputSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    permission_classes = [AnyRoleReadsAdminWrites]

    @extend_schema(responses=ProjectOutputSerializer)
    def get(self, request, slug: str):
        project = selectors.access_project(user=request.user, slug=slug)
        return Response(ProjectOutputSerializer(project).data)

    @extend_schema(request=ProjectInputSerializer(partial=True), responses=ProjectOutputSerializer)
    def patch(self, request, slug: str):
        project = selectors.access_project(user=request.user, slug=slug)
        data = ProjectInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = services.project_update(user=request.user, project=project, **data.validated_data)
        return Response(ProjectOutputSerializer(project).data)


# --- Prompts and demonstrations ---------------------------------------------------------------

class DemonstrationOutputSerializer(serializers.ModelSerializer):
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Demonstration
        fields = ("id", "prompt", "text", "author", "source", "created_at")


class PromptOutputSerializer(serializers.ModelSerializer):
    """Who wrote a prompt and its demonstrations are labels: annotators see them only for their
    own work (blind labelling)."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SerializerMethodField()
    demonstrations = serializers.SerializerMethodField()
    system = serializers.CharField(read_only=True)

    class Meta:
        model = Prompt
        fields = ("id", "project", "kind", "messages", "system", "documents", "source", "source_format",
                  "external_id", "created_by", "created_at", "demonstrations")

    def _viewer(self):
        request = self.context.get("request")
        return request.user if request else None

    def get_created_by(self, obj) -> str | None:
        viewer = self._viewer()
        if obj.created_by is None:
            return None
        if has_role(viewer, REVIEWER) or obj.created_by_id == getattr(viewer, "pk", None):
            return obj.created_by.username
        return None

    def get_demonstrations(self, obj) -> list[dict]:
        viewer = self._viewer()
        demos = [d for d in obj.demonstrations.all()
                 if has_role(viewer, REVIEWER) or d.author_id == getattr(viewer, "pk", None)]
        return DemonstrationOutputSerializer(demos, many=True).data


class MessageSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField(trim_whitespace=False, allow_blank=True)


class PromptInputSerializer(serializers.Serializer):
    # Shapes only: the rules (roles, alternation, sizes) are checked by the service.
    messages = serializers.JSONField()
    kind = serializers.CharField(required=False, allow_blank=True)
    documents = serializers.JSONField(required=False)
    demonstration = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    idempotency_key = serializers.CharField(required=False, allow_blank=True, max_length=64)


class PromptListCreateApi(ListAPIView):
    permission_classes = [HasAnyRole]
    serializer_class = PromptOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Prompt.objects.none()
        project = selectors.access_project(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.prompt_list(user=self.request.user, project=project).prefetch_related(
            "demonstrations__author")

    @extend_schema(request=PromptInputSerializer, responses={201: PromptOutputSerializer, 200: PromptOutputSerializer})
    def post(self, request, slug: str):
        project = selectors.access_project(user=request.user, slug=slug)
        data = PromptInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        body = data.validated_data
        prompt, created = services.prompt_create(
            project=project, user=request.user, messages=body["messages"], kind=body.get("kind"),
            documents=body.get("documents"), demonstration=body.get("demonstration"),
            idempotency_key=_idempotency_key(request, body.get("idempotency_key")),
        )
        return Response(PromptOutputSerializer(prompt, context={"request": request}).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class PromptDetailApi(APIView):
    permission_classes = [HasAnyRole]

    @extend_schema(responses=PromptOutputSerializer)
    def get(self, request, prompt_id: int):
        prompt = selectors.access_prompt(user=request.user, prompt_id=prompt_id)
        return Response(PromptOutputSerializer(prompt, context={"request": request}).data)


class DemonstrationListCreateApi(ListAPIView):
    permission_classes = [HasAnyRole]
    serializer_class = DemonstrationOutputSerializer

    class DemonstrationInputSerializer(serializers.Serializer):
        text = serializers.CharField(trim_whitespace=False, allow_blank=True)
        idempotency_key = serializers.CharField(required=False, allow_blank=True, max_length=64)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Demonstration.objects.none()
        prompt = selectors.access_prompt(user=self.request.user, prompt_id=self.kwargs["prompt_id"])
        return selectors.demonstration_list(user=self.request.user, prompt=prompt)

    @extend_schema(request=DemonstrationInputSerializer, responses={201: DemonstrationOutputSerializer})
    def post(self, request, prompt_id: int):
        prompt = selectors.access_prompt(user=request.user, prompt_id=prompt_id)
        data = self.DemonstrationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        demo, created = services.demonstration_create(
            prompt=prompt, user=request.user, text=data.validated_data["text"],
            idempotency_key=_idempotency_key(request, data.validated_data.get("idempotency_key")),
        )
        return Response(DemonstrationOutputSerializer(demo).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


# --- Imports ----------------------------------------------------------------------------------

class ImportRunOutputSerializer(serializers.ModelSerializer):
    """An import: a job (`status` queued → running → succeeded/failed/cancelled) with its progress
    (`rows_done`, `bytes_done` of `size_bytes`, `progress` %, `eta_seconds`) and, once finished,
    its outcome. `result` keeps the outcome as imports reported it before they were jobs
    ("succeeded", "partial": some rows were bad, "failed": nothing could be imported; null while
    it runs); `bad_rows` counts every bad row (`errors` lists the first 1000); `error` says why a
    failed or broken import stopped. `url` is where to poll it."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    result = serializers.CharField(read_only=True, allow_null=True)
    partial = serializers.BooleanField(read_only=True)
    rows_done = serializers.SerializerMethodField()
    progress = serializers.IntegerField(source="progress_percent", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = ImportRun
        fields = ("id", "project", "format", "filename", "file_sha256", "status", "result", "partial", "counts",
                  "errors", "bad_rows", "rows_done", "bytes_done", "size_bytes", "progress", "eta_seconds", "error",
                  "resumes", "url", "created_by", "created_at", "started_at", "finished_at", "updated_at")

    def get_rows_done(self, obj) -> int:
        return (obj.counts or {}).get("rows", 0)

    def get_url(self, obj) -> str:
        return reverse("api-import", args=[obj.pk])


class ImportListCreateApi(ListAPIView):
    """GET a project's imports (admins). POST uploads a file (multipart `file` and `format`): it
    is saved and imported by a worker; the answer is 202 with the queued import, whose `url`
    (also the Location header) gives its progress and then what was created and every bad row
    with its line number. Importing the same rows twice creates nothing. 503 when the task
    broker cannot be reached (the import is then recorded as failed, never run inline)."""

    permission_classes = [IsAdmin]
    serializer_class = ImportRunOutputSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    class ImportInputSerializer(serializers.Serializer):
        file = serializers.FileField()
        format = serializers.ChoiceField(choices=sorted(IMPORT_FORMATS))

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ImportRun.objects.none()
        project = selectors.access_project(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.import_run_list(user=self.request.user, project=project)

    @extend_schema(request={"multipart/form-data": ImportInputSerializer}, responses={202: ImportRunOutputSerializer})
    def post(self, request, slug: str):
        project = selectors.access_project(user=request.user, slug=slug)
        data = self.ImportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        try:
            run = import_run_create(project=project, user=request.user, stream=upload,
                                    filename=upload.name, format=data.validated_data["format"])
        except BrokerUnavailable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        body = ImportRunOutputSerializer(run).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class ImportDetailApi(APIView):
    """An import's progress, then its outcome (admins)."""

    permission_classes = [IsAdmin]

    @extend_schema(responses=ImportRunOutputSerializer)
    def get(self, request, run_id: int):
        run = access_import(user=request.user, run_id=run_id)
        return Response(ImportRunOutputSerializer(run).data)


class ImportCancelApi(APIView):
    """Stop a queued or running import (admins); the rows already written stay. 409 when it has
    already finished."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=ImportRunOutputSerializer)
    def post(self, request, run_id: int):
        run = access_import(user=request.user, run_id=run_id)
        run = import_run_cancel(user=request.user, run=run)
        return Response(ImportRunOutputSerializer(run).data)
