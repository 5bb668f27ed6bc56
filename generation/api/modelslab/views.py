"""The ModelsLab wire format's views: submit, wait a little, answer the job's state.

Answers are generation/answers.py's job body; the routes and their per-family settings are in
urls.py next to this module.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.requests import KeyRequest
from generation import addons, estimates, jobs, service, submission
from generation.answers import ModelsLabJob, base_url_for, job_answer
from generation.api import polling, schema
from generation.api.modelslab.answers import ModelsLabModel, SystemLoad, model_entry
from generation.api.modelslab.serializers import (
    ControlNetSerializer,
    GenerationSerializer,
    Img2ImgSerializer,
    InpaintSerializer,
    LegacySuperResolutionSerializer,
    ModelReloadSerializer,
    SuperResolutionSerializer,
    Text2ImgSerializer,
    parse,
    request_id_from,
)
from generation.api.parsers import AnyContentTypeJSONParser
from generation.engine.request import GenerationRequest
from generation.models import AIModel, Job

# Super resolution: the largest output side, whatever the plan (the input is small anyway).
MAX_SUPER_RESOLUTION_SIDE = 2048
MIN_SUPER_RESOLUTION_INPUT = 8
UPSCALER_STEPS = 21
# model_reload's answer, ModelsLab's {"status", "message"} plus the model's id.
MODEL_RELOAD_ANSWER = inline_serializer(
    "ModelsLabModelReload",
    {
        "status": serializers.CharField(default="success"),
        "message": serializers.CharField(),
        "model_id": serializers.CharField(),
    },
)


def check_mask(mask: Any, purpose: str) -> None:
    """A 400 naming mask_image when the mask is all black: it marks nothing to `purpose`.

    Such a job would run, be charged and hand back its input unchanged.
    """
    if mask.convert("L").getbbox() is None:
        raise ValidationError(
            {"mask_image": [f"The mask_image is all black: it marks nothing to {purpose}."]}
        )


class ModelsLabView(APIView):
    parser_classes = [AnyContentTypeJSONParser]
    fetch_url_name = "api-v3-fetch"

    def answer(self, request: Request, job: Job, instant: bool = False) -> Response:
        """Wait up to PICTOR_SYNC_WAIT seconds (none if `instant`), then answer the job's state."""
        wait = 0 if instant else service.wait_seconds(request, settings.PICTOR_SYNC_WAIT)
        job = service.wait_for(job, wait)
        return Response(job_answer(job, base_url_for(request), self.fetch_url_name))


class GenerateView(ModelsLabView):
    """POST a generation (text2img, img2img, inpaint or ControlNet), wait, answer its state."""

    serializer_class: type[GenerationSerializer] = Text2ImgSerializer
    model_required = False
    # The v6 realtime family always uses the default model.
    default_model_only = False

    @extend_schema(
        tags=["ModelsLab"],
        responses={200: ModelsLabJob, **schema.modelslab_errors(402, 404, 503)},
    )
    def post(self, request: KeyRequest) -> Response:
        org = request.user.organization
        fields = parse(self.serializer_class, request.data, org.plan)
        # ControlNet runs as controlnet-img2img or controlnet-inpaint when the body says so.
        kind = fields.pop("job_kind", self.serializer_class.kind)
        if self.default_model_only and fields.get("model_id"):
            raise ValidationError(
                {
                    "model_id": [
                        "The realtime endpoints use the default model; choose a model with "
                        "/api/v6/images/ instead."
                    ]
                }
            )
        if fields.get("mask_image"):
            # Decoded once: the submit below stores this image rather than fetching it again.
            mask = submission.Inputs(org.pk).load("mask_image", fields["mask_image"])
            check_mask(mask, "repaint")
            fields["mask_image"] = mask
        instant = fields.pop("instant_response")
        job = submission.submit(
            request,
            fields,
            kind,
            model_id=fields.pop("model_id", None),
            model_required=self.model_required,
            track_id=fields.pop("track_id", ""),
            webhook=fields.pop("webhook", ""),
            output_base64=fields.pop("base64"),
            names={"ip_adapter": "ip_adapter_id"},
        )
        return self.answer(request, job, instant)


class Text2ImgView(GenerateView):
    """POST /api/v3/text2img."""


class Img2ImgView(GenerateView):
    """POST /api/v3/img2img: a new image from init_image, `strength` away from it."""

    serializer_class = Img2ImgSerializer


class InpaintView(GenerateView):
    """POST /api/v3/inpaint: repaint the white area of mask_image in init_image."""

    serializer_class = InpaintSerializer


class ControlNetView(GenerateView):
    """POST /api/v5/controlnet: generation guided by a control image (canny computed here)."""

    serializer_class = ControlNetSerializer


class SuperResolutionView(ModelsLabView):
    """POST /api/v6/image_editing/super_resolution: init_image upscaled exactly `scale` times."""

    serializer_class: type[SuperResolutionSerializer] = SuperResolutionSerializer
    # The body field that carries the image (the legacy v3 route calls it `url`).
    image_field = "init_image"

    @extend_schema(
        tags=["ModelsLab"],
        request=SuperResolutionSerializer,
        responses={200: ModelsLabJob, **schema.modelslab_errors(402, 404, 503)},
    )
    def post(self, request: KeyRequest) -> Response:
        org = request.user.organization
        fields = parse(self.serializer_class, request.data, org.plan)
        field = self.image_field
        model_id = fields.pop("model_id", None)
        visible = AIModel.objects.visible_to(org).filter(family=AIModel.Family.UPSCALER)
        model = (
            visible.filter(model_id=model_id).first() if model_id else addons.default_upscaler(org)
        )
        if model is None:
            raise NotFound("Model id not found")
        images = submission.Inputs(org.pk)
        source = images.load(field, fields[field])
        scale = fields["scale"]
        width, height = source.width * scale, source.height * scale
        if min(source.width, source.height) < MIN_SUPER_RESOLUTION_INPUT:
            raise ValidationError(
                {
                    field: [
                        f"The {field} is {source.width}x{source.height}; its sides must be "
                        f"at least {MIN_SUPER_RESOLUTION_INPUT} px."
                    ]
                }
            )
        if max(width, height) > MAX_SUPER_RESOLUTION_SIDE:
            limit = MAX_SUPER_RESOLUTION_SIDE // scale
            raise ValidationError(
                {
                    field: [
                        f"The {field} is {source.width}x{source.height}; to upscale it "
                        f"{scale}x its sides may be at most {limit} px."
                    ]
                }
            )
        try:
            req = GenerationRequest(
                prompt="",
                model_id=model.model_id,
                kind="upscale",
                init_image=images.store(source, "init_image"),
                width=width,
                height=height,
                scale=scale,
                steps=UPSCALER_STEPS,
                guidance_scale=1.0,
                seed=fields["seed"],
            )
            job = submission.queue(
                request,
                req,
                model,
                track_id=fields.get("track_id", ""),
                webhook=fields.get("webhook", ""),
                webhook_events=fields.get("webhook_events"),
                output_base64=fields["base64"],
                temp=fields["temp"],
            )
        except BaseException:
            images.discard()
            raise
        return self.answer(request, job)


class LegacySuperResolutionView(SuperResolutionView):
    """POST /api/v3/super_resolution: the v6 upscale with the image in `url`."""

    serializer_class = LegacySuperResolutionSerializer
    image_field = "url"

    @extend_schema(
        tags=["ModelsLab"],
        request=LegacySuperResolutionSerializer,
        responses={200: ModelsLabJob, **schema.modelslab_errors(402, 404, 503)},
    )
    def post(self, request: KeyRequest) -> Response:
        return super().post(request)


class ModelReloadView(ModelsLabView):
    """POST /api/v4/dreambooth/model_reload: ModelsLab reloads an idle model; here all are ready.

    Registered models are read from disk by the workers whenever a job needs one, so there is
    nothing to reload: the call answers as ModelsLab does once the model is usable.
    """

    @extend_schema(
        tags=["ModelsLab"],
        request=ModelReloadSerializer,
        responses={200: MODEL_RELOAD_ANSWER, **schema.modelslab_errors(404)},
    )
    def post(self, request: KeyRequest) -> Response:
        org = request.user.organization
        model_id = parse(ModelReloadSerializer, request.data, org.plan)["model_id"]
        if not AIModel.objects.visible_to(org).filter(model_id=model_id).exists():
            raise NotFound("Model id not found")
        return Response({"status": "success", "message": "Model reloaded", "model_id": model_id})


class FetchView(ModelsLabView):
    """POST (or GET) /api/v3/fetch/<id>: a job's state; another tenant's id is a 404."""

    poll_methods = polling.POLL_METHODS

    @extend_schema(
        tags=["ModelsLab"],
        request=None,
        responses={200: ModelsLabJob, **schema.modelslab_errors(404)},
    )
    def post(self, request: KeyRequest, job_id: int) -> Response:
        job = jobs.polled(request.user.organization, job_id)
        if job is None:
            raise NotFound("Request not found")
        job = jobs.refresh_lease_state(job)
        answer = job_answer(job, base_url_for(request), self.fetch_url_name, preview=True)
        return polling.hinted(Response(answer), job)

    get = post


class FetchByRequestIdView(FetchView):
    """POST /api/v6/images/fetch with `request_id` in the body."""

    http_method_names = ["post", "options"]

    @extend_schema(
        tags=["ModelsLab"],
        operation_id="v6_images_fetch_by_request_id",
        request=schema.ModelsLabFetch,
        responses={200: ModelsLabJob, **schema.modelslab_errors(404)},
    )
    # The id comes from the body: this route calls post() without FetchView's job_id.
    def post(self, request: KeyRequest) -> Response:  # type: ignore[override]  # id in the body
        return super().post(request, request_id_from(request.data))


class DreamboothFetchByRequestIdView(FetchByRequestIdView):
    """POST /api/v4/dreambooth/fetch with `request_id` in the body."""

    @extend_schema(
        tags=["ModelsLab"],
        operation_id="v4_dreambooth_fetch_by_request_id",
        request=schema.ModelsLabFetch,
        responses={200: ModelsLabJob, **schema.modelslab_errors(404)},
    )
    def post(self, request: KeyRequest) -> Response:  # type: ignore[override]  # id in the body
        return super().post(request)


class SystemLoadView(ModelsLabView):
    """POST /api/v3/system_load: queue length and expected wait."""

    @extend_schema(tags=["ModelsLab"], request=None, responses={200: SystemLoad})
    def post(self, request: Request) -> Response:
        return Response(SystemLoad(estimates.system_load()).data)

    get = post


class ModelListView(ModelsLabView):
    """POST /api/v4/dreambooth/model_list: the models this tenant may use."""

    @extend_schema(tags=["ModelsLab"], request=None, responses={200: ModelsLabModel(many=True)})
    def post(self, request: KeyRequest) -> Response:
        models = AIModel.objects.visible_to(request.user.organization).order_by("model_id")
        return Response(ModelsLabModel([model_entry(m) for m in models], many=True).data)

    get = post
