"""The admin app, configured to use Pictor's admin site (sdplatform/admin_site.py)."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class PictorAdminConfig(AdminConfig):
    default_site = "sdplatform.admin_site.PictorAdminSite"
