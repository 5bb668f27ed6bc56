"""OpenAI's image and model routes (Hyperbolic owns the singular /v1/image/generation)."""

from __future__ import annotations

from django.urls import URLPattern, path

from generation.api.openai import views

urlpatterns: list[URLPattern] = [
    path("v1/images/generations", views.GenerationsView.as_view(), name="openai-generations"),
    path("v1/images/edits", views.EditsView.as_view(), name="openai-edits"),
    path("v1/images/variations", views.VariationsView.as_view(), name="openai-variations"),
    path("v1/models", views.ModelListView.as_view(), name="openai-models"),
    path("v1/models/<str:model_id>", views.ModelView.as_view(), name="openai-model"),
]
