"""The AUTOMATIC1111 format's other routes: extras (upscale), png-info, server facts, no-ops.

    POST /sdapi/v1/extra-single-image, /sdapi/v1/extra-batch-images   upscale, answer base64
    POST /sdapi/v1/png-info               the `parameters` text of an image, parsed
    GET  /sdapi/v1/cmd-flags, /sdapi/v1/memory
    POST /sdapi/v1/refresh-checkpoints, refresh-vae, refresh-loras, unload-checkpoint,
         reload-checkpoint                webui's answers; nothing to do here (see each view)

Extras: "None" leaves the image as it is, "Lanczos" and "Nearest" resize it with PIL in the
request (free), and an upscaler model (GET /upscalers) runs as a super-resolution job, charged
and waited for like txt2img (one job per image). The result has the size asked for exactly
(webui rounds it down to a multiple of 8).
"""

from __future__ import annotations

import base64
import html
import importlib
import io
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.http import HttpResponse
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from generation import answers, jobs, submission
from generation.api.a1111.answers import (
    GENERATION_ERRORS,
    DetailAnswer,
    EmptyAnswer,
    ErrorAnswer,
    ValidationAnswer,
)
from generation.api.a1111.errors import A1111View, Unprocessable
from generation.api.a1111.listings import NO_UPSCALER, PIL_UPSCALERS, upscaler_models
from generation.api.a1111.serializers import read_body
from generation.api.a1111.tables import MAX_N_ITER, TAG
from generation.api.base import MAX_IMAGE_FIELD, FiniteFloatField
from generation.models import AIModel, Job

if TYPE_CHECKING:
    from accounts.requests import KeyRequest

log = logging.getLogger(__name__)

# The most images one extra-batch-images request takes (webui sets no limit; the body does).
MAX_BATCH_IMAGES = 8
# An upscaler model runs once: at most its own factor (webui chains up to three passes).
MAX_MODEL_FACTOR = 4
PIL_FILTERS = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
# Text chunks of an image that png-info leaves out of `items`, as webui does.
IGNORED_INFO = {
    "jfif",
    "jfif_version",
    "jfif_unit",
    "jfif_density",
    "dpi",
    "exif",
    "loop",
    "background",
    "timestamp",
    "duration",
    "progressive",
    "progression",
    "icc_profile",
    "chromaticity",
    "photoshop",
}
# An infotext's last line: "Key: value, Key: "quoted, value", ..." (keys may hold spaces, - and /).
INFOTEXT_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
# What webui's parser fills in for a key the infotext leaves out (its defaults).
INFOTEXT_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
}
EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286


def null_response() -> HttpResponse:
    """FastAPI's answer for an endpoint that returns nothing: JSON `null`."""
    return HttpResponse(b"null", content_type="application/json")


# --- png-info ------------------------------------------------------------------------------


def parse_infotext(text: str) -> dict[str, Any]:
    """webui's parsed infotext: Prompt, Negative prompt, each "Key: value", its defaults."""
    *lines, last = text.strip().split("\n")
    if len(INFOTEXT_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    for line in (line.strip() for line in lines):
        if line.startswith("Negative prompt:"):
            negative.append(line.removeprefix("Negative prompt:").strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    parsed: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in INFOTEXT_PARAM.findall(last):
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass  # webui keeps a value it cannot unquote as it is
        size = IMAGE_SIZE.match(str(value))
        if size:
            parsed[f"{key}-1"], parsed[f"{key}-2"] = size.groups()
        else:
            parsed[key] = value
    return {**INFOTEXT_DEFAULTS, **parsed}


def exif_comment(image: Image.Image) -> str | None:
    """The EXIF UserComment webui writes into JPEG and WebP images, as text."""
    raw = image.info.get("exif")
    if not isinstance(raw, bytes):
        return None
    exif = Image.Exif()
    try:
        exif.load(raw)
        comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    except (OSError, ValueError, SyntaxError):
        return None
    if not isinstance(comment, bytes) or len(comment) < 8:
        return comment if isinstance(comment, str) else None
    # The first 8 bytes name the encoding; webui (piexif) writes UNICODE as UTF-16 big-endian.
    prefix, body = comment[:8], comment[8:]
    encoding = "utf-16-be" if prefix.startswith(b"UNICODE") else "utf-8"
    return body.decode(encoding, errors="replace").rstrip("\x00")


def image_info(image: Image.Image) -> tuple[str, dict[str, str]]:
    """(the `parameters` text, the image's other text chunks) of a decoded image."""
    items = {
        str(k): v
        for k, v in image.info.items()
        if isinstance(v, str) and str(k) not in IGNORED_INFO
    }
    text = items.pop("parameters", None)
    if text is None:
        text = exif_comment(image)
    return text or "", items


# --- extras: upscale -----------------------------------------------------------------------


class FileData(serializers.Serializer):
    """One image of extra-batch-images' `imageList`."""

    # Declared here: a field named `data` cannot be a class attribute (Serializer.data).
    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "data": serializers.CharField(max_length=MAX_IMAGE_FIELD),
            "name": serializers.CharField(
                max_length=255, allow_blank=True, required=False, default=""
            ),
        }


class ExtrasBody(serializers.Serializer):
    """webui's extras settings; only the upscale is offered (face restoration is not)."""

    resize_mode = serializers.ChoiceField(
        choices=[0, 1], default=0, help_text="0: by upscaling_resize; 1: to w × h"
    )
    show_extras_results = serializers.BooleanField(default=True)
    gfpgan_visibility = FiniteFloatField(min_value=0, max_value=1, default=0)
    codeformer_visibility = FiniteFloatField(min_value=0, max_value=1, default=0)
    codeformer_weight = FiniteFloatField(min_value=0, max_value=1, default=0)
    upscaling_resize = FiniteFloatField(
        min_value=0, max_value=submission.MAX_UPSCALE_SIDE, default=2
    )
    upscaling_resize_w = serializers.IntegerField(
        min_value=1, max_value=submission.MAX_UPSCALE_SIDE, default=512
    )
    upscaling_resize_h = serializers.IntegerField(
        min_value=1, max_value=submission.MAX_UPSCALE_SIDE, default=512
    )
    upscaling_crop = serializers.BooleanField(default=True)
    upscaler_1 = serializers.CharField(max_length=200, default=NO_UPSCALER)
    upscaler_2 = serializers.CharField(max_length=200, default=NO_UPSCALER)
    extras_upscaler_2_visibility = FiniteFloatField(min_value=0, max_value=1, default=0)
    upscale_first = serializers.BooleanField(default=False)

    def validate_upscaling_resize(self, value: float) -> float:
        if value <= 0:
            raise ValidationError("Ensure this value is greater than 0.")
        return value


class ExtraSingleImageBody(ExtrasBody):
    image = serializers.CharField(
        max_length=MAX_IMAGE_FIELD, help_text="Base64 (or a data: or http(s) URL)"
    )


class ExtraBatchImagesBody(ExtrasBody):
    imageList = serializers.ListField(  # noqa: N815  # webui's name
        child=FileData(), max_length=MAX_BATCH_IMAGES
    )


@dataclass(frozen=True)
class Upscale:
    """One extras request's upscale: which upscaler, and how to size each image."""

    upscaler: str  # "None", a PIL filter, or an upscaler model's id
    model: AIModel | None
    values: dict[str, Any]

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """The upscaled size before any crop (mode 1 covers w × h, the aspect kept)."""
        if self.values["resize_mode"] == 1:
            factor = max(
                self.values["upscaling_resize_w"] / width,
                self.values["upscaling_resize_h"] / height,
            )
        else:
            factor = self.values["upscaling_resize"]
        return max(1, round(width * factor)), max(1, round(height * factor))

    @property
    def crop(self) -> tuple[int, int] | None:
        """The final w × h when mode 1 crops to fit, else None."""
        if self.values["resize_mode"] == 1 and self.values["upscaling_crop"]:
            return self.values["upscaling_resize_w"], self.values["upscaling_resize_h"]
        return None

    @property
    def size_field(self) -> str:
        return "upscaling_resize" if self.values["resize_mode"] == 0 else "upscaling_resize_w"

    def model_factor(self, image: Image.Image) -> int:
        """The whole factor the upscaler model runs at for `image` (0: it is not needed)."""
        width, height = self.size_for(*image.size)
        needed = max(width / image.width, height / image.height)
        return 0 if needed <= 1 else math.ceil(needed - 1e-9)

    def check(self, image: Image.Image, field: str) -> None:
        """A 400 naming the field when the result (or the model's pass) would be too large."""
        limit = submission.MAX_UPSCALE_SIDE
        width, height = self.size_for(*image.size)
        if max(width, height) > limit:
            raise ValidationError(
                {
                    self.size_field: [
                        f"The image is {image.width}x{image.height}; upscaled it would be "
                        f"{width}x{height}, and a side may be at most {limit} px."
                    ]
                }
            )
        factor = self.model_factor(image) if self.model is not None else 0
        if not factor:
            return
        if factor > MAX_MODEL_FACTOR:
            raise ValidationError(
                {
                    self.size_field: [
                        f"{self.upscaler} upscales at most {MAX_MODEL_FACTOR}x; this asks for "
                        f"{max(width / image.width, height / image.height):.3g}x."
                    ]
                }
            )
        if min(image.size) < submission.MIN_UPSCALE_INPUT:
            raise ValidationError(
                {
                    field: [
                        f"The image is {image.width}x{image.height}; {self.upscaler} needs "
                        f"sides of at least {submission.MIN_UPSCALE_INPUT} px."
                    ]
                }
            )
        if max(image.size) * factor > limit:
            raise ValidationError(
                {
                    self.size_field: [
                        f"The image is {image.width}x{image.height}; {self.upscaler} runs at "
                        f"{factor}x, and a side may be at most {limit} px."
                    ]
                }
            )

    def fitted(self, upscaled: Image.Image, size: tuple[int, int]) -> Image.Image:
        """`upscaled` resized to the exact `size` (its filter, else Lanczos), cropped if asked."""
        if upscaled.size != size:
            resample = PIL_FILTERS.get(self.upscaler, Image.Resampling.LANCZOS)
            upscaled = upscaled.resize(size, resample)
        crop = self.crop
        if crop is None or upscaled.size == crop:
            return upscaled
        left = (upscaled.width - crop[0]) // 2
        top = (upscaled.height - crop[1]) // 2
        return upscaled.crop((left, top, left + crop[0], top + crop[1]))

    def infotext(self) -> str:
        """webui's postprocessing infotext for this upscale."""
        if self.upscaler == NO_UPSCALER:
            return ""
        if self.values["resize_mode"] == 1:
            w, h = self.values["upscaling_resize_w"], self.values["upscaling_resize_h"]
            parts = [f"Postprocess upscale to: {w}x{h}"]
            if self.crop:
                parts.append(f"Postprocess crop to: {w}x{h}")
        else:
            parts = [f"Postprocess upscale by: {self.values['upscaling_resize']:g}"]
        parts.append(f"Postprocess upscaler: {self.upscaler}")
        return ", ".join(parts)


def read_extras(request: KeyRequest, body_class: type[ExtrasBody]) -> Upscale:
    """The extras body checked (422 for invalid values, 400 for what is not offered)."""
    body = read_body(request.data)
    serializer = body_class(data=body)
    if not serializer.is_valid():
        raise Unprocessable(serializer.errors)
    values = dict(serializer.validated_data)
    for name in ("gfpgan_visibility", "codeformer_visibility"):
        if values[name] > 0:
            raise ValidationError(
                {name: [f"Face restoration is not offered by this server (got {values[name]:g})."]}
            )
    if values["upscaler_2"] != NO_UPSCALER and values["extras_upscaler_2_visibility"] > 0:
        raise ValidationError(
            {"upscaler_2": ["A second upscaler is not offered by this server; use upscaler_1."]}
        )
    name = values["upscaler_1"].strip()
    models = {m.model_id: m for m in upscaler_models(request.user.organization)}
    known = [NO_UPSCALER, *PIL_UPSCALERS, *models]
    chosen = next((k for k in known if k == name), None) or next(
        (k for k in known if k.lower() == name.lower()), None
    )
    if chosen is None:
        raise Unprocessable(
            {"upscaler_1": [f"Unknown upscaler {name!r}; choose one of: {', '.join(known)}."]}
        )
    return Upscale(chosen, models.get(chosen), values)


def encode(image: Image.Image, source: Image.Image, infotext: str) -> str:
    """The result as base64 PNG, keeping the source's `parameters` and adding webui's note."""
    info = PngInfo()
    parameters, _items = image_info(source)
    if parameters:
        info.add_text("parameters", parameters)
    if infotext:
        info.add_text("postprocessing", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


@contextmanager
def all_or_none(queued: list[Job]) -> Iterator[None]:
    """On any error, call off every job of this request: none is charged, none is kept."""
    try:
        yield
    except BaseException:
        for job in queued:
            try:
                jobs.call_off(job)
            except Exception:
                # The error being answered matters more; the retention run deletes the rest.
                log.exception("could not call off job %s of a failed extras request", job.pk)
        raise


def model_result(job: Job) -> Image.Image:
    """A finished upscale job's image."""
    ((_row, data),) = answers.output_files(job)
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def upscale_all(
    request: KeyRequest, upscale: Upscale, images: list[tuple[str, Image.Image]]
) -> list[Image.Image]:
    """Each (field, image) upscaled: PIL here; a model's jobs queued together, then waited for."""
    if upscale.upscaler == NO_UPSCALER:
        return [image for _field, image in images]
    for field, image in images:
        upscale.check(image, field)
    if upscale.model is None:
        return [upscale.fitted(image, upscale.size_for(*image.size)) for _field, image in images]
    queued: list[Job | None] = []
    started: list[Job] = []
    with all_or_none(started):
        for part, (_field, image) in enumerate(images):
            factor = upscale.model_factor(image)
            job = (
                submission.queue_upscale(request, upscale.model, image, factor, part=part)
                if factor
                else None
            )
            queued.append(job)
            if job is not None:
                started.append(job)
        # One wait for the whole request, as webui upscales the batch in one call.
        deadline = time.monotonic() + submission.blocking_wait(request)
        results = []
        for job, (_field, image) in zip(queued, images, strict=True):
            size = upscale.size_for(*image.size)
            if job is None:
                results.append(upscale.fitted(image, size))
                continue
            left = max(0.0, deadline - time.monotonic())
            done = submission.wait_until_done(job, seconds=left)
            results.append(upscale.fitted(model_result(done), size))
    return results


EXTRAS_FIELDS: dict[str, serializers.Field] = {
    "resize_mode": serializers.IntegerField(),
    "show_extras_results": serializers.BooleanField(),
    "gfpgan_visibility": FiniteFloatField(),
    "codeformer_visibility": FiniteFloatField(),
    "codeformer_weight": FiniteFloatField(),
    "upscaling_resize": FiniteFloatField(),
    "upscaling_resize_w": serializers.IntegerField(),
    "upscaling_resize_h": serializers.IntegerField(),
    "upscaling_crop": serializers.BooleanField(),
    "upscaler_1": serializers.CharField(help_text="A name from GET /sdapi/v1/upscalers"),
    "upscaler_2": serializers.CharField(),
    "extras_upscaler_2_visibility": FiniteFloatField(),
    "upscale_first": serializers.BooleanField(),
}


@extend_schema_serializer(component_name="A1111ExtraSingleImageAnswer")
class ExtraSingleImageAnswer(answers.Answer):
    """The upscaled image, unless show_extras_results is false, and what was done to it."""

    html_info = serializers.CharField()
    image = serializers.CharField(allow_null=True, help_text="Base64 PNG")


@extend_schema_serializer(component_name="A1111ExtraBatchImagesAnswer")
class ExtraBatchImagesAnswer(answers.Answer):
    """The upscaled images, unless show_extras_results is false, and what was done to them."""

    html_info = serializers.CharField()
    images = serializers.ListField(child=serializers.CharField(), help_text="Base64 PNGs")


@extend_schema_serializer(component_name="A1111PngInfoAnswer")
class PngInfoAnswer(answers.Answer):
    """An image's generation parameters, as text and parsed."""

    info = serializers.CharField(help_text="The `parameters` text")
    items = serializers.DictField(help_text="The image's other text chunks")
    parameters = serializers.DictField(help_text="`info` parsed, as webui")


@extend_schema_serializer(component_name="A1111Memory")
class MemoryAnswer(answers.Answer):
    """This web process's RAM, and its GPU memory if it uses a GPU."""

    ram = serializers.DictField(help_text="free, used, total (bytes)")
    cuda = serializers.DictField(help_text='GPU memory, or {"error": ...}')


class ExtraSingleImageView(A1111View):
    """POST /sdapi/v1/extra-single-image: one image upscaled."""

    @extend_schema(
        tags=[TAG],
        summary="Upscale an image (an upscaler model waits for its job)",
        request=inline_serializer(
            "A1111ExtraSingleImage",
            {**EXTRAS_FIELDS, "image": serializers.CharField(help_text="Base64 image")},
        ),
        responses={
            200: ExtraSingleImageAnswer,
            **GENERATION_ERRORS,
        },
    )
    def post(self, request: KeyRequest) -> Response:
        upscale = read_extras(request, ExtraSingleImageBody)
        inputs = submission.Inputs(request.user.organization.pk)
        source = inputs.load("image", upscale.values["image"])
        (result,) = upscale_all(request, upscale, [("image", source)])
        infotext = upscale.infotext()
        return Response(
            ExtraSingleImageAnswer(
                {
                    "html_info": f"<p>{html.escape(infotext)}</p>",
                    "image": encode(result, source, infotext)
                    if upscale.values["show_extras_results"]
                    else None,
                }
            ).data
        )


class ExtraBatchImagesView(A1111View):
    """POST /sdapi/v1/extra-batch-images: each image of imageList upscaled alike."""

    @extend_schema(
        tags=[TAG],
        summary="Upscale several images (an upscaler model: one job per image)",
        request=inline_serializer(
            "A1111ExtraBatchImages",
            {
                **EXTRAS_FIELDS,
                "imageList": inline_serializer(
                    "A1111FileData",
                    {"data": serializers.CharField(), "name": serializers.CharField()},
                    many=True,
                ),
            },
        ),
        responses={
            200: ExtraBatchImagesAnswer,
            **GENERATION_ERRORS,
        },
    )
    def post(self, request: KeyRequest) -> Response:
        upscale = read_extras(request, ExtraBatchImagesBody)
        inputs = submission.Inputs(request.user.organization.pk)
        sources = [
            (f"imageList.{n}.data", inputs.load(f"imageList.{n}.data", item["data"]))
            for n, item in enumerate(upscale.values["imageList"])
        ]
        results = upscale_all(request, upscale, sources)
        infotext = upscale.infotext()
        images = [
            encode(result, source, infotext)
            for result, (_field, source) in zip(results, sources, strict=True)
        ]
        return Response(
            ExtraBatchImagesAnswer(
                {
                    "html_info": f"<p>{html.escape(infotext)}</p>",
                    "images": images if upscale.values["show_extras_results"] else [],
                }
            ).data
        )


class PngInfoView(A1111View):
    """POST /sdapi/v1/png-info: an image's generation parameters, as text and parsed."""

    @extend_schema(
        tags=[TAG],
        summary="Read the generation parameters written into an image",
        request=inline_serializer(
            "A1111PngInfo", {"image": serializers.CharField(help_text="Base64 image")}
        ),
        responses={
            200: PngInfoAnswer,
            400: ErrorAnswer,
            401: DetailAnswer,
            422: ValidationAnswer,
        },
    )
    def post(self, request: KeyRequest) -> Response:
        body = read_body(request.data)
        value = body.get("image")
        if not isinstance(value, str):
            raise Unprocessable({"image": ["A base64 image is required."]})
        if len(value) > MAX_IMAGE_FIELD:
            raise Unprocessable({"image": [f"At most {MAX_IMAGE_FIELD} characters."]})
        image = submission.Inputs(request.user.organization.pk).load("image", value)
        text, items = image_info(image)
        return Response(
            PngInfoAnswer({"info": text, "items": items, "parameters": parse_infotext(text)}).data
        )


# --- server facts --------------------------------------------------------------------------


def cuda_in_use() -> Any:
    """torch, when this process has imported it and sees a GPU; else None."""
    torch = sys.modules.get("torch")
    try:
        return torch if torch is not None and torch.cuda.is_available() else None
    except RuntimeError:
        return None


def cmd_flags() -> dict[str, Any]:
    """webui's launch flags that clients read, set as Pictor behaves."""
    on_gpu = cuda_in_use() is not None
    return {
        "api": True,
        "nowebui": True,
        # Never the credentials: each key is its own.
        "api_auth": None,
        "api_log": False,
        "api_server_stop": False,
        "listen": True,
        "port": None,
        "server_name": None,
        "subpath": None,
        "share": False,
        "gradio_auth": None,
        "cors_allow_origins": None,
        "cors_allow_origins_regex": None,
        "tls_keyfile": None,
        "tls_certfile": None,
        # Models are registered, not found in folders; their paths are not the client's.
        "data_dir": None,
        "models_dir": None,
        "ckpt_dir": None,
        "vae_dir": None,
        "lora_dir": None,
        "embeddings_dir": None,
        "hypernetwork_dir": None,
        "hide_ui_dir_config": True,
        # Only the key's checkpoint can be set (POST /options).
        "freeze_settings": True,
        "enable_insecure_extension_access": False,
        "disable_safe_unpickle": False,
        # A model's hash is that of its id; no weights are hashed.
        "no_hashing": True,
        "no_download_sd_model": True,
        "ui_debug_mode": False,
        "max_batch_count": MAX_N_ITER,
        # Workers run fp16 with PyTorch's scaled dot product attention on a GPU, fp32 on a CPU.
        "no_half": not on_gpu,
        "no_half_vae": not on_gpu,
        "precision": "autocast" if on_gpu else "full",
        "upcast_sampling": False,
        "opt_sdp_attention": True,
        "xformers": False,
        "medvram": False,
        "lowvram": False,
        "lowram": False,
        "use_cpu": [] if on_gpu else ["all"],
        "device_id": None,
        "skip_torch_cuda_test": not on_gpu,
        "skip_version_check": True,
    }


def ram_figures() -> dict[str, Any]:
    """This process's resident memory and the machine's total, in bytes (webui's `ram`)."""
    try:
        try:
            # Not a dependency of Pictor's own: used where installed, else /proc is read.
            psutil: Any = importlib.import_module("psutil")
        except ImportError:
            psutil = None
        if psutil is not None:
            used = psutil.Process(os.getpid()).memory_info().rss
            total = psutil.virtual_memory().total
        else:
            used = proc_kib("/proc/self/status", "VmRSS") * 1024
            total = proc_kib("/proc/meminfo", "MemTotal") * 1024
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}
    return {"free": total - used, "used": used, "total": total}


def proc_kib(path: str, key: str) -> int:
    """A "Key:   123 kB" line of a /proc file, in KiB."""
    with open(path) as lines:
        for line in lines:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    raise ValueError(f"{key} is not in {path}")


def cuda_figures() -> dict[str, Any]:
    """webui's `cuda`: this process's GPU memory, or why there is none to report."""
    torch = cuda_in_use()
    if torch is None:
        return {"error": "unavailable"}
    try:
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
    except RuntimeError as exc:
        return {"error": str(exc)}

    def pair(name: str) -> dict[str, int]:
        return {
            "current": stats.get(f"{name}.all.current", 0),
            "peak": stats.get(f"{name}.all.peak", 0),
        }

    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": pair("active_bytes"),
        "allocated": pair("allocated_bytes"),
        "reserved": pair("reserved_bytes"),
        "inactive": pair("inactive_split_bytes"),
        "events": {
            "retries": stats.get("num_alloc_retries", 0),
            "oom": stats.get("num_ooms", 0),
        },
    }


@extend_schema_serializer(component_name="A1111CmdFlags")
class CmdFlagsAnswer(answers.Answer):
    """webui's launch flags that clients read, set as Pictor behaves."""

    api = serializers.BooleanField()
    nowebui = serializers.BooleanField()
    api_auth = serializers.CharField(allow_null=True)
    api_log = serializers.BooleanField()
    api_server_stop = serializers.BooleanField()
    listen = serializers.BooleanField()
    port = serializers.IntegerField(allow_null=True)
    server_name = serializers.CharField(allow_null=True)
    subpath = serializers.CharField(allow_null=True)
    share = serializers.BooleanField()
    gradio_auth = serializers.CharField(allow_null=True)
    cors_allow_origins = serializers.CharField(allow_null=True)
    cors_allow_origins_regex = serializers.CharField(allow_null=True)
    tls_keyfile = serializers.CharField(allow_null=True)
    tls_certfile = serializers.CharField(allow_null=True)
    data_dir = serializers.CharField(allow_null=True)
    models_dir = serializers.CharField(allow_null=True)
    ckpt_dir = serializers.CharField(allow_null=True)
    vae_dir = serializers.CharField(allow_null=True)
    lora_dir = serializers.CharField(allow_null=True)
    embeddings_dir = serializers.CharField(allow_null=True)
    hypernetwork_dir = serializers.CharField(allow_null=True)
    hide_ui_dir_config = serializers.BooleanField()
    freeze_settings = serializers.BooleanField()
    enable_insecure_extension_access = serializers.BooleanField()
    disable_safe_unpickle = serializers.BooleanField()
    no_hashing = serializers.BooleanField()
    no_download_sd_model = serializers.BooleanField()
    ui_debug_mode = serializers.BooleanField()
    max_batch_count = serializers.IntegerField()
    no_half = serializers.BooleanField()
    no_half_vae = serializers.BooleanField()
    precision = serializers.CharField(help_text='"autocast" on a GPU, "full" on a CPU')
    upcast_sampling = serializers.BooleanField()
    opt_sdp_attention = serializers.BooleanField()
    xformers = serializers.BooleanField()
    medvram = serializers.BooleanField()
    lowvram = serializers.BooleanField()
    lowram = serializers.BooleanField()
    use_cpu = serializers.ListField(child=serializers.CharField())
    device_id = serializers.CharField(allow_null=True)
    skip_torch_cuda_test = serializers.BooleanField()
    skip_version_check = serializers.BooleanField()


class CmdFlagsView(A1111View):
    """GET /sdapi/v1/cmd-flags: webui's launch flags, as this server behaves."""

    @extend_schema(
        tags=[TAG],
        summary="Launch flags (as this server behaves)",
        request=None,
        responses={200: CmdFlagsAnswer, 401: DetailAnswer},
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(CmdFlagsAnswer(cmd_flags()).data)


class MemoryView(A1111View):
    """GET /sdapi/v1/memory: this web process's RAM, and its GPU memory if it uses a GPU."""

    @extend_schema(
        tags=[TAG],
        summary="Memory of this server process",
        request=None,
        responses={
            200: MemoryAnswer,
            401: DetailAnswer,
        },
    )
    def get(self, request: KeyRequest) -> Response:
        return Response(MemoryAnswer({"ram": ram_figures(), "cuda": cuda_figures()}).data)


NULL_ANSWER = {200: OpenApiResponse(description="The body is JSON null."), 401: DetailAnswer}
EMPTY_ANSWER = {
    200: OpenApiResponse(EmptyAnswer, description="An empty JSON object."),
    401: DetailAnswer,
}


class RefreshView(A1111View):
    """POST refresh-checkpoints, refresh-vae, refresh-loras: nothing is cached to refresh.

    Every list reads the model registry (the AIModel table) when it is asked, so a model
    registered a moment ago is already listed; webui's answer, null, says the lists are fresh.
    """

    @extend_schema(
        tags=[TAG],
        summary="Refresh a model list (always fresh)",
        request=None,
        responses=NULL_ANSWER,
    )
    def post(self, request: KeyRequest) -> HttpResponse:
        return null_response()


class CheckpointMemoryView(A1111View):
    """POST unload-checkpoint, reload-checkpoint: webui's {} and nothing else.

    Workers share their loaded models among every tenant, and keep or evict them by use; one
    tenant's client must not unload what another's request is about to run.
    """

    @extend_schema(
        tags=[TAG],
        summary="Unload or reload the checkpoint (no effect: models are shared)",
        request=None,
        responses=EMPTY_ANSWER,
    )
    def post(self, request: KeyRequest) -> Response:
        return Response(EmptyAnswer({}).data)
