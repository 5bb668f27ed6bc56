"""Build the demo models (random weights, real architectures) and register them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from generation.engine import demo, demo_addons, demo_ip_adapter, demo_refiner
from generation.models import AIModel

Family = AIModel.Family
Base = AIModel.Base

# model id, family, base, description, builder(target_dir) -> False if already built.
DEMO_MODELS: list[tuple[str, str, str, str, Callable[[str], bool]]] = [
    (
        "demo-sd15",
        Family.SD15,
        Base.SD15,
        "Tiny SD 1.5 architecture, random weights",
        demo.build_demo_sd15,
    ),
    (
        "demo-sd15-inpaint",
        Family.INPAINT,
        Base.SD15,
        "demo-sd15 with a 9-channel inpainting UNet",
        demo.build_demo_sd15_inpaint,
    ),
    (
        "demo-sdxl",
        Family.SDXL,
        Base.SDXL,
        "Tiny SDXL architecture (two text encoders), random weights",
        demo.build_demo_sdxl,
    ),
    (
        "demo-controlnet-canny",
        Family.CONTROLNET,
        Base.SD15,
        "ControlNet for demo-sd15, random weights",
        demo_addons.build_demo_controlnet_canny,
    ),
    (
        "demo-lora-a",
        Family.LORA,
        Base.SD15,
        "Rank-4 LoRA for demo-sd15 (UNet attention and text encoder)",
        demo_addons.build_demo_lora_a,
    ),
    (
        "demo-lora-b",
        Family.LORA,
        Base.SD15,
        "Another rank-4 LoRA for demo-sd15",
        demo_addons.build_demo_lora_b,
    ),
    (
        "demo-embedding",
        Family.EMBEDDING,
        Base.SD15,
        "Two-vector textual-inversion embedding for demo-sd15",
        demo_addons.build_demo_embedding,
    ),
    (
        "demo-vae",
        Family.VAE,
        Base.SD15,
        "VAE shaped like demo-sd15's, other random weights",
        demo_addons.build_demo_vae,
    ),
    (
        "demo-upscaler-x4",
        Family.UPSCALER,
        Base.SD15,
        "Tiny x4 super-resolution model, random weights",
        demo.build_demo_upscaler_x4,
    ),
    (
        "demo-sd15-lcm",
        Family.SD15,
        Base.SD15,
        "demo-sd15 registered as an LCM (few-step) checkpoint: 1 to 8 steps, LCMScheduler",
        demo.build_demo_sd15,
    ),
    (
        "demo-ip-adapter",
        Family.IP_ADAPTER,
        Base.SD15,
        "IP-Adapter (image prompt) for demo-sd15, with its CLIP image encoder",
        demo_ip_adapter.build_demo_ip_adapter,
    ),
    (
        "demo-sdxl-refiner",
        Family.REFINER,
        Base.SDXL,
        "Tiny SDXL refiner for demo-sdxl (its VAE and second text encoder), random weights",
        demo_refiner.build_demo_sdxl_refiner,
    ),
    (
        "demo-controlnet-tile",
        Family.CONTROLNET,
        Base.SD15,
        "Tile ControlNet for demo-sd15, random weights",
        demo_addons.build_demo_controlnet_tile,
    ),
    (
        "demo-controlnet-shuffle",
        Family.CONTROLNET,
        Base.SD15,
        "Shuffle ControlNet for demo-sd15, random weights",
        demo_addons.build_demo_controlnet_shuffle,
    ),
    (
        "demo-controlnet-inpaint",
        Family.CONTROLNET,
        Base.SD15,
        "Inpaint ControlNet for demo-sd15, random weights",
        demo_addons.build_demo_controlnet_inpaint,
    ),
]
DEFAULT_MODEL = "demo-sd15"
# Few-step checkpoints among the demo models (AIModel.distillation), set when registering.
DISTILLED = {"demo-sd15-lcm": AIModel.Distillation.LCM}


class Command(BaseCommand):
    help = "Build the demo models into PICTOR_MODELS_DIR (idempotent) and register them."

    def handle(self, *args: Any, **options: Any) -> None:
        models_dir = settings.PICTOR_MODELS_DIR
        models_dir.mkdir(parents=True, exist_ok=True)
        for model_id, family, base, description, build in DEMO_MODELS:
            target = models_dir / model_id
            self.stderr.write(f"{model_id}: building in {target} …")
            built = build(str(target))
            self.stderr.write(f"{model_id}: {'built' if built else 'already there'}")
            AIModel.objects.update_or_create(
                model_id=model_id,
                defaults={
                    "name": model_id,
                    "family": family,
                    "base": base,
                    "path": model_id,
                    "description": description,
                    "distillation": DISTILLED.get(model_id, AIModel.Distillation.NONE),
                },
            )
        if not AIModel.objects.filter(is_default=True).exists():
            AIModel.objects.filter(model_id=DEFAULT_MODEL).update(is_default=True)
