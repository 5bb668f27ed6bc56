"""Build the demo models (random weights, real architectures) and register them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from generation.models import AIModel

DEMO_MODELS = [
    # model id, family, description, builder in generation.engine.demo
    (
        "demo-sd15",
        AIModel.Family.SD15,
        "Tiny SD 1.5 architecture, random weights",
        "build_demo_sd15",
    ),
]


class Command(BaseCommand):
    help = "Build the demo models into PICTOR_MODELS_DIR (idempotent) and register them."

    def handle(self, *args: Any, **options: Any) -> None:
        from generation.engine import demo

        models_dir = settings.PICTOR_MODELS_DIR
        models_dir.mkdir(parents=True, exist_ok=True)
        for model_id, family, description, builder in DEMO_MODELS:
            target = models_dir / model_id
            self.stderr.write(f"{model_id}: building in {target} …")
            built = getattr(demo, builder)(str(target))
            self.stderr.write(f"{model_id}: {'built' if built else 'already there'}")
            AIModel.objects.update_or_create(
                model_id=model_id,
                defaults={
                    "name": model_id,
                    "family": family,
                    "path": model_id,
                    "description": description,
                },
            )
        if not AIModel.objects.filter(is_default=True).exists():
            AIModel.objects.filter(model_id="demo-sd15").update(is_default=True)
