"""What the AUTOMATIC1111 endpoints answer: images, the `parameters` echo, `info`, and more.

The success answers are serializers (ImagesAnswer, OptionsAnswer, ProgressAnswer, EmptyAnswer)
that the views render their bodies through and the OpenAPI schema names; the error shapes are
for the schema only (errors.py builds those bodies).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from drf_spectacular.utils import extend_schema_serializer, inline_serializer
from PIL import Image
from rest_framework import serializers

from generation import answers
from generation.answers import Answer, Number
from generation.api.a1111.checkpoints import short_hash
from generation.api.a1111.tables import (
    DEFAULT_CFG_SCALE,
    DEFAULT_IMG2IMG_STRENGTH,
    DEFAULT_SAMPLER,
    DEFAULT_SIDE,
    DEFAULT_STEPS,
)
from generation.engine.runner import MASK_BLUR
from generation.models import AIModel, Job

# Every field webui's request model has, with its default: the `parameters` echo starts here.
TXT2IMG_ECHO: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "styles": None,
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "sampler_name": None,
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": DEFAULT_STEPS,
    "cfg_scale": DEFAULT_CFG_SCALE,
    "width": DEFAULT_SIDE,
    "height": DEFAULT_SIDE,
    "restore_faces": None,
    "tiling": None,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "eta": None,
    "denoising_strength": None,
    "s_min_uncond": None,
    "s_churn": None,
    "s_tmax": None,
    "s_tmin": None,
    "s_noise": None,
    "override_settings": None,
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "disable_extra_networks": False,
    "firstpass_image": None,
    "comments": None,
    "enable_hr": False,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "hr_scale": 2.0,
    "hr_upscaler": None,
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": None,
    "hr_sampler_name": None,
    "hr_scheduler": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "force_task_id": None,
    "sampler_index": DEFAULT_SAMPLER,
    "script_name": None,
    "script_args": [],
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
    "infotext": None,
}
IMG2IMG_ECHO: dict[str, Any] = {
    **{k: v for k, v in TXT2IMG_ECHO.items() if not k.startswith(("hr_", "firstphase_"))},
    "enable_hr": None,
    "init_images": None,
    "resize_mode": 0,
    "image_cfg_scale": None,
    "mask": None,
    "mask_blur_x": MASK_BLUR,
    "mask_blur_y": MASK_BLUR,
    "mask_blur": None,
    "mask_round": True,
    "inpainting_fill": 0,
    "inpaint_full_res": True,
    "inpaint_full_res_padding": 0,
    "inpainting_mask_invert": 0,
    "initial_noise_multiplier": None,
    "latent_mask": None,
    "denoising_strength": DEFAULT_IMG2IMG_STRENGTH,
    "include_init_images": False,
}
del IMG2IMG_ECHO["enable_hr"]


def echo(body: dict[str, Any], values: dict[str, Any], sampler: str, kind: str) -> dict[str, Any]:
    """`parameters`: the request as webui echoes it, its defaults filled in."""
    sent = TXT2IMG_ECHO if kind == "txt2img" else IMG2IMG_ECHO
    parameters = {**sent, **{k: v for k, v in body.items() if k in sent}}
    parameters.update(steps=values["steps"], sampler_name=sampler, sampler_index=sampler)
    if kind == "img2img" and not values["include_init_images"]:
        parameters.update(init_images=None, mask=None)
    return parameters


def generation_info(
    job: Job,
    model: AIModel,
    values: dict[str, Any],
    sampler: str,
    outputs: list[tuple[int, str]],
) -> dict[str, Any]:
    """webui's `info` (a JSON string in the answer): seeds, settings and each image's infotext."""
    p = job.params
    count = max(len(outputs), 1)
    seeds = [seed for seed, _text in outputs] or [p["seed"]]
    # The subseed drawn at submit (image i used subseed + i when subseed_strength is above 0).
    subseed = p.get("subseed", 0)
    hires = p.get("hires_scale", 1) > 1
    denoising = (
        p["strength"]
        if job.kind in ("img2img", "inpaint", "controlnet-img2img", "controlnet-inpaint")
        else None
    )
    extra: dict[str, Any] = {}
    if values.get("scheduler"):
        extra["Schedule type"] = "Karras" if p["use_karras_sigmas"] else "Automatic"
    if hires:
        denoising = p["hires_strength"]
        extra["Hires upscale"] = p["hires_scale"]
        extra["Hires upscaler"] = values.get("hr_upscaler") or "Latent"
    if p.get("refiner"):
        extra["Refiner"] = p["refiner"]
        extra["Refiner switch at"] = p["refiner_switch_at"]
    return {
        "prompt": values["prompt"],
        "all_prompts": [values["prompt"]] * count,
        "negative_prompt": values["negative_prompt"],
        "all_negative_prompts": [values["negative_prompt"]] * count,
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": subseed,
        "all_subseeds": [subseed + i for i in range(count)],
        "subseed_strength": p.get("subseed_strength", 0),
        "width": p["width"],
        "height": p["height"],
        "sampler_name": sampler,
        "cfg_scale": p["guidance_scale"],
        "steps": p["steps"],
        "batch_size": values["batch_size"],
        "n_iter": values["n_iter"],
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model.model_id,
        "sd_model_hash": short_hash(model),
        "sd_vae_name": p.get("vae") or None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": denoising,
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": [text for _seed, text in outputs],
        "styles": [],
        "job_timestamp": job.created_at.strftime("%Y%m%d%H%M%S"),
        "clip_skip": p.get("clip_skip") or 1,
        "is_using_inpainting_conditioning": model.family == AIModel.Family.INPAINT,
        "version": "pictor",
    }


def read_outputs(job: Job) -> tuple[list[str], list[tuple[int, str]]]:
    """The job's PNGs as base64, and each one's (seed, PNG "parameters" text)."""
    images, facts = [], []
    for output, data in answers.output_files(job):
        images.append(base64.b64encode(data).decode())
        text = Image.open(io.BytesIO(data)).info.get("parameters", "")
        facts.append((output.seed, str(text)))
    return images, facts


@extend_schema_serializer(component_name="A1111Images")
class ImagesAnswer(Answer):
    """The generated images, the request as webui echoes it, and `info`."""

    images = serializers.ListField(child=serializers.CharField(), help_text="Base64 PNGs")
    parameters = serializers.DictField(help_text="The request, its defaults filled in")
    info = serializers.CharField(help_text="JSON text: seeds, settings, infotexts")


@extend_schema_serializer(component_name="A1111Options")
class OptionsAnswer(Answer):
    """The settings webui clients read; the checkpoint is this key's default."""

    sd_model_checkpoint = serializers.CharField(allow_null=True)
    sd_checkpoint_hash = serializers.CharField(allow_null=True)
    samples_format = serializers.CharField()
    sd_vae = serializers.CharField()
    CLIP_stop_at_last_layers = serializers.IntegerField()  # noqa: N815 (webui's name)
    enable_pnginfo = serializers.BooleanField()
    eta_ancestral = Number()
    eta_ddim = Number()


@extend_schema_serializer(component_name="A1111ProgressState")
class ProgressState(Answer):
    """webui's shared state, for the caller's current job."""

    skipped = serializers.BooleanField()
    interrupted = serializers.BooleanField()
    stopping_generation = serializers.BooleanField()
    job = serializers.CharField(help_text="The job's kind, or empty")
    job_count = serializers.IntegerField()
    job_timestamp = serializers.CharField()
    job_no = serializers.IntegerField()
    sampling_step = serializers.IntegerField()
    sampling_steps = serializers.IntegerField()


@extend_schema_serializer(component_name="A1111Progress")
class ProgressAnswer(Answer):
    """The caller's current job, as webui reports its own."""

    progress = Number(help_text="0 to 1")
    eta_relative = Number(help_text="Seconds")
    state = ProgressState()
    current_image = serializers.CharField(
        allow_null=True, help_text="The running job's live preview, base64 PNG, or null"
    )
    textinfo = serializers.CharField(allow_null=True)


@extend_schema_serializer(component_name="A1111Empty")
class EmptyAnswer(Answer):
    """An empty JSON object."""


# Error shapes, for the OpenAPI schema only.
ErrorAnswer = inline_serializer(
    "A1111Error",
    {
        "error": serializers.CharField(),
        "detail": serializers.CharField(),
        "body": serializers.CharField(),
        "errors": serializers.CharField(),
    },
)
DetailAnswer = inline_serializer("A1111Detail", {"detail": serializers.CharField()})
ValidationAnswer = inline_serializer(
    "A1111ValidationError",
    {
        "detail": serializers.ListField(
            child=inline_serializer(
                "A1111ValidationEntry",
                {
                    "loc": serializers.ListField(child=serializers.CharField()),
                    "msg": serializers.CharField(),
                    "type": serializers.CharField(),
                },
            )
        )
    },
)
ERRORS = {
    400: ErrorAnswer,
    401: DetailAnswer,
    402: ErrorAnswer,
    403: ErrorAnswer,
    404: DetailAnswer,
    422: ValidationAnswer,
    429: ErrorAnswer,
}
# A submit also answers 503 when the job queue is down.
GENERATION_ERRORS = {**ERRORS, 500: ErrorAnswer, 503: ErrorAnswer, 504: ErrorAnswer}
