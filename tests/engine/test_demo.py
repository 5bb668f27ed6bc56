"""The demo models: built atomically, idempotently and reproducibly; each acts on the pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image
from safetensors.torch import load_file

from generation.engine import demo, demo_addons
from generation.engine.loader import load_pipeline
from generation.management.commands.build_demo_models import DEMO_MODELS
from tests.engine.pixels import mean_abs_diff, pixels


def test_it_builds_once_and_loads_through_the_loader(tmp_path: Path) -> None:
    target = tmp_path / "demo-sd15"

    assert demo.build_demo_sd15(str(target)) is True
    assert demo.build_demo_sd15(str(target)) is False

    assert [p.name for p in tmp_path.iterdir()] == ["demo-sd15"]  # no staging leftovers
    assert sorted(p.parent.name for p in target.rglob("*.safetensors")) == [
        "text_encoder",
        "unet",
        "vae",
    ]
    assert not list(target.rglob("*.bin"))
    pipe = load_pipeline(str(target))
    assert pipe.vae_scale_factor == 8
    assert pipe.tokenizer.model_max_length == 77
    # Cross-attention at the top UNet level, where attention patches such as tomesd act.
    assert pipe.unet.down_blocks[0].attentions


def test_it_leaves_nothing_behind_when_a_build_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_build(scratch: str) -> None:
        Path(scratch).mkdir(parents=True)
        (Path(scratch) / "half-written").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "_build_pipeline", broken_build)

    with pytest.raises(RuntimeError, match="disk full"):
        demo.build_demo_sd15(str(tmp_path / "demo-sd15"))

    assert list(tmp_path.iterdir()) == []


# --- Every demo model, loaded by diffusers' own classes and proven with pixels ---

PROMPT = "a lighthouse at dusk"


def _load(cls: Any, folder: Path, **components: Any) -> Any:
    """Load a demo folder the way diffusers loads any local checkpoint."""
    pipe = cls.from_pretrained(str(folder), local_files_only=True, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(pipe: Any, prompt: str = PROMPT, size: int = 64, steps: int = 6, **options: Any) -> Any:
    """One image from a fixed seed."""
    generator = torch.Generator().manual_seed(1234)
    return pipe(
        prompt,
        height=size,
        width=size,
        num_inference_steps=steps,
        generator=generator,
        **options,
    ).images[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("model_id", [row[0] for row in DEMO_MODELS])
def test_it_builds_each_model_reproducibly_and_once(model_id: str, tmp_path: Path) -> None:
    build = {row[0]: row[4] for row in DEMO_MODELS}[model_id]

    assert build(str(tmp_path / "first")) is True
    assert build(str(tmp_path / "first")) is False
    assert build(str(tmp_path / "second")) is True

    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"]
    first = _files(tmp_path / "first")
    assert first == _files(tmp_path / "second")
    assert any(name.endswith(".safetensors") for name in first)
    assert not any(name.endswith((".bin", ".pt", ".ckpt")) for name in first)


def test_the_add_ons_ship_the_files_diffusers_looks_for(models_dir: Path) -> None:
    assert _files(models_dir / "demo-lora-a").keys() == {demo_addons.LORA_WEIGHTS}
    assert _files(models_dir / "demo-lora-b").keys() == {demo_addons.LORA_WEIGHTS}
    assert _files(models_dir / "demo-embedding").keys() == {demo_addons.EMBEDDING_WEIGHTS}
    for model_id in ("demo-controlnet-canny", "demo-vae"):
        assert _files(models_dir / model_id).keys() == {"config.json", demo_addons.MODEL_WEIGHTS}
    assert demo.is_built(str(models_dir / "demo-lora-a"), demo_addons.LORA_WEIGHTS)
    assert not demo.is_built(str(models_dir / "demo-lora-a"))


def test_inpaint_model_takes_mask_and_image_through_its_9_channel_unet(models_dir: Path) -> None:
    pipe = _load(StableDiffusionInpaintPipeline, models_dir / "demo-sd15-inpaint")
    assert pipe.unet.config.in_channels == 9
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 64, 3), dtype=np.uint8))
    left = Image.new("L", (64, 96))
    left.paste(255, (0, 0, 32, 96))
    right = Image.new("L", (64, 96))
    right.paste(255, (32, 0, 64, 96))

    def inpaint(mask: Image.Image) -> Image.Image:
        generator = torch.Generator().manual_seed(1234)
        return pipe(
            PROMPT,
            image=photo,
            mask_image=mask,
            height=96,
            width=64,
            num_inference_steps=6,
            generator=generator,
        ).images[0]

    with_left = inpaint(left)
    assert with_left.size == (64, 96)
    assert mean_abs_diff(with_left, inpaint(right)) > 2


@pytest.mark.parametrize("size", [64, 128])
def test_sdxl_model_runs_with_both_text_encoders(models_dir: Path, size: int) -> None:
    pipe = _load(StableDiffusionXLPipeline, models_dir / "demo-sdxl")
    assert pipe.unet.config.addition_embed_type == "text_time"

    image = _image(pipe, size=size)

    assert image.size == (size, size)
    assert pixels(image).std() > 10
    assert mean_abs_diff(image, _image(pipe, "a red bicycle", size=size)) > 1


def test_controlnet_follows_the_control_image(models_dir: Path) -> None:
    base = _load(StableDiffusionPipeline, models_dir / "demo-sd15")
    controlnet = ControlNetModel.from_pretrained(
        str(models_dir / "demo-controlnet-canny"), local_files_only=True
    )
    pipe = StableDiffusionControlNetPipeline.from_pipe(base, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    edges_left = Image.new("RGB", (64, 64))
    edges_left.paste((255, 255, 255), (8, 8, 24, 56))
    edges_right = Image.new("RGB", (64, 64))
    edges_right.paste((255, 255, 255), (36, 4, 60, 28))

    left = _image(pipe, image=edges_left)

    assert mean_abs_diff(left, _image(pipe, image=edges_right)) > 10
    # At scale 0 the ControlNet adds nothing: the plain model's image.
    unguided = _image(pipe, image=edges_left, controlnet_conditioning_scale=0.0)
    assert mean_abs_diff(unguided, _image(base)) == 0


def test_each_lora_changes_the_image_and_unloading_restores_it(models_dir: Path) -> None:
    pipe = _load(StableDiffusionPipeline, models_dir / "demo-sd15")
    before = _image(pipe)
    for name in ("a", "b"):
        pipe.load_lora_weights(
            str(models_dir / f"demo-lora-{name}"),
            weight_name=demo_addons.LORA_WEIGHTS,
            adapter_name=name,
        )
    assert pipe.get_list_adapters() == {"unet": ["a", "b"], "text_encoder": ["a", "b"]}

    pipe.set_adapters(["a"], adapter_weights=[1.0])
    with_a = _image(pipe)
    pipe.set_adapters(["b"], adapter_weights=[1.0])
    with_b = _image(pipe)
    pipe.unload_lora_weights()
    after = _image(pipe)

    assert mean_abs_diff(before, with_a) > 10
    assert mean_abs_diff(before, with_b) > 10
    assert mean_abs_diff(with_a, with_b) > 10
    assert mean_abs_diff(before, after) == 0


def test_the_embedding_token_changes_the_image(models_dir: Path) -> None:
    pipe = _load(StableDiffusionPipeline, models_dir / "demo-sd15")
    pipe.load_textual_inversion(
        str(models_dir / "demo-embedding"),
        weight_name=demo_addons.EMBEDDING_WEIGHTS,
        token="<demo-embedding>",
    )
    # Two vectors: the token expands to itself and "<demo-embedding>_1".
    expanded = pipe.maybe_convert_prompt("x <demo-embedding>", pipe.tokenizer)
    assert expanded == "x <demo-embedding> <demo-embedding>_1"

    ids = pipe.tokenizer.convert_tokens_to_ids(["<demo-embedding>", "<demo-embedding>_1"])
    vectors = load_file(models_dir / "demo-embedding" / demo_addons.EMBEDDING_WEIGHTS)
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids], vectors["emb_params"])
    # CLIP's attention is causal: a token early in the prompt shapes every later one.
    assert mean_abs_diff(_image(pipe), _image(pipe, f"<demo-embedding> {PROMPT}")) > 10


def test_the_demo_vae_decodes_differently(models_dir: Path) -> None:
    vae = AutoencoderKL.from_pretrained(str(models_dir / "demo-vae"), local_files_only=True)
    plain = _load(StableDiffusionPipeline, models_dir / "demo-sd15")
    swapped = _load(StableDiffusionPipeline, models_dir / "demo-sd15", vae=vae)

    assert mean_abs_diff(_image(plain), _image(swapped)) > 10


def test_the_upscaler_makes_a_64_px_image_256_px(models_dir: Path) -> None:
    pipe = _load(StableDiffusionUpscalePipeline, models_dir / "demo-upscaler-x4")
    assert pipe.vae.config.scaling_factor == demo.UPSCALER_VAE_SCALING
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    red = Image.new("RGB", (64, 64), (200, 30, 30))

    def upscale(image: Image.Image) -> Image.Image:
        generator = torch.Generator().manual_seed(1234)
        return pipe(PROMPT, image=image, num_inference_steps=6, generator=generator).images[0]

    big = upscale(noise)

    assert big.size == (256, 256)
    assert mean_abs_diff(big, upscale(red)) > 5
