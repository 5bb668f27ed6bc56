from django.urls import path

from generation import gallery, model_pages, pages, usage

urlpatterns = [
    path("app/playground/", pages.playground, name="app-playground"),
    path(
        "app/playground/submit", pages.PlaygroundSubmitView.as_view(), name="app-playground-submit"
    ),
    *(
        path(f"app/playground/submit/{kind}", view.as_view(), name=f"app-playground-{kind}")
        for kind, view in pages.SUBMIT_VIEWS.items()
    ),
    path(
        "app/playground/jobs/<int:job_id>/",
        pages.PlaygroundJobView.as_view(),
        name="app-playground-job",
    ),
    path(
        "app/playground/preprocess",
        pages.PlaygroundPreprocessView.as_view(),
        name="app-playground-preprocess",
    ),
    path("app/history/", pages.history, name="app-history"),
    path("app/history/jobs.json", pages.HistoryStatesView.as_view(), name="app-history-states"),
    path("app/history/<int:job_id>/rerun/", pages.rerun, name="app-history-rerun"),
    path("app/history/<int:job_id>/vary/", gallery.vary, name="app-history-vary"),
    path("app/history/download/", gallery.download_zip, name="app-history-zip"),
    path(
        "app/history/images/<int:image_id>/download/",
        gallery.download_image,
        name="app-history-image",
    ),
    path("app/models/", model_pages.models_page, name="app-models"),
    path("app/models/<str:model_id>/delete/", model_pages.delete, name="app-model-delete"),
    # Jobs next to ledger entries, so in generation (generation/usage.py); the URL is unchanged.
    path("app/usage/", usage.usage, name="app-usage"),
]
