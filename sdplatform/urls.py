from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from generation import media, ops
from sdplatform import health, metrics_view

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view.scrape, name="metrics"),
    path("admin/", admin.site.urls),
    path("ops/", ops.dashboard, name="ops"),
    path("", RedirectView.as_view(url="/app/", permanent=False)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("generation.api.modelslab.urls")),
    # The other wire formats, one module each (docs/architecture.md).
    path("", include("generation.api.synapse.urls")),
    path("", include("generation.api.hyperbolic.urls")),
    path("", include("generation.api.dan.urls")),
    path("", include("generation.api.a1111.urls")),
    path("", include("generation.api.openai.urls")),
    path("", include("generation.api.jobs.urls")),
    path("", include("billing.urls")),
    path("", include("accounts.urls")),
    path("", include("generation.urls")),
    # Images on local storage, through signed expiring links only; there is no /media/ route.
    path("files/<path:name>", media.serve, name="media-file"),
]

# Errors raised outside any API view (no route, a non-integer id, an oversize body, a crash):
# JSON in the route's wire format on API paths, Django's plain pages elsewhere.
handler400 = "generation.api.errors.bad_request"
handler404 = "generation.api.errors.page_not_found"
handler500 = "generation.api.errors.server_error"
