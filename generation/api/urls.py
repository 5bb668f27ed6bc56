from django.urls import path

from generation.api import modelslab

urlpatterns = [
    path("api/v3/text2img", modelslab.Text2ImgView.as_view(), name="api-v3-text2img"),
    path("api/v3/img2img", modelslab.Img2ImgView.as_view(), name="api-v3-img2img"),
    path("api/v3/inpaint", modelslab.InpaintView.as_view(), name="api-v3-inpaint"),
    path("api/v3/fetch/<int:job_id>", modelslab.FetchView.as_view(), name="api-v3-fetch"),
    path("api/v3/system_load", modelslab.SystemLoadView.as_view(), name="api-v3-system-load"),
    path("api/v3/dreambooth/model_list", modelslab.ModelListView.as_view()),
    path("api/v4/dreambooth", modelslab.DreamboothView.as_view(), name="api-v4-dreambooth"),
    path(
        "api/v4/dreambooth/img2img",
        modelslab.DreamboothImg2ImgView.as_view(),
        name="api-v4-img2img",
    ),
    path(
        "api/v4/dreambooth/inpaint",
        modelslab.DreamboothInpaintView.as_view(),
        name="api-v4-inpaint",
    ),
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
    path("api/v5/controlnet", modelslab.ControlNetView.as_view(), name="api-v5-controlnet"),
    path(
        "api/v6/image_editing/super_resolution",
        modelslab.SuperResolutionView.as_view(),
        name="api-v6-super-resolution",
    ),
]
