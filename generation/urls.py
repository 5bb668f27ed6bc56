from django.urls import path

from generation import pages, usage

urlpatterns = [
    path("app/playground/", pages.playground, name="app-playground"),
    path(
        "app/playground/submit", pages.PlaygroundSubmitView.as_view(), name="app-playground-submit"
    ),
    path(
        "app/playground/jobs/<int:job_id>/",
        pages.PlaygroundJobView.as_view(),
        name="app-playground-job",
    ),
    path("app/history/", pages.history, name="app-history"),
    path("app/history/<int:job_id>/rerun/", pages.rerun, name="app-history-rerun"),
    # Jobs next to ledger entries, so in generation (generation/usage.py); the URL is unchanged.
    path("app/usage/", usage.usage, name="app-usage"),
]
