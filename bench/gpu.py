"""A GPU worker's speed: full-size SD 1.5 (or SDXL), raw diffusers vs the API, compile off/on,
and throughput with cross-request batching. Prints one JSON line.

Nothing is downloaded: the model is SD 1.5's architecture (UNet, VAE, CLIP text encoder at their
real sizes, from their configs) with seeded random weights, so every figure is the cost of the
real network; the pixels are noise. It takes demo-sd15's place (or demo-sdxl's with --sdxl) in a
models folder of its own, so the stack's worker preloads it, and compiles it, when it starts.

For each compile setting it times, at 512x512 and 31 steps (the plans' steps list has no 30),
fp16 and SDPA:
- `direct`: the same text2img call made straight on diffusers in this process, warm;
- `api`: one client's job from submit to stored success through web + worker (bench/overhead.py
  starts them), warm;
- `batched`: 8 clients submitting at once, with PICTOR_MAX_BATCH_IMAGES=8 (images per second),
  and, with compile off, the same with batching off.

On a host without CUDA (or with --cpu) it runs a reduced mode that a test can afford: the demo
model's small architecture at 64x64 and 21 steps in fp32 (or --dtype bf16), compile off.

    .venv/bin/python bench/gpu.py [--sdxl] [--runs 5] [--clients 8] [--cpu] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.overhead import Running, stack  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk"
WARMUP = 2
# Jobs normally answer within the sync wait; polls (counted by the rate limit) are the fallback.
POLL_SECONDS = 0.5


def build_full_sd15(target: str) -> None:
    """SD 1.5's architecture at full size with seeded random weights, saved as fp16."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from generation.engine.demo import SD15_SCHEDULE, _build_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _build_tokenizer(scratch)
        torch.manual_seed(0)
        # runwayml/stable-diffusion-v1-5's unet/config.json, vae/config.json, text_encoder.
        unet = UNet2DConditionModel(
            sample_size=64,
            cross_attention_dim=768,
            attention_head_dim=8,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                # CLIP ViT-L/14's text tower; only the vocabulary is the demo tokenizer's.
                vocab_size=len(tokenizer),
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        scheduler = PNDMScheduler(
            **SD15_SCHEDULE, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1
        )
        no_checker: dict[str, Any] = {"safety_checker": None, "feature_extractor": None}
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            **no_checker,
            requires_safety_checker=False,
        )
        pipe.to(torch.float16).save_pretrained(target, safe_serialization=True)


def build_full_sdxl(target: str) -> None:
    """SDXL base's architecture at full size with seeded random weights, saved as fp16."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
        StableDiffusionXLPipeline,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    from generation.engine.demo import SD15_SCHEDULE, _build_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _build_tokenizer(scratch)
        torch.manual_seed(0)

        def text_config(width: int, layers: int, heads: int, **extra: Any) -> Any:
            return CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=width,
                intermediate_size=width * 4,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **extra,
            )

        # stabilityai/stable-diffusion-xl-base-1.0's configs.
        unet = UNet2DConditionModel(
            sample_size=128,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=1024,
            scaling_factor=0.13025,
            force_upcast=True,
        )
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(text_config(768, 12, 12, hidden_act="quick_gelu")),
            text_encoder_2=CLIPTextModelWithProjection(
                text_config(1280, 32, 20, hidden_act="gelu", projection_dim=1280)
            ),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=EulerDiscreteScheduler(**SD15_SCHEDULE, steps_offset=1),
        )
        pipe.to(torch.float16).save_pretrained(target, safe_serialization=True)


def direct_timings(
    path: Path, sdxl: bool, size: int, steps: int, dtype: str, compiled: bool, runs: int
) -> dict[str, float]:
    """The text2img call straight on diffusers: warm-up (and compile) time, then the median."""
    import diffusers
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    from generation.engine.device import torch_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cls = diffusers.StableDiffusionXLPipeline if sdxl else diffusers.StableDiffusionPipeline
    extra: dict[str, Any] = {} if sdxl else {"safety_checker": None}
    pipe = cls.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype(dtype), **extra)
    pipe.scheduler = diffusers.UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.to(device)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.set_progress_bar_config(disable=True)
    if compiled:
        pipe.unet.compile()

    def call(seed: int) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(
                PROMPT,
                width=size,
                height=size,
                num_inference_steps=steps,
                guidance_scale=7.5,
                generator=torch.Generator("cpu").manual_seed(seed),
            )
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    warmup = sum(call(seed) for seed in range(WARMUP))
    figures = {
        "warmup_s": round(warmup, 3),
        "median_s": median([call(100 + i) for i in range(runs)]),
    }
    pipe.to("cpu")  # its GPU memory back before the stack's worker loads the same model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return figures


def api_job(running: Running, body: dict[str, Any]) -> float:
    """Submit one text2img job and poll it to success: seconds from submit to stored images."""
    start = time.perf_counter()
    data = requests.post(
        f"{running.base_url}/api/v3/text2img", json={"key": running.key, **body}, timeout=660
    ).json()
    while data.get("status") == "processing":
        time.sleep(POLL_SECONDS)
        data = requests.post(
            f"{running.base_url}/api/v3/fetch/{data['id']}", json={"key": running.key}, timeout=60
        ).json()
    elapsed = time.perf_counter() - start
    if data.get("status") != "success":
        raise RuntimeError(f"the job did not succeed: {data}")
    return elapsed


def concurrent(job: Callable[[int], float], clients: int, per_client: int) -> dict[str, Any]:
    """`clients` threads each running `per_client` jobs back to back: images per second."""
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            for i in range(per_client):
                job(10_000 + index * 100 + i)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]}")
    images = clients * per_client
    return {
        "clients": clients,
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 3),
    }


def api_timings(
    models_dir: Path,
    model_id: str,
    env: dict[str, str],
    body: dict[str, Any],
    runs: int,
    clients: int,
) -> dict[str, Any]:
    """Warm single-client latency, then `clients` at once, through one web + worker stack."""
    # Enterprise: 16 concurrent jobs and 1,200 requests a minute; a web thread per waiting client.
    with stack(models_dir, env, plan="enterprise", threads=clients + 2) as running:
        started = time.perf_counter()
        # The first job waits for the worker's start (its preload, and compile when on).
        first = api_job(running, {**body, "model_id": model_id, "seed": 1})
        for seed in range(2, WARMUP + 1):
            api_job(running, {**body, "model_id": model_id, "seed": seed})
        latency = [
            api_job(running, {**body, "model_id": model_id, "seed": 100 + i}) for i in range(runs)
        ]

        def one(seed: int) -> float:
            return api_job(running, {**body, "model_id": model_id, "seed": seed})

        throughput = concurrent(one, clients, max(1, runs // 2))
        return {
            "first_job_s": round(first, 3),
            "ready_after_s": round(time.perf_counter() - started, 3),
            "median_s": median(latency),
            "throughput": throughput,
        }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu", action="store_true", help="the reduced mode, even with a GPU")
    parser.add_argument("--sdxl", action="store_true", help="SDXL base at 1024x1024 instead")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default=None)
    parser.add_argument("--models-dir", help="reuse (or keep) the built model in this folder")
    args = parser.parse_args()

    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    dtype = args.dtype or ("fp16" if gpu else "fp32")
    size = (1024 if args.sdxl else 512) if gpu else 64
    steps = 31 if gpu else 21
    model_id = "demo-sdxl" if args.sdxl else "demo-sd15"
    compile_modes = (False, True) if gpu else (False,)

    with tempfile.TemporaryDirectory(prefix="pictor-gpu-bench-") as tmp:
        models_dir = Path(args.models_dir or tmp)
        target = models_dir / model_id
        built = time.perf_counter()
        if gpu and not (target / "model_index.json").is_file():
            (build_full_sdxl if args.sdxl else build_full_sd15)(str(target))
        elif not gpu:
            from generation.engine.demo import build_demo_sd15, build_demo_sdxl

            (build_demo_sdxl if args.sdxl else build_demo_sd15)(str(target))
        build_s = time.perf_counter() - built

        body = {
            "prompt": PROMPT,
            "width": size,
            "height": size,
            "num_inference_steps": steps,
            "safety_checker": False,
        }
        figures: dict[str, Any] = {
            "bench": "gpu",
            "mode": "gpu" if gpu else "cpu-reduced",
            "device": torch.cuda.get_device_name(0) if gpu else "cpu",
            "model": (
                f"{'SDXL' if args.sdxl else 'SD 1.5'} full architecture, random weights"
                if gpu
                else f"{model_id} (demo architecture)"
            ),
            "size": size,
            "steps": steps,
            "dtype": dtype,
            "attention": "sdpa",
            "runs": args.runs,
            "build_s": round(build_s, 1),
        }
        for compiled in compile_modes:
            env = {
                "PICTOR_DTYPE": dtype,
                "PICTOR_ATTENTION": "sdpa",
                "PICTOR_COMPILE": "true" if compiled else "false",
                "PICTOR_SYNC_WAIT": "600",
                "PICTOR_MAX_BATCH_IMAGES": str(args.clients),
            }
            direct = direct_timings(target, args.sdxl, size, steps, dtype, compiled, args.runs)
            api = api_timings(models_dir, model_id, env, body, args.runs, args.clients)
            result: dict[str, Any] = {
                "direct_median_s": direct["median_s"],
                "direct_warmup_s": direct["warmup_s"],
                "api_median_s": api["median_s"],
                "api_overhead_s": round(api["median_s"] - direct["median_s"], 4),
                "api_first_job_s": api["first_job_s"],
                "batched": {**api["throughput"], "max_batch_images": args.clients},
            }
            if not compiled:
                unbatched = api_timings(
                    models_dir,
                    model_id,
                    {**env, "PICTOR_MAX_BATCH_IMAGES": "1"},
                    body,
                    1,
                    args.clients,
                )
                result["unbatched"] = {**unbatched["throughput"], "max_batch_images": 1}
            figures["compile_on" if compiled else "compile_off"] = result
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
