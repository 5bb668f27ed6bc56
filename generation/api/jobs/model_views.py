"""The job API's own-model routes: /api/v1/models (list, add) and /api/v1/models/<id> (get, delete).

A model is added as a multipart upload (`file` plus fields) or as JSON with a `url` that the
server downloads through the SSRF-safe client; generation/own_models.py does the work.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.db.models import Max
from django.http import QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from accounts.auth import require_manager
from billing.models import Plan
from generation import own_models
from generation.api import schema
from generation.api.base import clean_body, storable
from generation.api.jobs import serializers as shapes
from generation.api.jobs.views import JobsView
from generation.api.parsers import AnyContentTypeJSONParser, declared_length
from generation.models import AIModel

if TYPE_CHECKING:
    from rest_framework.request import Request

    from accounts.requests import KeyRequest

TAG = "Jobs"
NOT_FOUND = "No such model."
# Multipart fields other than the file are short; the file is bounded by the plan.
FORM_SLACK = 1024 * 1024


class ModelAdd(serializers.Serializer):
    """POST /api/v1/models: a multipart `file`, or JSON with a `url` to download."""

    model_id = serializers.CharField(max_length=80, help_text="Your id for it; must be free")
    category = serializers.ChoiceField(choices=list(own_models.CATEGORIES))
    base = serializers.ChoiceField(
        choices=AIModel.Base.values,
        required=False,
        help_text="The architecture of a LoRA, embedding or VAE (default sd15); "
        "a checkpoint's is read from the file",
    )
    name = serializers.CharField(max_length=200, required=False)
    url = serializers.CharField(
        max_length=2000, required=False, help_text="http(s) URL of a .safetensors file"
    )
    file = serializers.FileField(required=False, help_text="A .safetensors file (multipart)")

    def validate_model_id(self, value: str) -> str:
        return storable(value)

    def validate_name(self, value: str) -> str:
        return storable(value)

    def validate_url(self, value: str) -> str:
        return storable(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("url" in attrs) == ("file" in attrs):
            raise ValidationError({"file": ["Send either a multipart `file` or a `url`."]})
        return attrs


class ModelAnswer(serializers.Serializer):
    model_id = serializers.CharField()
    name = serializers.CharField()
    category = serializers.ChoiceField(choices=list(own_models.CATEGORIES))
    family = serializers.ChoiceField(choices=AIModel.Family.values)
    base = serializers.ChoiceField(choices=AIModel.Base.values)
    status = serializers.CharField(help_text="validating, ready or failed")
    error = serializers.CharField(allow_null=True, help_text="Why validation failed")
    sha256 = serializers.CharField(help_text="Of the uploaded file")
    size = serializers.IntegerField(help_text="Bytes stored, counted against the plan")
    created_at = serializers.DateTimeField()


class ModelList(serializers.Serializer):
    results = ModelAnswer(many=True)
    used_bytes = serializers.IntegerField()
    storage_bytes = serializers.IntegerField(help_text="The plan's model storage")
    max_model_bytes = serializers.IntegerField(help_text="The plan's largest model file")


def largest_upload() -> int:
    """The largest body any plan's model upload may have, checked before the body is read."""
    largest = Plan.objects.aggregate(n=Max("model_max_bytes"))["n"]
    return int(largest or 0) + FORM_SLACK


def local_file(upload: UploadedFile) -> tuple[Path, bool]:
    """(a path of the uploaded file on disk, whether it is a temp file of ours to remove)."""
    if isinstance(upload, TemporaryUploadedFile):
        return Path(upload.temporary_file_path()), False
    with tempfile.NamedTemporaryFile(suffix=".safetensors", delete=False) as fh:
        for chunk in upload.chunks():
            fh.write(chunk)
    return Path(fh.name), True


def org_models(request: KeyRequest) -> Any:
    return AIModel.objects.filter(organization=request.user.organization, enabled=True)


class ModelsView(JobsView):
    parser_classes = [MultiPartParser, AnyContentTypeJSONParser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Authentication may read the body (a `key` field): bound it before anything does.
        if request.method == "POST" and request.content_type.startswith("multipart/"):
            if declared_length(request.META) > largest_upload():
                raise own_models.ModelTooLarge(
                    "The upload is larger than any plan allows for one model."
                )
        super().initial(request, *args, **kwargs)


class ModelListView(ModelsView):
    """GET /api/v1/models lists the organization's own models; POST adds one."""

    @extend_schema(
        tags=[TAG],
        summary="List this organization's own models",
        operation_id="models_list",
        responses={200: ModelList},
    )
    def get(self, request: KeyRequest) -> Response:
        org = request.user.organization
        rows = org_models(request).order_by("-created_at", "-pk")
        return Response(
            {
                "results": [own_models.model_body(m) for m in rows],
                "used_bytes": own_models.used_bytes(org),
                "storage_bytes": org.plan.model_storage_bytes,
                "max_model_bytes": org.plan.model_max_bytes,
            }
        )

    @extend_schema(
        tags=[TAG],
        summary="Add a LoRA, embedding, VAE or checkpoint (.safetensors), by upload or URL",
        operation_id="models_create",
        request={"multipart/form-data": ModelAdd, "application/json": ModelAdd},
        responses={
            202: OpenApiResponse(ModelAnswer, description="Stored; a worker validates it"),
            400: OpenApiResponse(
                shapes.JobsError, description="A field is bad, or the file is no .safetensors"
            ),
            402: OpenApiResponse(
                shapes.JobsError, description="The plan has no own models, or no room left"
            ),
            413: OpenApiResponse(
                shapes.JobsError, description="The file is larger than the plan allows"
            ),
            503: OpenApiResponse(shapes.JobsError, description=schema.STATUS_MEANINGS[503]),
        },
    )
    def post(self, request: KeyRequest) -> Response:
        require_manager(request, "add or delete models")
        org = request.user.organization
        data: Any = request.data
        if isinstance(data, QueryDict):  # multipart: one value per field
            data = {k: data.get(k) for k in data}
        body = clean_body(data)
        body.pop("key", None)
        shape = ModelAdd(data=body)
        shape.is_valid(raise_exception=True)
        fields: dict[str, Any] = dict(shape.validated_data)
        own_models.check_plan(org, None)
        own_models.check_model_id(fields["model_id"])
        if "url" in fields:
            path, remove = own_models.fetch_url(org, fields["url"]), True
        else:
            path, remove = local_file(fields["file"])
        try:
            model = own_models.add_model(
                org,
                path,
                model_id=fields["model_id"],
                category=fields["category"],
                base=fields.get("base", ""),
                name=fields.get("name", ""),
                fields={"file": "url" if "url" in fields else "file"},
            )
        finally:
            if remove:
                path.unlink(missing_ok=True)
        model.refresh_from_db()
        return Response(own_models.model_body(model), status=202)


MODEL_ID = OpenApiParameter("model_id", OpenApiTypes.STR, OpenApiParameter.PATH)


def own_model(request: KeyRequest, model_id: str) -> AIModel:
    """The caller's own model; another tenant's (or an operator's) is a 404, like a missing one."""
    model = org_models(request).filter(model_id=model_id).first()
    if model is None:
        raise NotFound(NOT_FOUND)
    return model


class ModelDetailView(ModelsView):
    """GET /api/v1/models/<model_id>: one own model; DELETE removes it and its files."""

    @extend_schema(
        tags=[TAG],
        summary="One of this organization's own models",
        operation_id="models_retrieve",
        parameters=[MODEL_ID],
        responses={
            200: ModelAnswer,
            404: OpenApiResponse(shapes.JobsError, description="No such model"),
        },
    )
    def get(self, request: KeyRequest, model_id: str) -> Response:
        return Response(own_models.model_body(own_model(request, model_id)))

    @extend_schema(
        tags=[TAG],
        summary="Delete an own model, its stored files and cached copies",
        operation_id="models_destroy",
        parameters=[MODEL_ID],
        request=None,
        responses={204: None, 404: OpenApiResponse(shapes.JobsError, description="No such model")},
    )
    def delete(self, request: KeyRequest, model_id: str) -> Response:
        require_manager(request, "add or delete models")
        if not own_models.delete_model(own_model(request, model_id)):
            raise NotFound(NOT_FOUND)  # a request at the same moment deleted it
        return Response(status=204)
