"""A job's public answer: the ModelsLab body that fetches return, also the webhook payload.

It sits outside generation/api so the worker side (webhooks) builds it without importing a wire
format, and every format reads a job's images as base64 through the one `images_base64`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from django.core.files.storage import default_storage
from django.urls import reverse
from rest_framework.request import Request

from generation import estimates, media
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
    """Each of the job's rows with its PNG's bytes, in order (`outputs`: the rows, if read)."""
    rows = job.outputs.order_by("index") if outputs is None else outputs
    files = []
    for row in rows:
        with default_storage.open(row.path) as stored:
            files.append((row, stored.read()))
    return files


def images_base64(job: Job, outputs: Iterable[OutputImage] | None = None) -> list[str]:
    """The job's PNGs as base64 strings, in order (`outputs`: its rows, when already read)."""
    return [base64.b64encode(data).decode() for _row, data in output_files(job, outputs)]


def job_meta(job: Job) -> dict[str, Any]:
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
    if kind in ("img2img", "inpaint"):
        meta["strength"] = p["strength"]
    if p.get("loras"):
        meta["lora_model"] = ",".join(name for name, _weight in p["loras"])
        meta["lora_strength"] = ",".join(f"{weight:g}" for _name, weight in p["loras"])
    if p.get("embeddings"):
        meta["embeddings_model"] = ",".join(p["embeddings"])
    if p.get("vae"):
        meta["vae"] = p["vae"]
    if kind == "controlnet":
        meta.update(
            controlnet_model=p["controlnet_model"],
            controlnet_type=p["controlnet_type"],
            controlnet_conditioning_scale=p["controlnet_conditioning_scale"],
            control_guidance_start=p["control_guidance_start"],
            control_guidance_end=p["control_guidance_end"],
        )
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


def job_answer(job: Job, base_url: str, fetch_url_name: str = "api-v3-fetch") -> dict[str, Any]:
    """The ModelsLab body for a job in any state (also the webhook payload)."""
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
    return {
        "status": "processing",
        **base,
        "eta": estimates.eta(job),
        "progress": round(progress, 3),
        "message": "Try to fetch request after seconds estimated",
        "tip": "Poll fetch_result until status is success.",
        "fetch_result": absolute(base_url, reverse(fetch_url_name, args=[job.pk])),
        "future_links": output_links(base_url, job),
        "output": [],
        "meta": job_meta(job),
    }
