"""The ModelsLab families (docs/architecture.md): one view per kind, configured per family.

Each family answers with its own fetch URL (`fetch_url_name`); v4 requires `model_id`, the v6
realtime family always uses the default model. The legacy paths that ModelsLab clients still
call (v3 dreambooth, v3 super_resolution, model_reload) answer as their current equivalents.
ModelsLab documents no v5 fetch, so ControlNet on v5 points at the v3 one.
"""

from django.urls import path

from generation.api.modelslab import editing, load_model
from generation.api.modelslab import views as ml

V3_DREAMBOOTH = {"model_required": True, "fetch_url_name": "api-v3-dreambooth-fetch"}
V4 = {"model_required": True, "fetch_url_name": "api-v4-fetch"}
V6 = {"fetch_url_name": "api-v6-fetch"}
REALTIME = {"default_model_only": True, "fetch_url_name": "api-v6-realtime-fetch"}
V7 = {"fetch_url_name": "api-v7-fetch"}
IMAGE_EDITING = {"fetch_url_name": "api-v6-image-editing-fetch"}

urlpatterns = [
    # v3: the default model unless model_id names another.
    path("api/v3/text2img", ml.Text2ImgView.as_view(), name="api-v3-text2img"),
    path("api/v3/img2img", ml.Img2ImgView.as_view(), name="api-v3-img2img"),
    path("api/v3/inpaint", ml.InpaintView.as_view(), name="api-v3-inpaint"),
    path("api/v3/fetch/<int:job_id>", ml.FetchView.as_view(), name="api-v3-fetch"),
    path("api/v3/system_load", ml.SystemLoadView.as_view(), name="api-v3-system-load"),
    path("api/v3/load_model", load_model.LoadModelView.as_view(), name="api-v3-load-model"),
    path("api/v3/super_resolution", ml.LegacySuperResolutionView.as_view(), name="api-v3-sr"),
    # v3 dreambooth, the older name of v4 dreambooth: model_id required.
    path("api/v3/dreambooth", ml.Text2ImgView.as_view(**V3_DREAMBOOTH), name="api-v3-dreambooth"),
    path(
        "api/v3/dreambooth/img2img",
        ml.Img2ImgView.as_view(**V3_DREAMBOOTH),
        name="api-v3-dreambooth-img2img",
    ),
    path(
        "api/v3/dreambooth/fetch/<int:job_id>",
        ml.FetchView.as_view(fetch_url_name="api-v3-dreambooth-fetch"),
        name="api-v3-dreambooth-fetch",
    ),
    path("api/v3/dreambooth/model_list", ml.ModelListView.as_view()),
    # v4 dreambooth: model_id required.
    path("api/v4/dreambooth", ml.Text2ImgView.as_view(**V4), name="api-v4-dreambooth"),
    path("api/v4/dreambooth/img2img", ml.Img2ImgView.as_view(**V4), name="api-v4-img2img"),
    path("api/v4/dreambooth/inpaint", ml.InpaintView.as_view(**V4), name="api-v4-inpaint"),
    path(
        "api/v4/dreambooth/fetch/<int:job_id>",
        ml.FetchView.as_view(fetch_url_name="api-v4-fetch"),
        name="api-v4-fetch",
    ),
    path(
        "api/v4/dreambooth/fetch",
        ml.DreamboothFetchByRequestIdView.as_view(fetch_url_name="api-v4-fetch"),
        name="api-v4-fetch-body",
    ),
    path("api/v4/dreambooth/model_list", ml.ModelListView.as_view(), name="api-v4-model-list"),
    path("api/v4/dreambooth/model_reload", ml.ModelReloadView.as_view(), name="api-v4-reload"),
    # v5 ControlNet.
    path("api/v5/controlnet", ml.ControlNetView.as_view(), name="api-v5-controlnet"),
    # v6 images, with fetch by path or by request_id in the body.
    path("api/v6/images/text2img", ml.Text2ImgView.as_view(**V6), name="api-v6-text2img"),
    path("api/v6/images/img2img", ml.Img2ImgView.as_view(**V6), name="api-v6-img2img"),
    path("api/v6/images/inpaint", ml.InpaintView.as_view(**V6), name="api-v6-inpaint"),
    path("api/v6/images/controlnet", ml.ControlNetView.as_view(**V6), name="api-v6-controlnet"),
    path("api/v6/images/fetch/<int:job_id>", ml.FetchView.as_view(**V6), name="api-v6-fetch"),
    path("api/v6/images/fetch", ml.FetchByRequestIdView.as_view(**V6), name="api-v6-fetch-body"),
    path("api/v6/images/model_reload", ml.ModelReloadView.as_view(), name="api-v6-reload"),
    # v6 realtime: the default model, `base64` a boolean.
    path(
        "api/v6/realtime/text2img",
        ml.Text2ImgView.as_view(**REALTIME),
        name="api-v6-realtime-text2img",
    ),
    path(
        "api/v6/realtime/img2img",
        ml.Img2ImgView.as_view(**REALTIME),
        name="api-v6-realtime-img2img",
    ),
    path(
        "api/v6/realtime/inpaint",
        ml.InpaintView.as_view(**REALTIME),
        name="api-v6-realtime-inpaint",
    ),
    path(
        "api/v6/realtime/fetch/<int:job_id>",
        ml.FetchView.as_view(fetch_url_name="api-v6-realtime-fetch"),
        name="api-v6-realtime-fetch",
    ),
    # v6 image editing: super resolution, outpaint, object removal, with a fetch of its own.
    path(
        "api/v6/image_editing/super_resolution",
        ml.SuperResolutionView.as_view(**IMAGE_EDITING),
        name="api-v6-super-resolution",
    ),
    path(
        "api/v6/image_editing/outpaint",
        editing.OutpaintView.as_view(**IMAGE_EDITING),
        name="api-v6-outpaint",
    ),
    path(
        "api/v6/image_editing/object_removal",
        editing.ObjectRemovalView.as_view(**IMAGE_EDITING),
        name="api-v6-object-removal",
    ),
    path(
        "api/v6/image_editing/fetch/<int:job_id>",
        ml.FetchView.as_view(**IMAGE_EDITING),
        name="api-v6-image-editing-fetch",
    ),
    # v7 images.
    path(
        "api/v7/images/text-to-image",
        ml.Text2ImgView.as_view(**V7),
        name="api-v7-text-to-image",
    ),
    path(
        "api/v7/images/image-to-image",
        ml.Img2ImgView.as_view(**V7),
        name="api-v7-image-to-image",
    ),
    path("api/v7/images/inpaint", ml.InpaintView.as_view(**V7), name="api-v7-inpaint"),
    path("api/v7/images/fetch/<int:job_id>", ml.FetchView.as_view(**V7), name="api-v7-fetch"),
]
