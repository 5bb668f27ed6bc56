"""Hyperbolic's one route."""

from __future__ import annotations

from django.urls import URLPattern, path

from generation.api.hyperbolic.views import GenerationView

urlpatterns: list[URLPattern] = [
    path("v1/image/generation", GenerationView.as_view(), name="hyperbolic-generation"),
]
