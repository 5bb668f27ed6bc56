"""Prompt rules shared by the web tier and the engine: `<lora:name:weight>` tags and enhance_prompt.

Plain string work (no torch), so views can validate names before a job is queued.
"""

from __future__ import annotations

import math
import re

LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^>]*))?>", re.IGNORECASE)
DEFAULT_LORA_WEIGHT = 1.0
# Every format bounds a LoRA weight to this (in tags and in fields): past it an adapter only
# burns the image, and a NaN or an infinity cannot even be stored with the job.
MAX_LORA_WEIGHT = 2.0
# A weight longer than this is no number a person typed (and float() of it costs time).
MAX_WEIGHT_CHARS = 32
# What no stored text may hold: PostgreSQL cannot store NUL, and an unpaired surrogate (only
# reachable through a \ud800-style escape) cannot be encoded as UTF-8 at all.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What a page or an upload answers for a name that holds one.
UNSTORABLE_NAME = "The name holds a NUL character or an unpaired surrogate, which cannot be stored."


def has_unstorable(text: str) -> bool:
    """Whether `text` holds a NUL character or an unpaired surrogate."""
    # ASCII text (base64 images, most prompts) can only hold NUL, and `in` finds that ten
    # times faster than the regex (bench/parsing.py).
    if text.isascii():
        return "\x00" in text
    return UNSTORABLE.search(text) is not None


# enhance_prompt appends these quality terms, in this order, skipping any already present, so
# the same prompt always gives the same final prompt (and so the same image for a seed).
ENHANCE_TERMS = (
    "highly detailed",
    "sharp focus",
    "professional lighting",
    "rich colors",
    "8k",
)


class PromptError(ValueError):
    """A malformed `<lora:…>` tag; the message names it."""


def extract_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """Split `<lora:name:weight>` tags out of a prompt: (prompt without tags, [(name, weight)])."""
    loras: list[tuple[str, float]] = []
    for match in LORA_TAG.finditer(prompt):
        name = match.group(1).strip()
        raw = (match.group(2) or "").strip()
        if has_unstorable(name):
            raise PromptError("A LoRA tag's name holds a NUL character or an unpaired surrogate.")
        try:
            if len(raw) > MAX_WEIGHT_CHARS:
                raise ValueError(raw)
            weight = float(raw) if raw else DEFAULT_LORA_WEIGHT
        except ValueError:
            message = f"The LoRA tag <lora:{name}:…> has a weight that is not a number."
            raise PromptError(message) from None
        if not math.isfinite(weight) or abs(weight) > MAX_LORA_WEIGHT:
            raise PromptError(
                f"The LoRA tag <lora:{name}:{raw}> needs a weight between "
                f"{-MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}."
            )
        loras.append((name, weight))
    cleaned = LORA_TAG.sub("", prompt)
    cleaned = re.sub(r"\s*,\s*(,\s*)+", ", ", cleaned)
    # "a castle <lora:x:1>, at dusk" -> "a castle, at dusk", not "a castle , at dusk".
    cleaned = re.sub(r"\s+,", ",", cleaned)
    cleaned = re.sub(r"\s{2,}", " ", cleaned).strip().strip(",").strip()
    return cleaned, loras


def with_tokens(prompt: str, negative_prompt: str, tokens: list[str]) -> str:
    """The prompt with each token that appears in neither prompt appended (embeddings)."""
    missing = [t for t in tokens if t not in prompt and t not in negative_prompt]
    if not missing:
        return prompt
    base = prompt.rstrip().rstrip(",")
    return ", ".join([base, *missing] if base else missing)


def enhance(prompt: str) -> str:
    """The prompt with the quality terms it lacks appended (deterministic)."""
    present = prompt.lower()
    missing = [term for term in ENHANCE_TERMS if term not in present]
    if not missing:
        return prompt
    base = prompt.rstrip().rstrip(",")
    return ", ".join([base, *missing]) if base else ", ".join(missing)
