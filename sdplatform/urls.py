from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from generation import ops
from sdplatform import health, metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.scrape, name="metrics"),
    path("admin/", admin.site.urls),
    path("ops/", ops.dashboard, name="ops"),
    path("", RedirectView.as_view(url="/app/", permanent=False)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("generation.api.urls")),
    # The other wire formats, one module each (DESIGN section 5).
    path("", include("generation.api.synapse")),
    path("", include("generation.api.hyperbolic")),
    path("", include("generation.api.dan")),
    path("", include("generation.api.a1111")),
    path("", include("billing.urls")),
    path("", include("accounts.urls")),
    path("", include("generation.urls")),
]


def media(request: HttpRequest, path: str) -> HttpResponse:
    """Generated images in the embedded mode (MEDIA_ROOT is read per request, not at import)."""
    return serve(request, path, document_root=settings.MEDIA_ROOT)


if not settings.S3_BUCKET:
    # Embedded mode: Django serves generated images itself. Behind a proxy in production, let
    # the proxy serve MEDIA_ROOT instead (or use S3).
    urlpatterns += [re_path(r"^media/(?P<path>.*)$", media, name="media")]
