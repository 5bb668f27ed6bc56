"""A job's public answer: the ModelsLab body that fetches return, also the webhook payload.

It sits outside generation/api so the worker side (webhooks) builds it without importing a wire
format, and every format reads a job's images as base64 through the one `images_base64`.

`job_body` builds the body as a dict; the `ModelsLabJob` serializer renders it (`job_answer`)
and is what the OpenAPI schema names, so the schema and the bytes sent cannot drift apart.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.files.storage import default_storage
from django.urls import reverse
from rest_framework import serializers
from rest_framework.request import Request

from generation import estimates, media, previews
from generation.models import Job, OutputImage
from sdplatform import hosts


def base_url_for(request: Request) -> str:
    """Scheme and host for absolute URLs: PICTOR_BASE_URL, else the host the client called."""
    return hosts.base_url(request)


def absolute(base_url: str, url: str) -> str:
    """An absolute URL for a path served by this host (storage URLs may already be absolute)."""
    if url.startswith(("http://", "https://")):
        return url
    return base_url + url


def output_links(base_url: str, job: Job) -> list[str]:
    """Fresh signed links to where the job's images are (or will be), absolute."""
    seconds = media.job_lifetime(job)
    return [
        absolute(base_url, media.signed_url(job.output_path(i), seconds))
        for i in range(job.samples)
    ]


def output_files(
    job: Job, outputs: Iterable[OutputImage] | None = None
) -> list[tuple[OutputImage, bytes]]:
    """Each of the job's rows with its image's bytes, in order (`outputs`: the rows, if read)."""
    rows = job.outputs.order_by("index") if outputs is None else outputs
    files = []
    for row in rows:
        with default_storage.open(row.path) as stored:
            files.append((row, stored.read()))
    return files


def images_base64(job: Job, outputs: Iterable[OutputImage] | None = None) -> list[str]:
    """The job's images (PNG unless it asked for jpeg/webp) as base64, in order.

    `outputs`: its rows, when already read.
    """
    return [base64.b64encode(data).decode() for _row, data in output_files(job, outputs)]


def job_meta(job: Job) -> dict[str, Any]:
    """The parameters a job ran with, in ModelsLab's names (the answer's `meta`)."""
    p = job.params
    meta = {
        "prompt": p["prompt"],
        "negative_prompt": p["negative_prompt"],
        "model_id": job.model.model_id,
        "seed": p["seed"],
        "seeds": [p["seed"] + i for i in range(p["samples"])],
        "W": p["width"],
        "H": p["height"],
        "steps": p["steps"],
        "guidance_scale": p["guidance_scale"],
        "scheduler": p["scheduler"],
        "use_karras_sigmas": "yes" if p["use_karras_sigmas"] else "no",
        "algorithm_type": p["algorithm_type"],
        "clip_skip": p["clip_skip"] or 1,
        "safety_checker": "yes" if p["safety_checker"] else "no",
        "safety_checker_type": p["safety_checker_type"],
        "n_samples": p["samples"],
        "credits": job.cost,
    }
    kind = p.get("kind", "text2img")
    if kind in ("img2img", "inpaint", "controlnet-img2img", "controlnet-inpaint"):
        meta["strength"] = p["strength"]
    if p.get("loras"):
        meta["lora_model"] = ",".join(name for name, _weight in p["loras"])
        meta["lora_strength"] = ",".join(f"{weight:g}" for _name, weight in p["loras"])
    if p.get("embeddings"):
        meta["embeddings_model"] = ",".join(p["embeddings"])
    if p.get("vae"):
        meta["vae"] = p["vae"]
    # ModelsLab's yes/no switches, when on (generation/engine/variations.py).
    if p.get("pag_scale"):
        meta["self_attention"] = "yes"
    if p.get("panorama"):
        meta["panorama"] = "yes"
    if p.get("ip_adapter"):
        meta.update(ip_adapter_id=p["ip_adapter"], ip_adapter_scale=p["ip_adapter_scale"])
    if kind.startswith("controlnet"):
        units = p.get("controlnet_units") or []
        meta.update(
            controlnet_model=",".join([p["controlnet_model"], *(u["model"] for u in units)]),
            controlnet_type=",".join([p["controlnet_type"], *(u["type"] for u in units)]),
            controlnet_conditioning_scale=p["controlnet_conditioning_scale"],
            control_guidance_start=p["control_guidance_start"],
            control_guidance_end=p["control_guidance_end"],
            guess_mode="yes" if p.get("guess_mode") else "no",
        )
        if units:
            meta["controlnet_units"] = [
                {k: u[k] for k in ("model", "type", "scale", "start", "end")} for u in units
            ]
    if kind == "upscale":
        meta["scale"] = p["scale"]
    meta.update(
        tomesd="yes" if p.get("tomesd") else "no",
        enhance_prompt="yes" if p.get("enhance_prompt") else "no",
        upscale=p.get("hires_scale", 1),
        W=p["width"] * p.get("hires_scale", 1),
        H=p["height"] * p.get("hires_scale", 1),
    )
    return meta


def job_body(
    job: Job, base_url: str, fetch_url_name: str = "api-v3-fetch", preview: bool = False
) -> dict[str, Any]:
    """The ModelsLab body for a job in any state, before `ModelsLabJob` renders it.

    `preview`: a running job's body carries its live preview, when there is one (fetches do;
    webhook payloads do not).
    """
    base: dict[str, Any] = {"id": job.pk}
    if job.track_id:
        base["track_id"] = job.track_id
    if job.status == Job.Status.SUCCESS and job.expired_at:
        # The plan's retention deleted the images (generation/retention.py): still a success,
        # but nothing to link to.
        return {
            "status": "success",
            "generationTime": job.generation_time,
            **base,
            "message": "Outputs expired",
            "tip": "Images are kept for the plan's retention period; generate again.",
            "output": [],
            "proxy_links": [],
            "nsfw_content_detected": [],
            "meta": job_meta(job),
        }
    if job.status == Job.Status.SUCCESS:
        outputs = list(job.outputs.all())
        if job.output_base64:
            output = images_base64(job, outputs)
        else:
            # Signed now, so every fetch (and the webhook) hands out links that work for the
            # full lifetime from this answer on.
            seconds = media.job_lifetime(job)
            output = [absolute(base_url, media.signed_url(o.path, seconds)) for o in outputs]
        return {
            "status": "success",
            "generationTime": job.generation_time,
            **base,
            "output": output,
            "proxy_links": output if not job.output_base64 else [],
            "nsfw_content_detected": [o.nsfw for o in outputs],
            "meta": job_meta(job),
        }
    if job.status in (Job.Status.FAILED, Job.Status.CANCELED):
        message = "Failed, Try Again" if job.status == Job.Status.FAILED else "Job canceled"
        return {"status": "failed", **base, "message": message, "output": []}
    progress = job.progress_step / job.progress_total if job.progress_total else 0.0
    running: dict[str, Any] = {}
    if preview and job.status == Job.Status.PROCESSING:
        image = previews.latest(job.pk)
        if image is not None:
            running["preview"] = image
    return {
        "status": "processing",
        **base,
        "eta": estimates.eta(job),
        "progress": round(progress, 3),
        **running,
        "message": "Try to fetch request after seconds estimated",
        "tip": "Poll fetch_result until status is success.",
        "fetch_result": absolute(base_url, reverse(fetch_url_name, args=[job.pk])),
        "future_links": output_links(base_url, job),
        "output": [],
        "meta": job_meta(job),
    }


class UndeclaredAnswerKeys(Exception):
    """A view built a body with keys its Answer does not declare, or in another order."""


# Answer's fields, bound once per thread: {serializer class: its bound fields}.
_bound_fields = threading.local()


class Answer(serializers.Serializer):
    """An answer body: the view renders it through this class, the OpenAPI schema names it.

    A body (a dict) may leave out fields that are not required; a key it holds that the class
    does not declare, or keys out of the declared order, would make the bytes sent differ from
    the body and the schema: that is a mistake in the code, raised so that any test of the view
    fails on it.
    """

    @property
    def fields(self) -> Any:  # DRF's BindingDict of bound fields, as Serializer.fields
        """The bound fields, built once per class and thread instead of once per answer.

        DRF deep-copies and binds every declared field for each serializer instance, which
        costs a busy fetch route a good share of its time. An answer only renders: its fields
        keep no state between bodies and read no context, so each thread reuses its own set.
        """
        per_class: dict[type, Any] | None = getattr(_bound_fields, "by_class", None)
        if per_class is None:
            per_class = _bound_fields.by_class = {}
        found = per_class.get(type(self))
        if found is None:
            found = per_class[type(self)] = super().fields
        return found

    def to_representation(self, instance: Any) -> dict[str, Any]:
        if isinstance(instance, Mapping):
            declared = [name for name in self.fields if name in instance]
            if list(instance) != declared:
                raise UndeclaredAnswerKeys(
                    f"{type(self).__name__} declares {list(self.fields)}; the body holds "
                    f"{list(instance)}"
                )
        representation: dict[str, Any] = super().to_representation(instance)
        return representation


class Number(serializers.FloatField):
    """A number rendered exactly as the body holds it: an integer stays an integer (7, not 7.0)."""

    def to_representation(self, value: Any) -> Any:
        return value


# ModelsLab's switches; not an enum in the schema, where other "yes"/"no" sets already are.
YES_NO = '"yes" or "no"'


class ModelsLabMeta(Answer):
    """The parameters the job ran with; the optional ones only where the job used them."""

    prompt = serializers.CharField()
    negative_prompt = serializers.CharField()
    model_id = serializers.CharField()
    seed = serializers.IntegerField(help_text="The first image's seed")
    seeds = serializers.ListField(child=serializers.IntegerField(), help_text="One per image")
    W = serializers.IntegerField(help_text="The output width, after any upscale")  # noqa: N815
    H = serializers.IntegerField(help_text="The output height, after any upscale")  # noqa: N815
    steps = serializers.IntegerField()
    guidance_scale = Number()
    scheduler = serializers.CharField()
    use_karras_sigmas = serializers.CharField(help_text=YES_NO)
    algorithm_type = serializers.CharField()
    clip_skip = serializers.IntegerField()
    safety_checker = serializers.CharField(help_text=YES_NO)
    safety_checker_type = serializers.CharField()
    n_samples = serializers.IntegerField()
    credits = serializers.IntegerField(help_text="What the job cost")
    strength = Number(required=False, help_text="img2img and inpaint")
    lora_model = serializers.CharField(required=False, help_text="A comma list")
    lora_strength = serializers.CharField(required=False, help_text="A comma list")
    embeddings_model = serializers.CharField(required=False, help_text="A comma list")
    vae = serializers.CharField(required=False)
    self_attention = serializers.CharField(required=False, help_text="yes: PAG was on")
    panorama = serializers.CharField(required=False, help_text="yes: a panorama")
    ip_adapter_id = serializers.CharField(required=False)
    ip_adapter_scale = Number(required=False)
    controlnet_model = serializers.CharField(required=False, help_text="A comma list")
    controlnet_type = serializers.CharField(required=False, help_text="A comma list")
    controlnet_conditioning_scale = Number(required=False, help_text="The first ControlNet's")
    control_guidance_start = Number(required=False)
    control_guidance_end = Number(required=False)
    guess_mode = serializers.CharField(required=False, help_text=YES_NO)
    controlnet_units = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="The ControlNets after the first: model, type, scale, start, end",
    )
    scale = serializers.IntegerField(required=False, help_text="Super resolution's factor")
    tomesd = serializers.CharField(help_text=YES_NO)
    enhance_prompt = serializers.CharField(help_text=YES_NO)
    upscale = serializers.IntegerField(help_text="The hires fix's factor (1: none)")


class ModelsLabJob(Answer):
    """A job in any state: success (outputs), processing (where to poll) or failed."""

    # Fields in the order every state's body writes them; a state leaves out what it lacks.
    status = serializers.ChoiceField(choices=["success", "processing", "failed"])
    generationTime = Number(required=False, help_text="Seconds, on success")  # noqa: N815
    id = serializers.IntegerField()
    track_id = serializers.CharField(required=False)
    eta = Number(required=False, help_text="Seconds, while processing")
    progress = serializers.FloatField(required=False, help_text="0 to 1, while processing")
    preview = serializers.CharField(
        required=False, help_text="A small base64 PNG of the running job's image, when ready"
    )
    message = serializers.CharField(required=False)
    tip = serializers.CharField(required=False)
    fetch_result = serializers.URLField(required=False)
    future_links = serializers.ListField(child=serializers.URLField(), required=False)
    output = serializers.ListField(
        child=serializers.CharField(), help_text="Absolute URLs, or base64 images with base64"
    )
    proxy_links = serializers.ListField(child=serializers.CharField(), required=False)
    nsfw_content_detected = serializers.ListField(child=serializers.BooleanField(), required=False)
    meta = ModelsLabMeta(required=False)


def job_answer(
    job: Job, base_url: str, fetch_url_name: str = "api-v3-fetch", preview: bool = False
) -> dict[str, Any]:
    """The ModelsLab answer for a job in any state (also the webhook payload)."""
    return dict(ModelsLabJob(job_body(job, base_url, fetch_url_name, preview)).data)
