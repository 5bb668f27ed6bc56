"""The AUTOMATIC1111 format's fixed tables: defaults, bounds, samplers and what is refused.

Data only; the checks that read these tables are in serializers.py.
"""

from __future__ import annotations

import re
from typing import Any

TAG = "AUTOMATIC1111"
DEFAULT_STEPS = 20
DEFAULT_SAMPLER = "Euler a"
DEFAULT_CFG_SCALE = 7.0
DEFAULT_SIDE = 512
MIN_SIDE = 64
MAX_SIDE = 2048
MAX_STEPS = 150
MAX_CFG_SCALE = 30
# webui's batch size slider stops at 8 and batch count at 100; the plan's samples bind first.
MAX_BATCH_SIZE = 8
MAX_N_ITER = 100
MAX_CLIP_SKIP = 12
HIRES_FACTORS = (2, 3, 4)
DEFAULT_HIRES_STRENGTH = 0.7
DEFAULT_IMG2IMG_STRENGTH = 0.75
CHECKSUM_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]\s*$")
WEIGHT_SUFFIXES = (".safetensors", ".ckpt")

# k-diffusion names webui also accepts for its samplers.
SAMPLER_ALIASES = {
    "Euler a": ["k_euler_a", "k_euler_ancestral"],
    "Euler": ["k_euler"],
    "LMS": ["k_lms"],
    "LMS Karras": ["k_lms_ka"],
    "Heun": ["k_heun"],
    "DPM2": ["k_dpm_2"],
    "DPM2 Karras": ["k_dpm_2_ka"],
    "DPM2 a": ["k_dpm_2_a"],
    "DPM2 a Karras": ["k_dpm_2_a_ka"],
    "DPM++ 2M": ["k_dpmpp_2m"],
    "DPM++ 2M Karras": ["k_dpmpp_2m_ka"],
    "DPM++ 2M SDE": ["k_dpmpp_2m_sde"],
    "DPM++ 2M SDE Karras": ["k_dpmpp_2m_sde_ka"],
    "DDIM": ["ddim"],
    "PLMS": ["plms"],
    "UniPC": ["unipc"],
    "LCM": ["k_lcm"],
}
# webui samplers this server does not offer: a 400 (a known feature), not a 422 (a typo).
SAMPLERS_NOT_OFFERED = (
    "DPM++ 2S a",
    "DPM++ 2S a Karras",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Exponential",
    "DPM++ 2M SDE Heun",
    "DPM++ 3M SDE",
    "DPM++ 3M SDE Karras",
    "DPM++ 3M SDE Exponential",
    "DPM fast",
    "DPM adaptive",
    "Restart",
)
# The eta each sampler runs with in the engine; webui's eta only acts on these samplers.
SAMPLER_ETA = {
    "Euler a": 1.0,
    "DPM2 a": 1.0,
    "DPM2 a Karras": 1.0,
    "DPM++ 2M SDE": 1.0,
    "DPM++ 2M SDE Karras": 1.0,
    "DDIM": 0.0,
}

# webui 1.9+ schedulers (the sigma schedule, separate from the sampler). "Automatic" keeps the
# sampler's own schedule; "Karras" turns on Karras sigmas.
SCHEDULERS = [
    {
        "name": "automatic",
        "label": "Automatic",
        "aliases": None,
        "default_rho": -1,
        "need_inner_model": False,
    },
    {
        "name": "karras",
        "label": "Karras",
        "aliases": None,
        "default_rho": 7.0,
        "need_inner_model": False,
    },
]
SCHEDULERS_NOT_OFFERED = (
    "uniform",
    "exponential",
    "polyexponential",
    "sgm_uniform",
    "sgm uniform",
    "kl_optimal",
    "kl optimal",
    "align_your_steps",
    "align your steps",
    "simple",
    "normal",
    "ddim",
    "beta",
)

# Settings whose value here never changes; override_settings or POST /options may repeat them.
FIXED_OPTIONS: dict[str, Any] = {
    "samples_format": "png",
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "enable_pnginfo": True,
    "eta_ancestral": 1.0,
    "eta_ddim": 0.0,
}
# The hires fix's hr_upscaler names: webui's latent upscale modes (modules/shared.py
# latent_upscale_modes), each the engine's (hires_mode, hires_antialias); "Latent" is the default.
# At the whole-number factors offered nearest-exact picks the pixels nearest picks, in webui as
# here; and bilinear antialiasing acts only when shrinking, so webui's "Latent (antialiased)"
# enlarges exactly as "Latent" does, and runs as it.
HIRES_UPSCALERS: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", False),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
DEFAULT_HIRES_UPSCALER = "Latent"
# The engine's name for each endpoint's job (img2img with a mask is an inpaint).
ENGINE_KINDS = {"txt2img": "text2img", "img2img": "img2img"}


# webui fields for features this server does not offer: (values that mean "off", the reason).
# Any other value is a 400 naming the field, never a silently different image.
NOT_HONOURED: dict[str, tuple[tuple[Any, ...], str]] = {
    "restore_faces": ((False,), "Face restoration is not offered by this server."),
    "styles": ((), "Prompt styles are not offered by this server; put the text in the prompt."),
    "script_name": (("None",), "Scripts are not offered by this server."),
    "script_args": ((), "Scripts are not offered by this server."),
    "seed_resize_from_w": ((-1, 0), "Resizing the seed is not offered by this server."),
    "seed_resize_from_h": ((-1, 0), "Resizing the seed is not offered by this server."),
    "s_min_uncond": ((0,), "Negative guidance minimum sigma is not offered by this server."),
    "s_churn": ((0,), "Sigma churn is not offered by this server."),
    "s_tmin": ((0,), "Sigma tmin is not offered by this server."),
    "s_tmax": ((0,), "Sigma tmax is not offered by this server."),
    "s_noise": ((1,), "Sigma noise is not offered by this server."),
    "firstphase_width": ((0,), "Use width, height and hr_scale."),
    "firstphase_height": ((0,), "Use width, height and hr_scale."),
    "infotext": ((), "Reading parameters from an infotext is not offered by this server."),
    "initial_noise_multiplier": ((1,), "A noise multiplier is not offered by this server."),
    "firstpass_image": ((), "Starting the hires fix from an image is not offered by this server."),
}
# Hires fix settings: only read (and only refused) when enable_hr is on, as webui reads them.
HIRES_NOT_HONOURED: dict[str, tuple[tuple[Any, ...], str]] = {
    "hr_resize_x": ((0,), "Give the upscale as hr_scale (2, 3 or 4) instead."),
    "hr_resize_y": ((0,), "Give the upscale as hr_scale (2, 3 or 4) instead."),
    "hr_second_pass_steps": ((0,), "The second pass runs denoising_strength × steps steps."),
    "hr_checkpoint_name": (
        ("Use same checkpoint",),
        "The second pass uses the same checkpoint.",
    ),
    "hr_sampler_name": (("Use same sampler",), "The second pass uses the same sampler."),
    "hr_scheduler": (("Use same scheduler",), "The second pass uses the same scheduler."),
}
# Inpainting settings: only read (and only refused) when a mask is sent.
INPAINT_NOT_HONOURED: dict[str, tuple[tuple[Any, ...], str]] = {
    "inpainting_fill": ((0, 1), "Only 0 (fill) and 1 (original) are offered."),
    "latent_mask": ((), "A separate latent mask is not offered by this server."),
    "mask_round": ((True,), "The mask is always rounded to black and white in latent space."),
}
