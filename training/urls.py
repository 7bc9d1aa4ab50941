"""Dataset snapshot and training run pages; studio/urls.py includes them at the site root."""
from django.urls import path

from training import views, views_jobs, views_runs

app_name = "training"

urlpatterns = [
    path("projects/<slug:slug>/snapshots/", views.snapshot_list, name="snapshot_list"),
    path("snapshots/<str:sha256>/", views.snapshot_detail, name="snapshot_detail"),
    path("snapshots/<str:sha256>/export/<str:export_format>/", views_jobs.export_start, name="export_start"),
    path("snapshot-jobs/<int:job_id>/", views_jobs.snapshot_job_detail, name="snapshot_job_detail"),
    path("snapshot-jobs/<int:job_id>/progress/", views_jobs.snapshot_job_progress, name="snapshot_job_progress"),
    path("snapshot-jobs/<int:job_id>/cancel/", views_jobs.snapshot_job_cancel, name="snapshot_job_cancel"),
    path("export-jobs/<int:job_id>/", views_jobs.export_job_detail, name="export_job_detail"),
    path("export-jobs/<int:job_id>/progress/", views_jobs.export_job_progress, name="export_job_progress"),
    path("export-jobs/<int:job_id>/cancel/", views_jobs.export_job_cancel, name="export_job_cancel"),
    path("projects/<slug:slug>/training/", views_runs.training_page, name="training_page"),
    path("training/runs/<int:run_id>/", views_runs.run_detail, name="run_detail"),
    path("training/runs/<int:run_id>/progress/", views_runs.run_progress, name="run_progress"),
    path("training/runs/<int:run_id>/cancel/", views_runs.run_cancel, name="run_cancel"),
]
