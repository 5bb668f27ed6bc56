from django.urls import path

from generation.api import modelslab

urlpatterns = [
    path("api/v3/text2img", modelslab.Text2ImgView.as_view(), name="api-v3-text2img"),
    path("api/v3/fetch/<int:job_id>", modelslab.FetchView.as_view(), name="api-v3-fetch"),
    path("api/v3/system_load", modelslab.SystemLoadView.as_view(), name="api-v3-system-load"),
    path("api/v3/dreambooth/model_list", modelslab.ModelListView.as_view()),
    path("api/v4/dreambooth", modelslab.DreamboothView.as_view(), name="api-v4-dreambooth"),
    path(
        "api/v4/dreambooth/fetch/<int:job_id>",
        modelslab.DreamboothFetchView.as_view(),
        name="api-v4-fetch",
    ),
    path(
        "api/v4/dreambooth/model_list",
        modelslab.ModelListView.as_view(),
        name="api-v4-model-list",
    ),
]
