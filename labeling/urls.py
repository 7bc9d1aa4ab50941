"""Pages (server-rendered). The JSON API lives under /api/v1/ (studio/urls.py)."""
from django.contrib.auth import views as auth_views
from django.urls import path

from labeling import views, views_ranking

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # "new" is a route here, so a project slugged "new" would only be reachable through the API.
    path("projects/new/", views.project_create, name="project_create"),
    path("projects/<slug:slug>/", views.project_detail, name="project_detail"),
    path("projects/<slug:slug>/edit/", views.project_edit, name="project_edit"),
    path("projects/<slug:slug>/write/", views.prompt_write, name="prompt_write"),
    path("projects/<slug:slug>/import/", views.import_create, name="import_create"),
    path("projects/<slug:slug>/imports/<int:run_id>/", views.import_detail, name="import_detail"),
    path("projects/<slug:slug>/imports/<int:run_id>/progress/", views.import_progress, name="import_progress"),
    path("projects/<slug:slug>/imports/<int:run_id>/cancel/", views.import_cancel, name="import_cancel"),
    path("prompts/<int:prompt_id>/", views.prompt_detail, name="prompt_detail"),
    # The work queue and the ranking page (labeling/views_ranking.py).
    path("projects/<slug:slug>/next/", views_ranking.task_next, name="task_next"),
    path("tasks/<int:task_id>/", views_ranking.task_page, name="task_page"),
    path("tasks/<int:task_id>/skip/", views_ranking.task_skip, name="task_skip"),
    path("tasks/<int:task_id>/release/", views_ranking.task_release, name="task_release"),
    # Reviewers.
    path("projects/<slug:slug>/review/", views_ranking.review_dashboard, name="review_dashboard"),
    path("projects/<slug:slug>/review/prompts/<int:prompt_id>/", views_ranking.review_prompt, name="review_prompt"),
    path("projects/<slug:slug>/review/prompts/<int:prompt_id>/labels/<int:label_id>/reject/",
         views_ranking.label_reject, name="label_reject"),
]
