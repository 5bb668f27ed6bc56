"""The plain request and result objects shared by the web tier and the engine.

This module imports neither Django nor torch: views build a GenerationRequest, workers hand it
to the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SAFETY_MODES = ("sensitive_content_text", "blur", "pixelate", "black")
DEFAULT_SCHEDULER = "UniPCMultistepScheduler"


@dataclass(frozen=True)
class GenerationRequest:
    """A validated text-to-image request, independent of any wire format."""

    prompt: str
    model_id: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    samples: int = 1
    steps: int = 21
    guidance_scale: float = 7.5
    seed: int = 0
    scheduler: str = DEFAULT_SCHEDULER
    use_karras_sigmas: bool = False
    algorithm_type: str = "none"
    clip_skip: int | None = None
    safety_checker: bool = True
    safety_checker_type: str = "sensitive_content_text"

    def to_params(self) -> dict[str, Any]:
        """The request as a JSON-serialisable dict (stored on the Job)."""
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> GenerationRequest:
        """Rebuild a request from `to_params` output, ignoring unknown keys."""
        known = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in params.items() if k in known})


@dataclass
class GenerationResult:
    """What the engine returns: PIL images plus per-image facts."""

    images: list[Any]
    seeds: list[int]
    nsfw: list[bool] = field(default_factory=list)
    inference_seconds: float = 0.0
