"""Dataset snapshot, training run and evaluation endpoints; studio/urls.py includes them under /api/v1/."""
from django.urls import path

from training import api, api_runs

urlpatterns = [
    path("projects/<slug:slug>/snapshots/", api.SnapshotListCreateApi.as_view(), name="api-project-snapshots"),
    path("snapshots/<str:sha256>/", api.SnapshotDetailApi.as_view(), name="api-snapshot"),
    # Not `<format>`: DRF reads a `format` URL kwarg as a renderer suffix.
    path("snapshots/<str:sha256>/export/<str:export_format>/", api.SnapshotExportApi.as_view(),
         name="api-snapshot-export"),
    path("snapshot-jobs/<int:job_id>/", api.SnapshotJobDetailApi.as_view(), name="api-snapshot-job"),
    path("snapshot-jobs/<int:job_id>/cancel/", api.SnapshotJobCancelApi.as_view(), name="api-snapshot-job-cancel"),
    path("export-jobs/<int:job_id>/", api.ExportJobDetailApi.as_view(), name="api-export-job"),
    path("export-jobs/<int:job_id>/cancel/", api.ExportJobCancelApi.as_view(), name="api-export-job-cancel"),
    path("training-runs/", api_runs.TrainingRunListCreateApi.as_view(), name="api-training-runs"),
    path("training-runs/<int:run_id>/", api_runs.TrainingRunDetailApi.as_view(), name="api-training-run"),
    path("training-runs/<int:run_id>/metrics/", api_runs.TrainingRunMetricsApi.as_view(),
         name="api-training-run-metrics"),
    path("training-runs/<int:run_id>/cancel/", api_runs.TrainingRunCancelApi.as_view(),
         name="api-training-run-cancel"),
    path("models/<int:model_id>/evaluations/", api_runs.ModelEvaluationListCreateApi.as_view(),
         name="api-model-evaluations"),
    path("models/<int:model_id>/evaluations/<int:evaluation_id>/", api_runs.ModelEvaluationDetailApi.as_view(),
         name="api-model-evaluation"),
    path("models/<int:model_id>/score/", api_runs.ModelScoreApi.as_view(), name="api-model-score"),
]
