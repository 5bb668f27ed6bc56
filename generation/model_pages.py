"""The organization's models page (/app/models/): what it may use, and its own models.

Owners and admins add a LoRA, embedding, VAE or checkpoint here by upload, or delete one; the
work is generation/own_models.py's, the same as the job API's /api/v1/models and ModelsLab's
load_model. Members see the list, each checkpoint with a sample image that a worker makes the
first time the page shows it (generation/model_samples.py).
"""

from __future__ import annotations

from pathlib import Path

from django.contrib import messages
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework.exceptions import APIException, ValidationError

from accounts.requests import MemberRequest
from accounts.tenancy import MANAGER_ROLES, member_required, require_manager
from generation import model_samples, own_models
from generation.api.jobs.model_views import local_file
from generation.models import AIModel

NAMES = {
    "file": "File",
    "model_id": "Model id",
    "category": "Kind",
    "base": "Base",
    "name": "Name",
}


def problem(exc: APIException) -> str:
    """One line for the page from a refusal of own_models (a field's message, or the detail)."""
    detail = exc.detail
    if isinstance(detail, dict):
        parts = []
        for name, errors in detail.items():
            text = errors[0] if isinstance(errors, list) and errors else errors
            parts.append(f"{NAMES.get(str(name), str(name))}: {text}")
        return " ".join(parts)
    return str(detail)


@member_required
@require_http_methods(["GET", "POST"])
def models_page(request: MemberRequest) -> HttpResponse:
    """GET lists the models the organization may use; POST (a manager) adds an own model."""
    org = request.org
    can_manage = request.membership.role in MANAGER_ROLES
    if request.method == "POST":
        require_manager(request)
        add(request)
        return redirect("app-models")
    visible = AIModel.objects.filter(enabled=True).filter(
        Q(organization__isnull=True, status=AIModel.Status.READY) | Q(organization=org)
    )
    own = list(visible.filter(organization=org).order_by("-created_at", "-pk"))
    shared = list(visible.filter(organization__isnull=True).order_by("family", "model_id"))
    model_samples.request_samples([*own, *shared])
    plan = org.plan
    return render(
        request,
        "generation/models.html",
        {
            "own": with_samples(own),
            "shared": with_samples(shared),
            "can_manage": can_manage,
            "allowed": plan.model_max_bytes > 0 and plan.model_storage_bytes > 0,
            "used": own_models.size_text(own_models.used_bytes(org)),
            "quota": own_models.size_text(plan.model_storage_bytes),
            "largest": own_models.size_text(plan.model_max_bytes),
            "categories": list(own_models.CATEGORIES),
            "bases": AIModel.Base.values,
        },
    )


def with_samples(models: list[AIModel]) -> list[tuple[AIModel, str]]:
    """Each model with a signed link to its sample ("" for none); only for models on the page."""
    return [(model, model_samples.sample_url(model)) for model in models]


def add(request: MemberRequest) -> None:
    """Store the uploaded file as a new own model (validated later by a worker), or say why not."""
    upload = request.FILES.get("file")
    if not isinstance(upload, UploadedFile):
        messages.error(request, "Choose a .safetensors file to upload.")
        return
    path: Path | None = None
    remove = False
    try:
        path, remove = local_file(upload)
        model = own_models.add_model(
            request.org,
            path,
            model_id=request.POST.get("model_id", "").strip(),
            category=request.POST.get("category", ""),
            base=request.POST.get("base", ""),
            name=request.POST.get("name", "").strip(),
        )
    except (ValidationError, APIException) as exc:
        messages.error(request, problem(exc))
        return
    finally:
        if remove and path is not None:
            path.unlink(missing_ok=True)
    messages.success(
        request,
        f"{model.model_id} is uploaded; a worker is trying it now. "
        "It is usable once it says ready.",
    )


@member_required
@require_POST
def delete(request: MemberRequest, model_id: str) -> HttpResponse:
    """Remove an own model, its stored files and cached copies (owners and admins)."""
    require_manager(request)
    model = get_object_or_404(AIModel, organization=request.org, enabled=True, model_id=model_id)
    if not own_models.delete_model(model):
        raise Http404("No such model")  # a request at the same moment deleted it
    messages.success(request, f"{model_id} is deleted.")
    return redirect("app-models")
