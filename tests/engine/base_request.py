"""The request engine tests start from."""

from __future__ import annotations

from generation.engine.request import GenerationRequest

# Small and quick, but with CFG on and enough steps for every sampler to act.
BASE = GenerationRequest(
    prompt="a lighthouse at dusk",
    model_id="demo-sd15",
    width=64,
    height=64,
    steps=6,
    seed=1234,
    safety_checker=False,
)
