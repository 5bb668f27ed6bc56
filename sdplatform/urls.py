from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve

from sdplatform import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("", include("generation.api.urls")),
]

if not settings.S3_BUCKET:
    # Embedded mode: Django serves generated images itself. Behind a proxy in production, let
    # the proxy serve MEDIA_ROOT instead (or use S3).
    urlpatterns += [
        re_path(r"^media/(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT}),
    ]
