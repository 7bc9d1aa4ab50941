"""Model hub pages; studio/urls.py includes them at the site root."""
from django.urls import path

from modelhub import views

app_name = "modelhub"

urlpatterns = [
    path("models/", views.model_list, name="model_list"),
    path("models/<int:model_id>/", views.model_detail, name="model_detail"),
    path("models/<int:model_id>/evaluations/", views.model_evaluations, name="model_evaluations"),
    path("models/<int:model_id>/evaluate/", views.model_evaluate, name="model_evaluate"),
    path("models/<int:model_id>/promote/", views.model_promote, name="model_promote"),
    path("projects/<slug:slug>/review/prompts/<int:prompt_id>/reward-scores/", views.review_scores,
         name="review_scores"),
    path("projects/<slug:slug>/generate/", views.generation_create, name="generation_create"),
    path("generation-jobs/<int:job_id>/", views.generation_job_detail, name="generation_job_detail"),
    path("generation-jobs/<int:job_id>/progress/", views.generation_job_progress, name="generation_job_progress"),
    path("generation-jobs/<int:job_id>/cancel/", views.generation_job_cancel, name="generation_job_cancel"),
]
