"""IP-Adapter (image prompt) on a shared pipeline, for one job at a time.

A registered IP-Adapter is a folder in h94/IP-Adapter's layout: one `ip-adapter*.safetensors`
(or .bin) next to `image_encoder/`, or that weight file itself with `image_encoder/` beside it.
The image encoder is the heavy part (a CLIP ViT), so the model cache keeps it under the
adapter's id and the job hands it to its pipeline; the adapter's own layers are small and are
loaded into the shared UNet for the job, then taken out again, so the next job runs on the
UNet's original attention processors and gives the same pixels as if no adapter had been used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from generation.engine.request import ModelRef

# AIModel.Family.IP_ADAPTER (the engine does not import the app's models).
FAMILY = "ip_adapter"
IMAGE_ENCODER_FOLDER = "image_encoder"
WEIGHT_PREFIX = "ip-adapter"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def weight_file(ref: ModelRef) -> tuple[str, str]:
    """(folder, file name) of the adapter's weights: the file itself, or the one in its folder."""
    if os.path.isfile(ref.path):
        return os.path.dirname(ref.path), os.path.basename(ref.path)
    candidates = sorted(n for n in os.listdir(ref.path) if n.endswith(WEIGHT_SUFFIXES))
    named = [n for n in candidates if n.startswith(WEIGHT_PREFIX)]
    found = named or candidates
    if len(found) != 1:
        raise ValueError(
            f"{ref.model_id}: expected one {WEIGHT_PREFIX}*.safetensors file in {ref.path}"
        )
    return ref.path, found[0]


def image_encoder_path(ref: ModelRef) -> str:
    """The CLIP image encoder folder that comes with the adapter."""
    folder, _name = weight_file(ref)
    path = os.path.join(folder, IMAGE_ENCODER_FOLDER)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{ref.model_id}: no {IMAGE_ENCODER_FOLDER}/ folder next to its weights")
    return path


def load_image_encoder(ref: ModelRef, device: str, dtype: Any) -> Any:
    """The adapter's image encoder, loaded on device: what the model cache keeps for it."""
    # lazy: heavy, not loaded at Django start-up
    from transformers import CLIPVisionModelWithProjection

    # transformers 5 types from_pretrained through a decorator that mypy reads as taking a
    # model, not a path; the call is the documented one.
    cls: Any = CLIPVisionModelWithProjection
    encoder = cls.from_pretrained(image_encoder_path(ref), local_files_only=True, dtype=dtype)
    return encoder.to(device)


def components(image_encoder: Any) -> dict[str, Any]:
    """The pipeline components an IP-Adapter job adds: the encoder and its image processor.

    The processor is sized to the encoder, as diffusers builds one when a pipeline has none;
    a checkpoint's own feature extractor (for its safety checker) need not fit the encoder.
    """
    from transformers import CLIPImageProcessor  # lazy: heavy, not loaded at Django start-up

    size = image_encoder.config.image_size
    return {
        "image_encoder": image_encoder,
        "feature_extractor": CLIPImageProcessor(size=size, crop_size=size),
    }


@contextmanager
def applied(pipe: Any, ref: ModelRef | None, scale: float) -> Iterator[None]:
    """Load the adapter into pipe's UNet at `scale`; put the UNet back as it was afterwards.

    The pipe must already hold the image encoder (see `components`), so nothing but the
    adapter's small layers is read from disk.
    """
    if ref is None:
        yield
        return
    unet = pipe.unet
    # The UNet is shared with every later job: keep its very processor objects and projection.
    processors = dict(unet.attn_processors)
    hid_proj = unet.encoder_hid_proj
    hid_type = unet.config.encoder_hid_dim_type
    folder, name = weight_file(ref)
    try:
        # The load ends with a no-op cast of the UNet to its own dtype, about which diffusers
        # warns on every call (as for from_pipe in pipelines.py); the warning says nothing here.
        modeling_log = logging.getLogger("diffusers.models.modeling_utils")
        level = modeling_log.level
        modeling_log.setLevel(logging.ERROR)
        try:
            pipe.load_ip_adapter(
                folder,
                subfolder="",
                weight_name=name,
                image_encoder_folder=None,
                local_files_only=True,
            )
        finally:
            modeling_log.setLevel(level)
        pipe.set_ip_adapter_scale(scale)
        yield
    finally:
        pipe.unload_ip_adapter()
        # unload_ip_adapter installs new default processors (also after a load that failed
        # half way): put back the very ones the shared UNet had.
        unet.set_attn_processor(processors)
        unet.encoder_hid_proj = hid_proj
        # diffusers switches this config value (as an attribute) to route image embeddings.
        unet.config.encoder_hid_dim_type = hid_type
