"""manage.py build_demo_models: every demo model built once, registered with its family and base."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from generation.models import AIModel

pytestmark = pytest.mark.django_db

EXPECTED = {
    # model id: (family, base, the file that shows the folder is complete)
    "demo-sd15": ("sd15", "sd15", "model_index.json"),
    "demo-sd15-inpaint": ("inpaint", "sd15", "model_index.json"),
    "demo-sdxl": ("sdxl", "sdxl", "model_index.json"),
    "demo-controlnet-canny": ("controlnet", "sd15", "diffusion_pytorch_model.safetensors"),
    "demo-lora-a": ("lora", "sd15", "pytorch_lora_weights.safetensors"),
    "demo-lora-b": ("lora", "sd15", "pytorch_lora_weights.safetensors"),
    "demo-embedding": ("embedding", "sd15", "learned_embeds.safetensors"),
    "demo-vae": ("vae", "sd15", "diffusion_pytorch_model.safetensors"),
    "demo-upscaler-x4": ("upscaler", "sd15", "model_index.json"),
    "demo-ip-adapter": ("ip_adapter", "sd15", "ip-adapter_sd15.safetensors"),
    "demo-sdxl-refiner": ("refiner", "sdxl", "model_index.json"),
    "demo-sd15-lcm": ("sd15", "sd15", "model_index.json"),
    "demo-controlnet-tile": ("controlnet", "sd15", "diffusion_pytorch_model.safetensors"),
    "demo-controlnet-shuffle": ("controlnet", "sd15", "diffusion_pytorch_model.safetensors"),
    "demo-controlnet-inpaint": ("controlnet", "sd15", "diffusion_pytorch_model.safetensors"),
}


def build(settings: Any, root: Path) -> str:
    """Run the command against models folder root; returns what it wrote to stderr."""
    settings.PICTOR_MODELS_DIR = root
    err = StringIO()
    call_command("build_demo_models", stdout=StringIO(), stderr=err)
    return err.getvalue()


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_it_builds_and_registers_every_demo_model(settings: Any, tmp_path: Path) -> None:
    root = tmp_path / "models"

    log = build(settings, root)

    assert sorted(p.name for p in root.iterdir()) == sorted(EXPECTED)  # no staging leftovers
    for model_id, (family, base, marker) in EXPECTED.items():
        assert f"{model_id}: built" in log
        assert (root / model_id / marker).is_file()
        model = AIModel.objects.get(model_id=model_id)
        assert (model.family, model.base, model.path) == (family, base, model_id)
    assert list(AIModel.objects.filter(is_default=True).values_list("model_id", flat=True)) == [
        "demo-sd15"
    ]


def test_a_second_run_changes_nothing(settings: Any, tmp_path: Path) -> None:
    root = tmp_path / "models"
    build(settings, root)
    before = snapshot(root)

    log = build(settings, root)

    assert snapshot(root) == before
    for model_id in EXPECTED:
        assert f"{model_id}: already there" in log
    assert AIModel.objects.filter(model_id__in=EXPECTED).count() == len(EXPECTED)


def test_it_keeps_a_default_chosen_by_an_admin(settings: Any, models_dir: Path) -> None:
    AIModel.objects.create(model_id="mine", name="mine", path="/elsewhere/mine", is_default=True)

    build(settings, models_dir)  # the session's models, already built

    assert AIModel.objects.get(is_default=True).model_id == "mine"
