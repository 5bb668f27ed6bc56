"""The job API's routes under /api/v1/, and two ModelsLab general routes it answers too."""

from __future__ import annotations

from django.urls import URLPattern, path

from generation.api.jobs import model_views, views

urlpatterns: list[URLPattern] = [
    path("api/v1/jobs", views.JobListView.as_view(), name="jobs-list"),
    path("api/v1/jobs/<int:job_id>", views.JobDetailView.as_view(), name="jobs-detail"),
    path("api/v1/jobs/<int:job_id>/cancel", views.JobCancelView.as_view(), name="jobs-cancel"),
    path("api/v1/jobs/<int:job_id>/outputs", views.JobOutputsView.as_view(), name="jobs-outputs"),
    path("api/v1/account", views.AccountView.as_view(), name="jobs-account"),
    path("api/v1/models", model_views.ModelListView.as_view(), name="models-list"),
    path(
        "api/v1/models/<str:model_id>",
        model_views.ModelDetailView.as_view(),
        name="models-detail",
    ),
    # ModelsLab's documented general routes (docs.modelslab.com, "General APIs").
    path("api/wallet_balance", views.WalletBalanceView.as_view(), name="modelslab-wallet-balance"),
    path(
        "api/subscribed_plan",
        views.SubscribedPlanView.as_view(),
        name="modelslab-subscribed-plan",
    ),
]
