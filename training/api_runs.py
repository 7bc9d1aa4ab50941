"""Training runs, evaluations and scores over HTTP: views validate, call one service or
selector, and serialise. Included under /api/v1/ by training/api_urls.py.

    POST /training-runs/                          admins: {"kind", "base_model", "snapshot", "config"} -> 202
    GET  /training-runs/                          admins: every run, newest first
    GET  /training-runs/{id}/                     admins: status, progress, metrics, the registered model
    GET  /training-runs/{id}/metrics/             admins: metrics over steps (?after=<step> for new ones)
    POST /training-runs/{id}/cancel/              admins
    POST /models/{id}/evaluations/                admins: {"snapshot", "split"} -> 202
    GET  /models/{id}/evaluations/                reviewers and admins
    GET  /models/{id}/evaluations/{eid}/          reviewers and admins
    POST /models/{id}/score/                      reviewers and admins: {"messages", "candidates"} -> {"scores"}
"""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from modelhub import selectors as modelhub_selectors
from modelhub.api import ModelRefSerializer
from studio.api_permissions import IsAdmin, IsReviewer
from studio.jobs import BrokerUnavailable
from training import evaluations, runs, selectors
from training.models import ModelEvaluation, TrainingMetric, TrainingRun


def _broker_down(exc: BrokerUnavailable) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)


# --- Training runs ----------------------------------------------------------------------------

class TrainingRunOutputSerializer(serializers.ModelSerializer):
    """A run. `model` is the id of the model it registered (null until it succeeds); `progress`
    a percentage; `metrics` the latest value of each metric ("train/loss", "validation/accuracy",
    ...); `data_stats` what the snapshot gave (examples, pairs, truncation) per split."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    base_model = ModelRefSerializer(read_only=True)
    snapshot = serializers.CharField(source="snapshot_id", read_only=True)
    model = serializers.PrimaryKeyRelatedField(read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.IntegerField(source="progress_percent", read_only=True)

    class Meta:
        model = TrainingRun
        fields = ("id", "kind", "status", "project", "base_model", "reward_model", "snapshot", "config", "step",
                  "total_steps", "epoch", "progress", "eta_seconds", "metrics", "data_stats", "checkpoint_step",
                  "resumed_from_step", "resumes", "device", "error", "log_tail", "model", "created_by",
                  "created_at", "started_at", "finished_at", "updated_at")


class TrainingRunInputSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="sft or reward (ppo, dpo and best_of_n come next).")
    base_model = serializers.IntegerField(help_text="The model to start from (the base, or an SFT model).")
    snapshot = serializers.CharField(help_text="The dataset snapshot's sha256.")
    config = serializers.JSONField(required=False, help_text="Settings; missing ones take their defaults.")
    reward_model = serializers.IntegerField(required=False, allow_null=True)


class TrainingRunListCreateApi(ListAPIView):
    permission_classes = [IsAdmin]
    serializer_class = TrainingRunOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return TrainingRun.objects.none()
        return selectors.training_run_list(user=self.request.user)

    @extend_schema(request=TrainingRunInputSerializer, responses={202: TrainingRunOutputSerializer})
    def post(self, request):
        data = TrainingRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            run = runs.training_run_create(user=request.user, **data.validated_data)
        except BrokerUnavailable as exc:
            return _broker_down(exc)
        return Response(TrainingRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class TrainingRunDetailApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(responses=TrainingRunOutputSerializer)
    def get(self, request, run_id: int):
        run = selectors.access_training_run(user=request.user, run_id=run_id)
        return Response(TrainingRunOutputSerializer(run).data)


class TrainingMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingMetric
        fields = ("split", "step", "values")


class TrainingRunMetricsApi(APIView):
    """Metrics over steps, oldest first: every training step's and every validation's. The run
    page asks for those after the last step it has (`?after=`) every few seconds."""

    permission_classes = [IsAdmin]

    @extend_schema(parameters=[OpenApiParameter("after", int, description="Only steps after this one.")],
                   responses=TrainingMetricSerializer(many=True))
    def get(self, request, run_id: int):
        run = selectors.access_training_run(user=request.user, run_id=run_id)
        rows = selectors.training_run_metrics(run=run, after=request.query_params.get("after"))
        return Response(TrainingMetricSerializer(rows, many=True).data)


class TrainingRunCancelApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=TrainingRunOutputSerializer)
    def post(self, request, run_id: int):
        run = selectors.access_training_run(user=request.user, run_id=run_id)
        return Response(TrainingRunOutputSerializer(runs.training_run_cancel(user=request.user, run=run)).data)


# --- Evaluations and scores -------------------------------------------------------------------

class ModelEvaluationOutputSerializer(serializers.ModelSerializer):
    """An evaluation: while it runs, `status` and `progress`; once it succeeded, `accuracy`
    (pairwise, ties excluded), `accuracy_ci` (95%), `pairs`, `identical_pairs` and `by_source`
    are at the top level, and everything measured is in `results`."""

    snapshot = serializers.CharField(source="snapshot_id", read_only=True)
    progress = serializers.IntegerField(source="progress_percent", read_only=True)
    accuracy_ci = serializers.SerializerMethodField()
    pairs = serializers.SerializerMethodField()
    identical_pairs = serializers.SerializerMethodField()
    by_source = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ModelEvaluation
        fields = ("id", "model", "snapshot", "split", "status", "progress", "accuracy", "accuracy_ci", "pairs",
                  "identical_pairs", "by_source", "results", "training_run", "error", "device", "created_by",
                  "created_at", "started_at", "finished_at")

    def get_accuracy_ci(self, obj) -> list[float] | None:
        return obj.results.get("accuracy_ci")

    def get_pairs(self, obj) -> int | None:
        return obj.results.get("pairs")

    def get_identical_pairs(self, obj) -> int | None:
        return obj.results.get("identical_pairs")

    def get_by_source(self, obj) -> dict | None:
        return obj.results.get("by_source")


class ModelEvaluationInputSerializer(serializers.Serializer):
    snapshot = serializers.CharField(help_text="The dataset snapshot's sha256.")
    split = serializers.ChoiceField(choices=ModelEvaluation.Split.values, default="validation")


class ModelEvaluationListCreateApi(ListAPIView):
    permission_classes = [IsReviewer]
    serializer_class = ModelEvaluationOutputSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ModelEvaluation.objects.none()
        model = modelhub_selectors.access_model(user=self.request.user, model_id=self.kwargs["model_id"])
        return selectors.model_evaluation_list(user=self.request.user, model=model)

    @extend_schema(request=ModelEvaluationInputSerializer, responses={202: ModelEvaluationOutputSerializer})
    def post(self, request, model_id: int):
        if not IsAdmin().has_permission(request, self):
            self.permission_denied(request, message=IsAdmin.message)
        model = modelhub_selectors.access_model(user=request.user, model_id=model_id)
        data = ModelEvaluationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            evaluation = evaluations.model_evaluation_create(user=request.user, model=model, **data.validated_data)
        except BrokerUnavailable as exc:
            return _broker_down(exc)
        return Response(ModelEvaluationOutputSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)


class ModelEvaluationDetailApi(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(responses=ModelEvaluationOutputSerializer)
    def get(self, request, model_id: int, evaluation_id: int):
        model = modelhub_selectors.access_model(user=request.user, model_id=model_id)
        evaluation = selectors.access_model_evaluation(user=request.user, model=model, evaluation_id=evaluation_id)
        return Response(ModelEvaluationOutputSerializer(evaluation).data)


class ModelScoreApi(APIView):
    """Scores of candidate answers to one prompt by a reward model, one per candidate, in order;
    0 is as good as the training split's best answers on average."""

    permission_classes = [IsReviewer]

    class ScoreInputSerializer(serializers.Serializer):
        messages = serializers.JSONField(help_text='Chat turns: [{"role": "user", "content": "..."}].')
        candidates = serializers.ListField(child=serializers.CharField(allow_blank=True, trim_whitespace=False),
                                           min_length=1, max_length=evaluations.MAX_SCORED_CANDIDATES)
        documents = serializers.JSONField(required=False)

    class ScoreOutputSerializer(serializers.Serializer):
        scores = serializers.ListField(child=serializers.FloatField())

    @extend_schema(request=ScoreInputSerializer, responses=ScoreOutputSerializer)
    def post(self, request, model_id: int):
        model = modelhub_selectors.access_model(user=request.user, model_id=model_id)
        data = self.ScoreInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        scores = evaluations.model_score(user=request.user, model=model, **data.validated_data)
        return Response({"scores": scores})
