from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from labeling import api as labeling_api
from studio import api as studio_api

api_v1 = [
    path("auth/token/", studio_api.TokenApi.as_view(), name="api-token"),
    path("me/", studio_api.MeApi.as_view(), name="api-me"),
    path("users/", studio_api.UserListCreateApi.as_view(), name="api-users"),
    path("projects/", labeling_api.ProjectListCreateApi.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", labeling_api.ProjectDetailApi.as_view(), name="api-project"),
    path("projects/<slug:slug>/prompts/", labeling_api.PromptListCreateApi.as_view(), name="api-project-prompts"),
    path("projects/<slug:slug>/imports/", labeling_api.ImportListCreateApi.as_view(), name="api-project-imports"),
    path("imports/<int:run_id>/", labeling_api.ImportDetailApi.as_view(), name="api-import"),
    path("imports/<int:run_id>/cancel/", labeling_api.ImportCancelApi.as_view(), name="api-import-cancel"),
    path("prompts/<int:prompt_id>/", labeling_api.PromptDetailApi.as_view(), name="api-prompt"),
    path("prompts/<int:prompt_id>/demonstrations/", labeling_api.DemonstrationListCreateApi.as_view(),
         name="api-prompt-demonstrations"),
    path("", include("labeling.api_tasks_urls")),
    path("", include("modelhub.api_urls")),
    path("", include("training.api_urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", studio_api.SchemaApi.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("", include("modelhub.urls")),
    path("", include("training.urls")),
    path("", include("labeling.urls")),
]

handler404 = "studio.pages.not_found"
handler500 = "studio.pages.server_error"
