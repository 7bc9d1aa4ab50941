"""Dataset snapshot API: HTTP only. Views validate input, call one service or selector, and
serialise; role rules live in training.selectors / training.snapshots. Included under /api/v1/.

    POST /projects/{slug}/snapshots/             admins; body: optional filters. A snapshot job is
                                                 queued and waited for (STUDIO_SNAPSHOT_WAIT_SECONDS,
                                                 default 20): done in time → 201 new / 200 the same
                                                 labels were already frozen, with the snapshot;
                                                 else 202 with the job (poll its `url`); 500 failed,
                                                 409 cancelled (with the job), 503 broker down
    GET  /projects/{slug}/snapshots/             reviewers and admins
    GET  /snapshots/{sha256}/                    reviewers and admins
    GET  /snapshot-jobs/{id}/                    admins: status, progress, the snapshot's sha256 once done
    POST /snapshot-jobs/{id}/cancel/             admins (409 when finished)
    GET  /snapshots/{sha256}/export/{format}/    admins; streamed (the format is a path segment
                                                 because DRF reserves the `format` query parameter).
                                                 `hf` is built by a job: 200 with the finished file
                                                 of the same export, else 202 with its job (started
                                                 or reused; poll its `url`, then GET again)
    POST /snapshots/{sha256}/export/hf/          admins: start (or reuse) the hf export job → 202,
                                                 or 200 when it is already built
    GET  /export-jobs/{id}/                      admins: status, progress, `download_url` once done
    POST /export-jobs/{id}/cancel/               admins (409 when finished)
"""
from __future__ import annotations

from django.http import FileResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.selectors import access_project
from studio.api_permissions import HasAnyRole, IsAdmin
from studio.errors import PermissionDeniedError, ValidationFailed
from studio.jobs import BrokerUnavailable
from studio.roles import ADMIN, has_role
from training import export_jobs, selectors, snapshot_jobs, snapshots
from training.exports import EXPORT_FORMATS, ExportOptions, export_expected_rows, export_format, export_stream
from training.models import DatasetSnapshot, ExportJob, SnapshotJob


def _broker_down(exc: BrokerUnavailable) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)


class SnapshotOutputSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    exports = serializers.SerializerMethodField()

    class Meta:
        model = DatasetSnapshot
        fields = ("sha256", "project", "schema_version", "filters", "split", "counts", "sources", "size_bytes",
                  "created_by", "created_at", "exports")

    def get_exports(self, obj) -> dict[str, str]:
        """{format: export URL} (the URLs answer admins only)."""
        return {name: reverse("api-snapshot-export", args=[obj.sha256, name]) for name in EXPORT_FORMATS}


class SnapshotInputSerializer(serializers.Serializer):
    """Every field is optional; `{}` snapshots everything that counts."""

    created_from = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                         help_text="Date or ISO datetime: labels created at or after it.")
    created_to = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                       help_text="Date (the whole day included) or ISO datetime (excluded).")
    min_agreement = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    exclude_flagged_candidates = serializers.BooleanField(required=False)
    exclude_flagged_labels = serializers.BooleanField(required=False)
    exclude_imported = serializers.BooleanField(required=False)
    validation_fraction = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=0.99)
    split_seed = serializers.IntegerField(required=False, allow_null=True)


class SnapshotJobOutputSerializer(serializers.ModelSerializer):
    """A snapshot job: `status` queued → running → succeeded/failed/cancelled, `progress` (%) of
    the project's prompts read, and once it has succeeded `snapshot` (the sha256; `created`
    false when the same labels were already frozen) and `snapshot_url`. Poll `url`."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    snapshot = serializers.CharField(source="snapshot_id", read_only=True, allow_null=True)
    snapshot_url = serializers.SerializerMethodField()
    progress = serializers.IntegerField(source="progress_percent", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = SnapshotJob
        fields = ("id", "project", "status", "progress", "prompts_done", "prompts_total", "eta_seconds", "filters",
                  "split", "snapshot", "created", "snapshot_url", "error", "url", "created_by", "created_at",
                  "started_at", "finished_at", "updated_at")

    def get_snapshot_url(self, obj) -> str | None:
        return reverse("api-snapshot", args=[obj.snapshot_id]) if obj.snapshot_id else None

    def get_url(self, obj) -> str:
        return reverse("api-snapshot-job", args=[obj.pk])


def snapshot_job_response(job: SnapshotJob) -> Response:
    """The answer to a snapshot request once its wait is over: the snapshot when the job is done
    (201 new, 200 the same labels were already frozen), else the job (202 still going, 500
    failed, 409 cancelled)."""
    if job.status == SnapshotJob.Status.SUCCEEDED and job.snapshot_id:
        snapshot = DatasetSnapshot.objects.select_related("project", "created_by").get(sha256=job.snapshot_id)
        return Response(SnapshotOutputSerializer(snapshot).data,
                        status=status.HTTP_201_CREATED if job.created else status.HTTP_200_OK)
    body = SnapshotJobOutputSerializer(job).data
    if job.status == SnapshotJob.Status.FAILED:
        return Response({"detail": f"The snapshot could not be made: {job.error}", "job": body},
                        status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    if job.status == SnapshotJob.Status.CANCELLED:
        return Response({"detail": f"{job.title} was cancelled.", "job": body}, status=status.HTTP_409_CONFLICT)
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class SnapshotListCreateApi(ListAPIView):
    permission_classes = [HasAnyRole]
    serializer_class = SnapshotOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request, no project
            return DatasetSnapshot.objects.none()
        project = access_project(user=self.request.user, slug=self.kwargs["slug"])
        return selectors.snapshot_list(user=self.request.user, project=project)

    @extend_schema(request=SnapshotInputSerializer, responses={200: SnapshotOutputSerializer,
                                                               201: SnapshotOutputSerializer,
                                                               202: SnapshotJobOutputSerializer})
    def post(self, request, slug: str):
        project = access_project(user=request.user, slug=slug)
        if not has_role(request.user, ADMIN):
            raise PermissionDeniedError("Only admins can create dataset snapshots.")
        body = request.data if request.data is not None else {}
        if hasattr(body, "dict"):
            body = body.dict()
        if not isinstance(body, dict):
            raise ValidationFailed("The body must be a JSON object of filters (or empty).")
        filters, split = snapshots.snapshot_spec_clean(body)
        try:
            job = snapshot_jobs.snapshot_job_create(user=request.user, project=project, filters=filters, split=split)
        except BrokerUnavailable as exc:
            return _broker_down(exc)
        return snapshot_job_response(snapshot_jobs.snapshot_job_wait(job=job))


class SnapshotJobDetailApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=SnapshotJobOutputSerializer)
    def get(self, request, job_id: int):
        return Response(SnapshotJobOutputSerializer(snapshot_jobs.access_snapshot_job(user=request.user, job_id=job_id)).data)


class SnapshotJobCancelApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=SnapshotJobOutputSerializer)
    def post(self, request, job_id: int):
        job = snapshot_jobs.access_snapshot_job(user=request.user, job_id=job_id)
        job = snapshot_jobs.snapshot_job_cancel(user=request.user, job=job)
        return Response(SnapshotJobOutputSerializer(job).data)


class SnapshotDetailApi(APIView):
    permission_classes = [HasAnyRole]

    @extend_schema(responses=SnapshotOutputSerializer)
    def get(self, request, sha256: str):
        snapshot = selectors.access_snapshot(user=request.user, sha256=sha256)
        return Response(SnapshotOutputSerializer(snapshot).data)


EXPORT_PARAMETERS = [
    OpenApiParameter("labels", str, enum=["consensus", "annotators", "both"],
                     description="Pairs from the consensus (default), each annotator's ranking, or both."),
    OpenApiParameter("ties", bool, description="Also emit tied pairs (tie: true)."),
    OpenApiParameter("redact", bool, description="Replace emails, phone and card numbers with placeholders."),
    OpenApiParameter("split", str, enum=["train", "validation"], description="Only one split's rows."),
    OpenApiParameter("rows", str, description="hf: preference|preference-conversational|sft|prompts; "
                                              "openai-chat: sft|preference."),
]


class ExportJobOutputSerializer(serializers.ModelSerializer):
    """An export built by a job: `status`, `phase` (rows → dataset → archive → done), `progress`
    (%), and once it has succeeded `download_url` (GET it) and `size_bytes`. Poll `url`."""

    snapshot = serializers.CharField(source="snapshot_id", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.IntegerField(source="progress_percent", read_only=True)
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = ("id", "snapshot", "format", "options", "status", "phase", "progress", "rows_done", "rows_total",
                  "eta_seconds", "filename", "size_bytes", "error", "url", "download_url", "created_by", "created_at",
                  "started_at", "finished_at", "updated_at")

    def get_url(self, obj) -> str:
        return reverse("api-export-job", args=[obj.pk])

    def get_download_url(self, obj) -> str | None:
        return export_jobs.export_download_url(obj) if obj.status == ExportJob.Status.SUCCEEDED else None


def _export_job_answer(job: ExportJob, *, done_status: int) -> Response:
    body = ExportJobOutputSerializer(job).data
    if job.status == ExportJob.Status.SUCCEEDED:
        return Response(body, status=done_status)
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


def _export_file_response(job: ExportJob) -> FileResponse:
    response = FileResponse(open(job.file_path, "rb"), as_attachment=True, filename=job.filename,
                            content_type=export_format(job.format).media_type)
    response["X-Snapshot-SHA256"] = job.snapshot_id
    response["Cache-Control"] = "private, no-store"
    return response


class SnapshotExportApi(APIView):
    """Streams an export of a snapshot (constant memory). The response is never rendered by DRF,
    so any Accept header is served rather than refused. `hf` is built by a job first: GET serves
    its finished file, or answers 202 with the job (started or reused); POST starts it."""

    permission_classes = [HasAnyRole]

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(parameters=EXPORT_PARAMETERS, responses={(200, "application/octet-stream"): OpenApiTypes.BINARY,
                                                            202: ExportJobOutputSerializer})
    def get(self, request, sha256: str, export_format: str):
        snapshot = selectors.access_snapshot_for_export(user=request.user, sha256=sha256)
        options = ExportOptions.from_query(request.query_params)
        if export_jobs.export_is_job(export_format):
            try:
                job = export_jobs.export_job_for(user=request.user, snapshot=snapshot, format_name=export_format,
                                                 options=options)
            except BrokerUnavailable as exc:
                return _broker_down(exc)
            if job.status == ExportJob.Status.SUCCEEDED:
                return _export_file_response(job)
            return _export_job_answer(job, done_status=status.HTTP_200_OK)
        export = export_stream(snapshot=snapshot, format_name=export_format, options=options)
        response = StreamingHttpResponse(export.chunks, content_type=export.media_type)
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        response["X-Snapshot-SHA256"] = snapshot.sha256
        response["Cache-Control"] = "private, no-store"
        expected = export_expected_rows(snapshot=snapshot, format_name=export_format, options=options)
        if expected is not None:
            response["X-Export-Expected-Rows"] = str(expected)
        return response

    @extend_schema(parameters=EXPORT_PARAMETERS, request=None,
                   responses={200: ExportJobOutputSerializer, 202: ExportJobOutputSerializer})
    def post(self, request, sha256: str, export_format: str):
        """Start (or reuse) the job that builds an `hf` export; the other formats are streamed
        by GET (400 here)."""
        snapshot = selectors.access_snapshot_for_export(user=request.user, sha256=sha256)
        body = request.data if isinstance(request.data, dict) and request.data else request.query_params
        options = ExportOptions.from_query(body)
        try:
            job = export_jobs.export_job_for(user=request.user, snapshot=snapshot, format_name=export_format,
                                             options=options)
        except BrokerUnavailable as exc:
            return _broker_down(exc)
        return _export_job_answer(job, done_status=status.HTTP_200_OK)


class ExportJobDetailApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=ExportJobOutputSerializer)
    def get(self, request, job_id: int):
        return Response(ExportJobOutputSerializer(export_jobs.access_export_job(user=request.user, job_id=job_id)).data)


class ExportJobCancelApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=ExportJobOutputSerializer)
    def post(self, request, job_id: int):
        job = export_jobs.access_export_job(user=request.user, job_id=job_id)
        job = export_jobs.export_job_cancel(user=request.user, job=job)
        return Response(ExportJobOutputSerializer(job).data)
