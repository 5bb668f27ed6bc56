"""The worker's device settings: dtype, attention, memory layout, VAE tiling, offload, threads."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from django.core.exceptions import ImproperlyConfigured

from generation import heartbeat
from generation.engine import config, loader
from generation.engine.cache import PipelineCache
from generation.engine.device import DeviceSettings, default_torch_threads, resolve, usable_cpus
from generation.engine.request import ModelRef
from generation.engine.runner import generate
from generation.models import WorkerHeartbeat
from tests.engine.base_request import BASE

ROOT = Path(__file__).resolve().parents[2]
NAMES = (
    "PICTOR_DEVICE",
    "PICTOR_DTYPE",
    "PICTOR_ATTENTION",
    "PICTOR_CHANNELS_LAST",
    "PICTOR_VAE_TILING_SIDE",
    "PICTOR_VAE_SLICING",
    "PICTOR_CPU_OFFLOAD",
    "PICTOR_COMPILE",
)
SHOW_DEVICE = (
    "import django, json, os, dataclasses; "
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'sdplatform.settings'); django.setup(); "
    "from generation.engine import config; "
    "print(json.dumps(dataclasses.asdict(config.current().device)))"
)


def start(**env: str) -> subprocess.CompletedProcess[str]:
    """Set up Django (as every worker does first) with these variables."""
    clean = {k: v for k, v in os.environ.items() if k not in NAMES}
    return subprocess.run(
        [sys.executable, "-c", SHOW_DEVICE],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def device_settings(**changes: Any) -> Iterator[DeviceSettings]:
    """The engine configured with these device settings for the duration."""
    before = config.current()
    settings = replace(before.device, **changes)
    config.configure(replace(before, device=settings))
    try:
        yield settings
    finally:
        config.configure(before)


def load(demo_path: str, **changes: Any) -> Any:
    with device_settings(**changes):
        return loader.load_pipeline(demo_path)


def test_it_reads_every_setting_from_the_environment():
    result = start(
        PICTOR_DEVICE="cpu",
        PICTOR_DTYPE="bf16",
        PICTOR_ATTENTION="default",
        PICTOR_CHANNELS_LAST="yes",
        PICTOR_VAE_TILING_SIDE="1024",
        PICTOR_VAE_SLICING="on",
        PICTOR_CPU_OFFLOAD="model",
        PICTOR_COMPILE="true",
        PICTOR_TORCH_THREADS="3",
        PICTOR_WORKERS="2",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "device": "cpu",
        "dtype": "bf16",
        "attention": "default",
        "channels_last": True,
        "vae_tiling_side": 1024,
        "vae_slicing": True,
        "cpu_offload": "model",
        "compile": True,
        "compile_backend": "inductor",
        "torch_threads": 3,
        "workers": 2,
    }


def test_it_defaults_to_auto_device_and_dtype_with_sdpa():
    result = start(PICTOR_TORCH_THREADS="")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.splitlines()[-1])
    assert shown["device"] == "auto" and shown["dtype"] == "auto"
    assert shown["attention"] == "sdpa" and shown["cpu_offload"] == "off"
    assert not shown["compile"] and not shown["channels_last"]
    assert shown["vae_tiling_side"] == 0 and shown["torch_threads"] is None


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("PICTOR_DEVICE", "gpu", "PICTOR_DEVICE must be auto, cpu, cuda, cuda:N or mps, not 'gpu'"),
        ("PICTOR_DEVICE", "cuda:x", "PICTOR_DEVICE must be auto, cpu, cuda, cuda:N or mps"),
        ("PICTOR_DEVICE", "cuda:²", "PICTOR_DEVICE must be auto, cpu, cuda, cuda:N or mps"),
        ("PICTOR_MAX_BATCH_IMAGES", "²", "PICTOR_MAX_BATCH_IMAGES must be auto or a positive"),
        ("PICTOR_DTYPE", "fp8", "PICTOR_DTYPE must be one of auto, fp16, bf16, fp32, not 'fp8'"),
        ("PICTOR_ATTENTION", "flash", "PICTOR_ATTENTION must be one of sdpa, default"),
        ("PICTOR_CPU_OFFLOAD", "sequential", "PICTOR_CPU_OFFLOAD must be one of off, model"),
        ("PICTOR_VAE_TILING_SIDE", "-1", "PICTOR_VAE_TILING_SIDE must be 0 (off) or a side"),
        ("PICTOR_VAE_TILING_SIDE", "big", "PICTOR_VAE_TILING_SIDE must be an integer"),
        ("PICTOR_COMPILE", "maybe", "PICTOR_COMPILE must be one of"),
        ("PICTOR_CHANNELS_LAST", "2", "PICTOR_CHANNELS_LAST must be one of"),
    ],
)
def test_it_refuses_to_start_with_an_invalid_value(name, value, says):
    result = start(**{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert says in result.stderr, result.stderr[-600:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA device")
def test_a_worker_asked_for_cuda_on_a_cpu_host_refuses_to_start(db):
    from generation.tasks import warm_worker

    with device_settings(device="cuda"):
        with pytest.raises(ImproperlyConfigured, match="PICTOR_DEVICE=cuda, but torch"):
            warm_worker(None, proc_name="Process-1")
    with device_settings(device="cuda:3"), pytest.raises(ImproperlyConfigured, match="cuda:3"):
        warm_worker(None, proc_name="Process-1")


def test_the_default_thread_count_shares_the_cores_between_the_hosts_workers():
    assert default_torch_threads(workers=1, cpus=16) == 16
    assert default_torch_threads(workers=4, cpus=16) == 4
    assert default_torch_threads(workers=3, cpus=16) == 5
    assert default_torch_threads(workers=8, cpus=2) == 1
    assert DeviceSettings(workers=2).threads() == max(1, usable_cpus() // 2)
    assert DeviceSettings(workers=2, torch_threads=7).threads() == 7


def test_loading_applies_the_thread_count(demo_path):
    before = torch.get_num_threads()
    try:
        load(demo_path, torch_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cpu_defaults_to_fp32_with_sdpa(demo_path):
    pipe = load(demo_path, device="auto", dtype="auto", attention="sdpa")
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}


def test_default_attention_uses_diffusers_plain_processor(demo_path):
    pipe = load(demo_path, attention="default")
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor"}
    assert {type(p).__name__ for p in pipe.vae.attn_processors.values()} == {"AttnProcessor"}


def test_bf16_generates_an_image_on_the_cpu(demo_path):
    with device_settings(dtype="bf16"):
        cache = PipelineCache(max_models=1)
        result = generate(replace(BASE, width=64, height=64), demo_path, cache=cache)
        pipe = cache.get(ModelRef(BASE.model_id, demo_path))
    assert pipe.unet.dtype == torch.bfloat16
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
    # Real pixels, not a flat or NaN-black image.
    assert len(set(result.images[0].getdata())) > 100


def test_channels_last_puts_the_unet_weights_in_nhwc(demo_path):
    plain = load(demo_path)
    assert plain.unet.conv_in.weight.is_contiguous()
    pipe = load(demo_path, channels_last=True)
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not pipe.unet.conv_in.weight.is_contiguous()


def test_vae_tiling_switches_on_above_the_side_and_off_below(demo_path):
    with device_settings(vae_tiling_side=96):
        cache = PipelineCache(max_models=1)
        generate(replace(BASE, width=128, height=64), demo_path, cache=cache)
        vae = cache.get(ModelRef(BASE.model_id, demo_path)).vae
        assert vae.use_tiling
        generate(replace(BASE, width=64, height=64), demo_path, cache=cache)
        assert not vae.use_tiling


def test_vae_slicing_acts_on_batches_only(demo_path):
    with device_settings(vae_slicing=True):
        cache = PipelineCache(max_models=1)
        result = generate(replace(BASE, width=64, height=64, samples=2), demo_path, cache=cache)
        vae = cache.get(ModelRef(BASE.model_id, demo_path)).vae
        assert vae.use_slicing and len(result.images) == 2
        generate(replace(BASE, width=64, height=64), demo_path, cache=cache)
        assert not vae.use_slicing


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA device")
def test_cpu_offload_is_ignored_on_the_cpu_with_a_warning(demo_path, caplog):
    with caplog.at_level(logging.WARNING, logger="generation.engine.device"):
        pipe = load(demo_path, cpu_offload="model", vae_tiling_side=4096)
    assert pipe.device.type == "cpu"
    assert resolve(DeviceSettings(cpu_offload="model", vae_tiling_side=4096)).cpu_offload == "off"
    assert "PICTOR_CPU_OFFLOAD=model ignored: it acts on CUDA only" in caplog.text


def test_compile_compiles_the_unet_and_warms_it_up_while_loading(demo_path):
    # Inductor took 393 s for the demo UNet on this 2-core CPU, so this test compiles with
    # dynamo's "eager" backend: the same tracing, guards and warm-up path, no code generation.
    from torch._dynamo.utils import counters

    counters.clear()
    pipe = load(demo_path, compile=True, compile_backend="eager")
    assert pipe.unet._compiled_call_impl is not None
    # The warm-up call at load time ran the UNet through dynamo: a frame was compiled.
    assert counters["stats"]["unique_graphs"] >= 1
    torch._dynamo.reset()


def test_the_heartbeat_reports_the_device_settings(db):
    with device_settings(torch_threads=3, vae_tiling_side=2048):
        heartbeat.beat("host:9")
    engine = WorkerHeartbeat.objects.get(name="host:9").engine
    assert engine == {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "dtype": "fp16" if torch.cuda.is_available() else "fp32",
        "attention": "sdpa",
        "channels_last": False,
        "vae_tiling_side": 2048,
        "vae_slicing": False,
        "cpu_offload": "off",
        "compile": False,
        "torch_threads": 3,
    }


def test_the_ops_page_shows_each_workers_device(client, db):
    from accounts.models import User

    WorkerHeartbeat.objects.create(
        name="gpu-1:42",
        engine={
            "device": "cuda:1",
            "dtype": "bf16",
            "attention": "sdpa",
            "channels_last": True,
            "vae_tiling_side": 1536,
            "vae_slicing": False,
            "cpu_offload": "model",
            "compile": True,
            "torch_threads": 4,
        },
    )
    staff = User.objects.create_user("ops@example.com", "pw-123456789", is_staff=True)
    client.force_login(staff)
    page = client.get("/ops/").content.decode()
    assert "cuda:1 · bf16 · sdpa · 4 threads · compiled · channels_last · offload model" in page
    assert "VAE tiles above 1536px" in page
