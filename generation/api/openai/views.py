"""The OpenAI Images wire format (docs/api/openai.md): Bearer key, blocking, OpenAI's shapes.

    POST /v1/images/generations  JSON        text2img
    POST /v1/images/edits        multipart   image (+ mask: inpaint, else img2img)
    POST /v1/images/variations   multipart   image: img2img without a prompt
    GET  /v1/models, /v1/models/<id>

Answers {"created", "data": [{"url"|"b64_json", "revised_prompt"}], "background",
"output_format", "quality", "size", "usage"}; errors {"error": {"message", "type", "param",
"code"}} with OpenAI's statuses, where a short balance is 429 insufficient_quota (not 402).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.http import QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from billing import limits
from generation import answers, service, submission
from generation.api.base import FormatView, clean_body, is_storable
from generation.api.errors import Problem, describe, respond
from generation.api.openai import images
from generation.api.openai.answers import (
    OpenAIError,
    OpenAIImages,
    OpenAIModel,
    OpenAIModelList,
    images_body,
    model_entries,
)
from generation.api.openai.serializers import (
    EditsSerializer,
    GenerationsSerializer,
    ModelNotFound,
    OpenAISerializer,
    VariationsSerializer,
)
from generation.api.parsers import BodyTooLarge, StrictJSONParser, too_large_message
from generation.models import AIModel, Job

if TYPE_CHECKING:
    from accounts.requests import OrgRequest

# Problem.kind -> OpenAI's error code (a field error's code comes from FIELD_CODES).
CODES = {
    "auth": "invalid_api_key",
    "model_not_found": "model_not_found",
    "insufficient_credits": "insufficient_quota",
    "rate_limit": "rate_limit_exceeded",
    "generation_failed": "generation_failed",
    "timed_out": "timeout",
    "service_unavailable": "service_unavailable",
    "account_suspended": "account_suspended",
    "idempotency_key_reused": "idempotency_key_reused",
}
FIELD_CODES = {
    "unknown_parameter": "unknown_parameter",
    "required": "missing_required_parameter",
    "null": "missing_required_parameter",
    "blank": "missing_required_parameter",
}
# Seconds before a client that polls asks again after a spent balance (credits come from a
# purchase or the monthly grant, not from waiting).
QUOTA_RETRY_AFTER = 60
UNSTORABLE = "The value of {name!r} holds a NUL character or an unpaired surrogate."
SUBMIT_ERRORS = {code: OpenAIError for code in (400, 401, 403, 404, 413, 422, 429, 500, 503, 504)}


def error_type(problem: Problem) -> str:
    if problem.kind == "insufficient_credits":
        return "insufficient_quota"
    if problem.status == status.HTTP_429_TOO_MANY_REQUESTS:
        return "requests"
    if problem.status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(problem: Problem) -> dict[str, Any]:
    """OpenAI's {"error": {...}}; `param` names the parameter when one is at fault."""
    param, code = None, CODES.get(problem.kind)
    if isinstance(problem.message, dict) and len(problem.message) == 1:
        param, messages = next(iter(problem.message.items()))
        first = messages[0] if isinstance(messages, list) and messages else messages
        code = FIELD_CODES.get(getattr(first, "code", ""), "invalid_value")
    elif problem.status == status.HTTP_429_TOO_MANY_REQUESTS and code is None:
        code = "rate_limit_exceeded"  # a plan limit (daily images, queue, concurrency)
    detail = {"message": problem.text, "type": error_type(problem), "param": param, "code": code}
    return {"error": detail}


def handle_exception(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every OpenAI view's errors, with OpenAI's statuses where they differ from Pictor's."""
    problem = describe(exc, context)
    if problem is None:
        return None
    if isinstance(exc, ModelNotFound):
        problem.kind = "model_not_found"
    if isinstance(exc, exceptions.UnsupportedMediaType):
        problem.status = status.HTTP_400_BAD_REQUEST
        problem.message = getattr(context.get("view"), "media_help", problem.message)
    if problem.kind == "insufficient_credits":
        # OpenAI's answer to a spent balance. x-should-retry stops its SDKs retrying at once;
        # Retry-After (every 429 has one) is when a client that polls might look again.
        problem.status = status.HTTP_429_TOO_MANY_REQUESTS
        problem.headers["x-should-retry"] = "false"
        problem.retry_after = QUOTA_RETRY_AFTER
    return respond(error_body(problem), problem)


class MultiPartUploadParser(MultiPartParser):
    """multipart/form-data within the body limit (Django's own limit leaves files out)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        meta = (parser_context or {})["request"].META
        length = meta.get("CONTENT_LENGTH") or "0"
        if (
            not (length.isascii() and length.isdigit())
            or int(length) > settings.PICTOR_MAX_BODY_BYTES
        ):
            raise BodyTooLarge(too_large_message())
        return super().parse(stream, media_type, parser_context)


def queue_upload(request: OrgRequest, found: dict[str, Any], fingerprint: str | None) -> Job:
    """Queue and charge an upload route's job, as submission.submit does for a JSON body.

    The spam filter and Idempotency-Key see `fingerprint`: the form's fields and the digests
    of its files, where the body as parsed would only hold the files' names.
    """
    org = request.user.organization
    model: AIModel = found["checkpoint"]
    key = submission.idempotency_key(request)
    if key:
        try:
            service.replay(org, key, fingerprint or "")
        except service.Replayed as replayed:
            return replayed.job
    inputs = submission.Inputs(org.pk)
    try:
        req = submission.build_request(
            request, model, found["fields"], found["kind"], inputs, addons_resolved=True
        )
        problems = req.problems()
        if problems:
            raise exceptions.ValidationError({k: [v] for k, v in problems.items()})
        return service.submit(
            req,
            org,
            model,
            api_key=request.auth,
            kind=req.kind,
            track_id=found["track_id"],
            base_url=answers.base_url_for(request),
            output_base64=found["response_format"] == "b64_json",
            fingerprint=fingerprint,
            idempotency_key=key,
        )
    except service.Replayed as replayed:
        # The inputs this retry stored belong to no job: the first request's job has its own.
        inputs.discard()
        return replayed.job
    except BaseException:
        inputs.discard()
        raise


class EditsForm(EditsSerializer):
    """The multipart form of POST /v1/images/edits."""

    image = serializers.FileField(help_text="The image to edit (image[] is read the same)")
    mask = serializers.FileField(
        required=False,
        help_text="A PNG of the image's size: its fully transparent pixels are repainted",
    )


class VariationsForm(VariationsSerializer):
    """The multipart form of POST /v1/images/variations."""

    image = serializers.FileField(help_text="The image to vary (image[] is read the same)")


class OpenAIView(FormatView):
    """A view of the OpenAI format: its error shape and statuses."""

    error_body = staticmethod(error_body)

    def get_exception_handler(self) -> Callable[..., Any]:
        return handle_exception

    def read(
        self,
        request: OrgRequest,
        serializer_class: type[OpenAISerializer],
        data: dict[str, Any],
        **extra: Any,
    ) -> dict[str, Any]:
        """What the serializer reads from `data` (the plan and request in its context)."""
        for name, value in data.items():
            if not is_storable(name):
                raise exceptions.ValidationError("A parameter name holds a NUL character.")
            if isinstance(value, str) and not is_storable(value):
                raise exceptions.ValidationError({name: [UNSTORABLE.format(name=name[:100])]})
        org = request.user.organization
        serializer = serializer_class(
            data=data, context={"org": org, "plan": org.plan, "request": request, **extra}
        )
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def answer(self, request: OrgRequest, job: Job, found: dict[str, Any]) -> Response:
        job = submission.wait_until_done(job, request)
        body = images_body(job, found, answers.base_url_for(request))
        return Response(OpenAIImages(body).data)


class GenerationsView(OpenAIView):
    """POST /v1/images/generations: images from a prompt; waits for them."""

    @extend_schema(
        tags=["OpenAI"],
        summary="Create images (waits for them)",
        request=GenerationsSerializer,
        responses={200: OpenAIImages, **SUBMIT_ERRORS},
    )
    def post(self, request: OrgRequest) -> Response:
        found = self.read(request, GenerationsSerializer, clean_body(request.data))
        job = submission.submit(
            request,
            found["fields"],
            found["kind"],
            model=found["checkpoint"],
            track_id=found["track_id"],
            output_base64=found["response_format"] == "b64_json",
        )
        return self.answer(request, job, found)


class UploadView(OpenAIView):
    """A route whose image comes as a file in multipart/form-data."""

    parser_classes = [MultiPartUploadParser, StrictJSONParser]
    media_help = "Send multipart/form-data with the image as a file."
    serializer_class: type[OpenAISerializer]

    def post(self, request: OrgRequest) -> Response:
        if not (request.content_type or "").startswith("multipart/form-data"):
            raise exceptions.ValidationError(self.media_help)
        files = request.FILES
        form = cast(QueryDict, request.data)
        fields: dict[str, Any] = {}
        for name in form:
            if name in files:
                continue
            if name in ("image", "image[]", "mask"):
                raise exceptions.ValidationError({name: [f"Send {name} as a file."]})
            values = form.getlist(name)
            if len(values) > 1:
                raise exceptions.ValidationError({name: [f"Send {name} once."]})
            fields[name] = values[0]
        text_fields = self.serializer_class().fields
        for name in files:
            if name in text_fields:
                raise exceptions.ValidationError({name: [f"Send {name} as text, not a file."]})
            if name not in self.serializer_class.files:
                message = f"Unknown parameter: '{name[:100]}'."
                raise exceptions.ValidationError(
                    {name: [exceptions.ErrorDetail(message, "unknown_parameter")]}
                )
        uploads = files.getlist("image") + files.getlist("image[]")
        if not uploads:
            message = "The image file is required."
            raise exceptions.ValidationError(
                {"image": [exceptions.ErrorDetail(message, "required")]}
            )
        if len(uploads) > 1:
            raise exceptions.ValidationError({"image": ["Pictor takes one image: send one."]})
        masks = files.getlist("mask")
        if len(masks) > 1:
            raise exceptions.ValidationError({"mask": ["Send one mask."]})
        data = images.read_upload("image", uploads[0])
        image = images.decode_image("image", data)
        digests = {"image": images.digest(data)}
        mask = None
        if masks:
            mask_data = images.read_upload("mask", masks[0])
            mask = images.decode_mask(mask_data, image.size)
            digests["mask"] = images.digest(mask_data)
        found = self.read(
            request, self.serializer_class, clean_body(fields), image=image, mask=mask
        )
        fingerprint = limits.body_fingerprint({**fields, **digests}, request.path)
        return self.answer(request, queue_upload(request, found, fingerprint), found)


class EditsView(UploadView):
    """POST /v1/images/edits: repaint the mask's transparent area, or the whole image."""

    serializer_class = EditsSerializer

    @extend_schema(
        tags=["OpenAI"],
        summary="Edit an image (waits for the result)",
        request={"multipart/form-data": EditsForm},
        responses={200: OpenAIImages, **SUBMIT_ERRORS},
    )
    def post(self, request: OrgRequest) -> Response:
        return super().post(request)


class VariationsView(UploadView):
    """POST /v1/images/variations: the image redrawn without a prompt."""

    serializer_class = VariationsSerializer

    @extend_schema(
        tags=["OpenAI"],
        summary="Vary an image (waits for the result)",
        request={"multipart/form-data": VariationsForm},
        responses={200: OpenAIImages, **SUBMIT_ERRORS},
    )
    def post(self, request: OrgRequest) -> Response:
        return super().post(request)


class ModelListView(OpenAIView):
    """GET /v1/models: the models the caller may name in `model`."""

    @extend_schema(
        tags=["OpenAI"],
        summary="List models",
        operation_id="openai_models_list",
        responses={200: OpenAIModelList, 401: OpenAIError},
    )
    def get(self, request: OrgRequest) -> Response:
        body = {"object": "list", "data": model_entries(request.user.organization)}
        return Response(OpenAIModelList(body).data)


class ModelView(OpenAIView):
    """GET /v1/models/<id>: one model the caller may name."""

    @extend_schema(
        tags=["OpenAI"],
        summary="Retrieve a model",
        operation_id="openai_models_retrieve",
        parameters=[OpenApiParameter("model_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={200: OpenAIModel, 401: OpenAIError, 404: OpenAIError},
    )
    def get(self, request: OrgRequest, model_id: str) -> Response:
        for entry in model_entries(request.user.organization):
            if entry["id"] == model_id:
                return Response(OpenAIModel(entry).data)
        raise ModelNotFound(f"The model '{model_id[:100]}' does not exist.")
