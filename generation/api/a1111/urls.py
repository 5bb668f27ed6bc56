"""The AUTOMATIC1111 routes, webui's /sdapi/v1/ (the format: this package's docstring)."""

from __future__ import annotations

from django.urls import path

from generation.api.a1111.listings import (
    EmbeddingsView,
    LorasView,
    SamplersView,
    SchedulersView,
    SdModelsView,
)
from generation.api.a1111.views import (
    Img2ImgView,
    InterruptView,
    OptionsView,
    ProgressView,
    SkipView,
    Txt2ImgView,
)

urlpatterns = [
    path("sdapi/v1/txt2img", Txt2ImgView.as_view(), name="a1111-txt2img"),
    path("sdapi/v1/img2img", Img2ImgView.as_view(), name="a1111-img2img"),
    path("sdapi/v1/sd-models", SdModelsView.as_view(), name="a1111-sd-models"),
    path("sdapi/v1/samplers", SamplersView.as_view(), name="a1111-samplers"),
    path("sdapi/v1/schedulers", SchedulersView.as_view(), name="a1111-schedulers"),
    path("sdapi/v1/loras", LorasView.as_view(), name="a1111-loras"),
    path("sdapi/v1/embeddings", EmbeddingsView.as_view(), name="a1111-embeddings"),
    path("sdapi/v1/options", OptionsView.as_view(), name="a1111-options"),
    path("sdapi/v1/progress", ProgressView.as_view(), name="a1111-progress"),
    path("sdapi/v1/interrupt", InterruptView.as_view(), name="a1111-interrupt"),
    path("sdapi/v1/skip", SkipView.as_view(), name="a1111-skip"),
]
