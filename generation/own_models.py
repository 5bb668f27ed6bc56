"""Tenants' own models: add one (an upload or a URL), validate it on a worker, delete it.

Every way in (the job API's /api/v1/models, ModelsLab's load_model, the settings page) calls
add_model(). Only .safetensors files are taken, their header checked here (a pickle never
reaches a worker); the plan bounds the file and the organization's total. The file goes to the
object store (generation/model_store.py) and the model stays `validating` until a worker has
loaded it and run one 64 px step with it (validate_model, a django-q2 task): then `ready`, and
usable by the organization alone, or `failed` with the reason.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import struct
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone
from django_q.tasks import async_task
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError

from accounts.models import Organization
from generation import model_samples, model_store, safe_http
from generation.engine.prompts import UNSTORABLE_NAME, has_unstorable
from generation.models import MODEL_NAME_LENGTH, AIModel, Job
from generation.queue import check_broker

log = logging.getLogger(__name__)

Family = AIModel.Family
VALIDATE_TASK = "generation.own_models.validate_model"
# One validation of a model at a time: a task queued again after its first seemed lost may meet
# the first still running. The lock outlives any validation; a worker killed mid-way leaves it
# to expire, and the model is queued again after that.
VALIDATION_LOCK = "pictor:validating-model:{}"
VALIDATION_LOCK_SECONDS = 3600
# A model still `validating` this long after it was added has probably lost its task (a Redis
# restart, a killed worker): the sweep queues it again, at most once per this interval...
VALIDATION_STALE = timedelta(minutes=15)
# ...and gives it up as failed when it has waited this long.
VALIDATION_GIVE_UP = timedelta(hours=24)
# What a client may call a category -> the family stored ("checkpoint": read from the file).
CATEGORIES = {
    "lora": Family.LORA,
    "embedding": Family.EMBEDDING,
    "vae": Family.VAE,
    "checkpoint": "checkpoint",
}
MODEL_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,79}")
# A safetensors header is JSON of a few hundred KB at most; more is no model Pictor takes.
MAX_HEADER = 100 * 1024 * 1024
DTYPES = {
    "F64",
    "F32",
    "F16",
    "BF16",
    "I64",
    "I32",
    "I16",
    "I8",
    "U8",
    "BOOL",
    "F8_E4M3",
    "F8_E5M2",
}
# Non-weight files a single-file checkpoint needs from its base's diffusers folder.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".msgpack", ".h5")
NOT_SAFETENSORS = (
    "The file is not a .safetensors file; pickled checkpoints (.ckpt, .pt, .bin) are refused."
)
WEIGHTS_FILE: dict[str, str] = {
    Family.LORA: "pytorch_lora_weights.safetensors",
    Family.EMBEDDING: "learned_embeds.safetensors",
    Family.VAE: "diffusion_pytorch_model.safetensors",
}
CHECKPOINT_FILE = "model.safetensors"


class OwnModelsNotInPlan(APIException):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_code = "plan_limit"
    tips = "Upgrade to a plan with own models."


class ModelTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "model_too_large"


class StorageQuotaExceeded(APIException):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_code = "storage_quota_exceeded"
    tips = "Delete one of your models, or upgrade to a plan with more model storage."


def size_text(n: int) -> str:
    """A size as people read it: 1.5 GiB, 144.0 MiB, 50.6 KiB (never "0.0 MiB")."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def used_bytes(organization: Organization) -> int:
    """Bytes of the organization's own models in the object store."""
    total = AIModel.objects.filter(organization=organization).aggregate(n=Sum("size"))["n"]
    return int(total or 0)


def check_plan(organization: Organization, size: int | None, field: str = "file") -> None:
    """Refuse a model the plan does not allow: none at all (402), too large (413), or quota."""
    plan = organization.plan
    if plan.model_max_bytes <= 0 or plan.model_storage_bytes <= 0:
        raise OwnModelsNotInPlan(f"The {plan.name} plan does not include own models.")
    if size is None:
        return
    if size > plan.model_max_bytes:
        raise ModelTooLarge(
            f"The {field} ({size_text(size)}) is larger than the {plan.name} plan allows "
            f"for one model ({size_text(plan.model_max_bytes)})."
        )
    used = used_bytes(organization)
    if used + size > plan.model_storage_bytes:
        raise StorageQuotaExceeded(
            f"The model ({size_text(size)}) does not fit in the {plan.name} plan's model "
            f"storage: {size_text(used)} of {size_text(plan.model_storage_bytes)} used."
        )


def check_safetensors(path: Path, field: str = "file") -> dict[str, Any]:
    """The header of a well-formed .safetensors file; anything else is a 400 naming `field`."""
    try:
        return safetensors_header(path)
    except ValueError as exc:
        raise ValidationError({field: [str(exc)]}) from None


def safetensors_header(path: Path) -> dict[str, Any]:
    """The header of a well-formed .safetensors file with tensors; ValueError says what is wrong.

    Also what `manage.py import_model` takes from an operator's disk.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) != 8:
            raise ValueError(NOT_SAFETENSORS)
        (length,) = struct.unpack("<Q", prefix)
        if length < 2 or length > min(MAX_HEADER, size - 8):
            raise ValueError(NOT_SAFETENSORS)
        raw = fh.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: JSON nested thousands deep, which no safetensors header is.
        raise ValueError(NOT_SAFETENSORS) from None
    if not isinstance(header, dict):
        raise ValueError(NOT_SAFETENSORS)
    data_bytes = size - 8 - length
    tensors = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = (
            isinstance(entry, dict)
            and entry.get("dtype") in DTYPES
            and isinstance(entry.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in entry["shape"])
            and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2
            and all(isinstance(o, int) for o in entry["data_offsets"])
            and 0 <= entry["data_offsets"][0] <= entry["data_offsets"][1] <= data_bytes
        )
        if not ok:
            raise ValueError(f"The .safetensors header is damaged (tensor {name[:100]!r}).")
        tensors += 1
    if not tensors:
        raise ValueError("The .safetensors file holds no tensors.")
    return header


def check_model_id(model_id: str, field: str = "model_id") -> str:
    """A new model id: lower-case letters, digits, - and _, not taken by any model."""
    if not MODEL_ID.fullmatch(model_id):
        raise ValidationError(
            {field: ["Use 1 to 80 lower-case letters, digits, - and _, starting with one."]}
        )
    if AIModel.objects.filter(model_id=model_id).exists():
        raise ValidationError({field: [f"The model id {model_id!r} is taken; choose another."]})
    return model_id


def category_family(category: str, path: Path, field: str) -> tuple[str, str | None]:
    """(family, base read from the file or None) of an upload in `category`."""
    family = CATEGORIES.get(category)
    if family is None:
        raise ValidationError({field: [f"Choose one of: {', '.join(CATEGORIES)}."]})
    if family != "checkpoint":
        return family, None
    from generation.engine.single_file import detect_family

    detected = detect_family(str(path))
    if detected is None:
        raise ValidationError(
            {
                field: [
                    "The file is not a single-file Stable Diffusion checkpoint "
                    "(SD 1.x, 2.x or XL, as AUTOMATIC1111 and civitai share them)."
                ]
            }
        )
    return detected.family, detected.base


def fetch_url(organization: Organization, url: str, field: str = "url") -> Path:
    """Download a model from a client's URL through the SSRF-safe client into a temp file."""
    check_plan(organization, None)
    check_broker()  # no download that could not be validated
    policy = safe_http.policy_from_settings()
    limit = organization.plan.model_max_bytes
    policy = safe_http.FetchPolicy(
        allowed_ports=policy.allowed_ports,
        allowed_networks=policy.allowed_networks,
        max_bytes=limit,
        timeout=settings.PICTOR_MODEL_FETCH_TIMEOUT,
    )
    # The file streams to disk: a model may be gigabytes, more than a web process should hold.
    with tempfile.NamedTemporaryFile(suffix=".safetensors", delete=False) as fh:
        path = Path(fh.name)
        try:
            safe_http.get(url, policy=policy, sink=fh)
        except safe_http.UnsafeURL as exc:
            path.unlink(missing_ok=True)
            raise ValidationError({field: [f"The URL is refused: {exc}"]}) from None
        except safe_http.FetchFailed as exc:
            path.unlink(missing_ok=True)
            if "larger than" in str(exc):
                raise ModelTooLarge(
                    f"The model at the URL is larger than the {organization.plan.name} plan "
                    f"allows for one model ({size_text(limit)})."
                ) from None
            raise ValidationError({field: [f"The model could not be downloaded: {exc}"]}) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return path


def add_model(
    organization: Organization,
    path: Path,
    *,
    model_id: str,
    category: str,
    base: str = "",
    name: str = "",
    fields: dict[str, str] | None = None,
) -> AIModel:
    """Check a local .safetensors file, store it and queue its validation; a `validating` model.

    `fields` maps this function's argument names (file, model_id, category, base, name) to the
    caller's, so each 400 names what the client sent.
    """
    names = {
        "file": "file",
        "model_id": "model_id",
        "category": "category",
        "base": "base",
        "name": "name",
    }
    names.update(fields or {})
    check_plan(organization, None)
    check_broker()
    check_model_id(model_id, names["model_id"])
    if has_unstorable(name):
        raise ValidationError({names["name"]: [UNSTORABLE_NAME]})
    if len(name) > MODEL_NAME_LENGTH:
        raise ValidationError(
            {names["name"]: [f"A name has at most {MODEL_NAME_LENGTH} characters."]}
        )
    if base and base not in AIModel.Base.values:
        raise ValidationError(
            {names["base"]: [f"Choose one of: {', '.join(AIModel.Base.values)}."]}
        )
    check_plan(organization, path.stat().st_size, names["file"])
    check_safetensors(path, names["file"])
    family, detected = category_family(category, path, names["category"])
    base = detected or base or AIModel.Base.SD15
    weights = WEIGHTS_FILE.get(family, CHECKPOINT_FILE)
    model = AIModel(
        model_id=model_id,
        name=name or model_id,
        family=family,
        base=base,
        organization=organization,
        status=AIModel.Status.VALIDATING,
        path=weights if family != Family.VAE else "",
        storage_prefix=f"models/{organization.pk}/{model_id}/{secrets.token_hex(8)}",
    )
    entry = model_store.upload(model, weights, path)
    model.files = [entry]
    model.sha256 = entry["sha256"]
    model.size = entry["size"]
    try:
        with transaction.atomic():
            # Uploads of one organization at the same moment: each checks the quota with the
            # others' rows in, so together they never pass it.
            Organization.objects.select_for_update().filter(pk=organization.pk).first()
            check_plan(organization, model.size, names["file"])
            model.save()
            transaction.on_commit(lambda: queue_validation(model.pk))
    except IntegrityError:
        model_store.delete_objects(model)
        raise ValidationError(
            {names["model_id"]: [f"The model id {model_id!r} is taken; choose another."]}
        ) from None
    except BaseException:  # over the quota now, or anything else: nothing stays stored
        model_store.delete_objects(model)
        raise
    return model


def queue_validation(model_pk: int) -> None:
    """Hand the model's validation to a worker; if the broker fails now, the model fails.

    The broker was checked before the upload was stored, so this fails only when Redis went
    away in between; the model then says so instead of waiting for a task that never comes.
    """
    try:
        async_task(VALIDATE_TASK, model_pk, task_name=f"validate-model-{model_pk}", group="models")
    except Exception as exc:  # any broker client error
        log.warning("model %s: its validation could not be queued: %s", model_pk, exc)
        model = AIModel.objects.filter(pk=model_pk, status=AIModel.Status.VALIDATING).first()
        if model is not None:
            model_store.delete_objects(model)
            AIModel.objects.filter(pk=model_pk).update(
                status=AIModel.Status.FAILED,
                error="The job queue was unavailable; add the model again.",
                files=[],
                size=0,
            )


def base_checkpoint(family: str, base: str) -> AIModel | None:
    """The operator's checkpoint an add-on is tried on (or a checkpoint takes its configs from)."""
    wanted = family if family in AIModel.CHECKPOINTS else base
    return (
        AIModel.objects.filter(
            organization__isnull=True,
            enabled=True,
            status=AIModel.Status.READY,
            family=wanted,
            base=base,
        )
        .order_by("-is_default", "pk")
        .first()
    )


def config_folder(checkpoint: AIModel) -> Path:
    """The diffusers folder holding a checkpoint's configs (its own, or its single file's)."""
    ref = checkpoint.ref()
    return Path(ref.config_path or ref.path)


def attach_configs(model: AIModel, checkpoint: AIModel) -> None:
    """Store the configs a file needs to load (a VAE's config.json, a checkpoint's folder)."""
    source = config_folder(checkpoint)
    if model.family == Family.VAE:
        picks = [("config.json", source / "vae" / "config.json")]
    else:
        picks = [
            (f"config/{p.relative_to(source).as_posix()}", p)
            for p in sorted(source.rglob("*"))
            if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES)
        ]
        model.config_path = "config"
    for name, local in picks:
        entry = model_store.upload(model, name, local)
        model.files = [*model.files, entry]
        model.size += entry["size"]


def requeue_lost_validations(now: Any = None) -> int:
    """Queue again the validations that seem lost; fail those waiting too long. Returns how many.

    Run by the queue sweep (tasks.sweep). A second task for a model whose first is only late is
    harmless: validate_model runs one at a time and leaves a model that is no longer validating.
    """
    now = now or timezone.now()
    waiting = AIModel.objects.filter(status=AIModel.Status.VALIDATING)
    given_up = waiting.filter(created_at__lt=now - VALIDATION_GIVE_UP)
    for model in given_up:
        if cache.get(VALIDATION_LOCK.format(model.pk)) is None:
            model_store.delete_objects(model)
            AIModel.objects.filter(pk=model.pk, status=AIModel.Status.VALIDATING).update(
                status=AIModel.Status.FAILED,
                error="Its validation never ran; add the model again.",
                files=[],
                size=0,
            )
    queued = 0
    stale = waiting.filter(
        created_at__lt=now - VALIDATION_STALE, created_at__gte=now - VALIDATION_GIVE_UP
    )
    for pk in stale.values_list("pk", flat=True):
        running = cache.get(VALIDATION_LOCK.format(pk)) is not None
        # At most once per interval per model, across every host's sweep.
        interval = int(VALIDATION_STALE.total_seconds())
        if not running and cache.add(f"pictor:requeued-validation:{pk}", 1, timeout=interval):
            log.info("model %s: queueing its validation again", pk)
            queue_validation(pk)
            queued += 1
    return queued


def validate_model(model_pk: int) -> str:
    """Load a `validating` model on this worker and run one 64 px step; mark it ready or failed."""
    lock = VALIDATION_LOCK.format(model_pk)
    if not cache.add(lock, 1, timeout=VALIDATION_LOCK_SECONDS):
        return "busy"  # another worker validates it now
    try:
        return _validate(model_pk)
    finally:
        cache.delete(lock)


def failure_reason(exc: Exception) -> str:
    """What the tenant is told of a failed load: the library's sentence, without host paths."""
    # A file keeps its own name; the folders it sat in on this worker are nobody's business.
    text = f"{type(exc).__name__}: {exc}"
    folders = (
        settings.PICTOR_MODEL_CACHE_DIR,
        settings.PICTOR_MODELS_DIR,
        settings.VAR_DIR,
        tempfile.gettempdir(),
    )
    for folder in folders:
        text = re.sub(re.escape(str(folder).rstrip("/")) + r"/(?:[^/\s'\"]*/)*", "", text)
    return text[:2000]


def _validate(model_pk: int) -> str:
    model = AIModel.objects.filter(pk=model_pk, status=AIModel.Status.VALIDATING).first()
    if model is None:
        return "gone"
    try:
        checkpoint = base_checkpoint(model.family, model.base)
        if checkpoint is None:
            raise ValueError(f"This server has no {model.base} checkpoint to try the model on.")
        if model.family == Family.VAE or model.is_checkpoint:
            attach_configs(model, checkpoint)
        one_step(model, checkpoint)
    except Exception as exc:
        log.warning("model %s failed validation: %s", model.model_id, exc)
        error = failure_reason(exc)
        # A failed model keeps its row (and reason) but none of the plan's storage.
        model_store.delete_objects(model)
        changed = AIModel.objects.filter(pk=model_pk, status=AIModel.Status.VALIDATING).update(
            status=AIModel.Status.FAILED, error=error, files=[], size=0
        )
        return "failed" if changed else "gone"
    changed = AIModel.objects.filter(pk=model_pk, status=AIModel.Status.VALIDATING).update(
        status=AIModel.Status.READY,
        error="",
        files=model.files,
        size=model.size,
        config_path=model.config_path,
    )
    if not changed:  # deleted while it was being tried: its configs were stored after
        model_store.delete_objects(model)
        return "gone"
    log.info("model %s is ready", model.model_id)
    return "ready"


def one_step(model: AIModel, checkpoint: AIModel) -> None:
    """Generate one 64x64 image in one step with the model (on its base's checkpoint)."""
    from generation.engine import runner
    from generation.engine.addons import embedding_token
    from generation.engine.request import GenerationRequest

    common: dict[str, Any] = {
        "width": 64,
        "height": 64,
        "steps": 1,
        "seed": 0,
        "safety_checker": False,
    }
    if model.is_checkpoint:
        req = GenerationRequest(prompt="a test", model_id=model.model_id, **common)
        runner.generate(req, model.ref())
        return
    addon: dict[str, Any] = {}
    prompt = "a test"
    if model.family == Family.LORA:
        addon["loras"] = ((model.model_id, 1.0),)
    elif model.family == Family.EMBEDDING:
        addon["embeddings"] = (model.model_id,)
        prompt = f"a test {embedding_token(model.model_id)}"
    elif model.family == Family.VAE:
        addon["vae"] = model.model_id
    else:
        raise ValueError(f"{model.family} models cannot be added by tenants.")
    req = GenerationRequest(prompt=prompt, model_id=checkpoint.model_id, **common, **addon)
    runner.generate(req, checkpoint.ref(), addons={model.model_id: model.ref()})


def delete_model(model: AIModel) -> bool:
    """Remove a model, its stored files and this host's cached copy; other hosts drop theirs
    on their next fetch (model_store.sweep). False when another request deleted it first."""
    with transaction.atomic():
        locked = (
            AIModel.objects.select_for_update()
            .filter(pk=model.pk, model_id=model.model_id, enabled=True)
            .first()
        )
        if locked is None:
            return False
        if Job.objects.filter(model=locked).exists():
            # Jobs keep their checkpoint row (PROTECT): keep it, disabled, under a freed id.
            AIModel.objects.filter(pk=locked.pk).update(
                model_id=f"deleted-{locked.pk}-{secrets.token_hex(4)}",
                enabled=False,
                storage_prefix="",
                files=[],
                size=0,
            )
        else:
            locked.delete()
    model_store.delete_objects(model)
    model_samples.delete_sample(locked)
    return True


def model_body(model: AIModel) -> dict[str, Any]:
    """A tenant's model as the job API shows it."""
    return {
        "model_id": model.model_id,
        "name": model.name,
        "category": "checkpoint" if model.is_checkpoint else model.family,
        "family": model.family,
        "base": model.base,
        "status": model.status,
        "error": model.error or None,
        "sha256": model.sha256,
        "size": model.size,
        "created_at": model.created_at,
    }
