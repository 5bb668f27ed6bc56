"""Synapse's routes: the name lists and POST /sd/<model> (the catch-all, so it comes last)."""

from __future__ import annotations

from django.urls import URLPattern, path

from generation.api.synapse.views import GenerateView, ListView, SamplerListView
from generation.models import AIModel

urlpatterns: list[URLPattern] = [
    path(
        "sd/list",
        ListView.as_view(families=tuple(AIModel.CHECKPOINTS)),
        name="synapse-list",
    ),
    path("sd/sampler", SamplerListView.as_view(), name="synapse-sampler"),
    path("sd/loras", ListView.as_view(families=(AIModel.Family.LORA,)), name="synapse-loras"),
    path(
        "sd/embeddings",
        ListView.as_view(families=(AIModel.Family.EMBEDDING,)),
        name="synapse-embeddings",
    ),
    path("sd/<str:model>", GenerateView.as_view(), name="synapse-generate"),
]
