"""The AUTOMATIC1111 routes, webui's /sdapi/v1/ (the format: this package's docstring)."""

from __future__ import annotations

from django.urls import path

from generation.api.a1111.controlnet import ModelListView, ModuleListView, VersionView
from generation.api.a1111.extras import (
    CheckpointMemoryView,
    CmdFlagsView,
    ExtraBatchImagesView,
    ExtraSingleImageView,
    MemoryView,
    PngInfoView,
    RefreshView,
)
from generation.api.a1111.listings import (
    EmbeddingsView,
    FaceRestorersView,
    LatentUpscaleModesView,
    LorasView,
    PromptStylesView,
    SamplersView,
    SchedulersView,
    ScriptInfoView,
    ScriptsView,
    SdModelsView,
    SdVaeView,
    UpscalersView,
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
    path("sdapi/v1/upscalers", UpscalersView.as_view(), name="a1111-upscalers"),
    path(
        "sdapi/v1/latent-upscale-modes",
        LatentUpscaleModesView.as_view(),
        name="a1111-latent-upscale-modes",
    ),
    path("sdapi/v1/sd-vae", SdVaeView.as_view(), name="a1111-sd-vae"),
    path("sdapi/v1/prompt-styles", PromptStylesView.as_view(), name="a1111-prompt-styles"),
    path("sdapi/v1/face-restorers", FaceRestorersView.as_view(), name="a1111-face-restorers"),
    path("sdapi/v1/scripts", ScriptsView.as_view(), name="a1111-scripts"),
    path("sdapi/v1/script-info", ScriptInfoView.as_view(), name="a1111-script-info"),
    path("sdapi/v1/cmd-flags", CmdFlagsView.as_view(), name="a1111-cmd-flags"),
    path("sdapi/v1/memory", MemoryView.as_view(), name="a1111-memory"),
    path("sdapi/v1/png-info", PngInfoView.as_view(), name="a1111-png-info"),
    path(
        "sdapi/v1/extra-single-image",
        ExtraSingleImageView.as_view(),
        name="a1111-extra-single-image",
    ),
    path(
        "sdapi/v1/extra-batch-images",
        ExtraBatchImagesView.as_view(),
        name="a1111-extra-batch-images",
    ),
    # Nothing is cached, and checkpoints are shared by every tenant: extras.py says why.
    *(
        path(f"sdapi/v1/{name}", RefreshView.as_view(), name=f"a1111-{name}")
        for name in ("refresh-checkpoints", "refresh-vae", "refresh-loras")
    ),
    *(
        path(f"sdapi/v1/{name}", CheckpointMemoryView.as_view(), name=f"a1111-{name}")
        for name in ("unload-checkpoint", "reload-checkpoint")
    ),
    # The ControlNet extension's lists (sd-webui-controlnet serves them outside /sdapi/v1/).
    path("controlnet/model_list", ModelListView.as_view(), name="a1111-controlnet-models"),
    path("controlnet/module_list", ModuleListView.as_view(), name="a1111-controlnet-modules"),
    path("controlnet/version", VersionView.as_view(), name="a1111-controlnet-version"),
]
