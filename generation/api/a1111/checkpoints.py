"""Checkpoints by webui's names: titles, hashes, lookups and the key's default model.

Models are diffusers folders, so a title is "<model_id>.safetensors [hash]" and `sha256` is the
SHA-256 of the model id (UTF-8), not of the weights: stable for a registered model, and no
multi-GB file is read to list them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rest_framework.exceptions import NotFound, ValidationError

from accounts.models import ApiKey, Organization
from generation.api import base
from generation.api.a1111.errors import Unprocessable
from generation.api.a1111.tables import CHECKSUM_SUFFIX, FIXED_OPTIONS, WEIGHT_SUFFIXES
from generation.engine.addons import EMBEDDING_FILE, weight_file
from generation.models import AIModel


def file_name(model: AIModel) -> str:
    """The model's webui file name: its id and the weights' suffix (folders hold safetensors)."""
    suffix = Path(model.path).suffix
    return model.model_id + (suffix if suffix in WEIGHT_SUFFIXES else ".safetensors")


def model_sha256(model: AIModel) -> str:
    """A stable stand-in for webui's weights hash: the SHA-256 of the model id (UTF-8)."""
    return hashlib.sha256(model.model_id.encode()).hexdigest()


def short_hash(model: AIModel) -> str:
    """webui's short hash: the first 10 hex digits of the sha256."""
    return model_sha256(model)[:10]


def model_title(model: AIModel) -> str:
    """webui's checkpoint title, e.g. "demo-sd15.safetensors [0123456789]"."""
    return f"{file_name(model)} [{short_hash(model)}]"


def model_names(model: AIModel) -> set[str]:
    """Every name webui accepts for a checkpoint: title, file name, model name, hashes."""
    return {
        model.model_id,
        file_name(model),
        model_title(model),
        short_hash(model),
        model_sha256(model),
    }


def find_model(organization: Organization, name: Any, field: str) -> AIModel:
    """The checkpoint `name` calls, among those the organization may use (404 like webui)."""
    if not isinstance(name, str) or not name.strip():
        raise Unprocessable({field: ["Give a checkpoint title or model name."]})
    if not base.is_storable(name):
        raise Unprocessable({field: [f"The name {base.UNSTORABLE_TEXT}."]})
    wanted = name.strip()
    bare = CHECKSUM_SUFFIX.sub("", wanted)
    visible = list(AIModel.objects.visible_to(organization).order_by("model_id"))
    model = next((m for m in visible if wanted in model_names(m)), None) or next(
        (m for m in visible if bare in model_names(m)), None
    )
    if model is None:
        raise NotFound(f"Model not found: {wanted}")
    if not model.is_checkpoint:
        raise ValidationError(
            {field: [f"{wanted} is a {model.get_family_display()} model, not a checkpoint."]}
        )
    return model


def default_model(organization: Organization, key: ApiKey | None) -> AIModel | None:
    """The key's own default checkpoint (POST /options) while it is usable, else the server's."""
    visible = AIModel.objects.visible_to(organization).filter(family__in=AIModel.CHECKPOINTS)
    if key is not None and key.default_model_id:
        model = visible.filter(pk=key.default_model_id).first()
        if model is not None:
            return model
    return visible.filter(is_default=True).first()


def options(organization: Organization, key: ApiKey | None) -> dict[str, Any]:
    """The settings GET /options reports for this key."""
    model = default_model(organization, key)
    return {
        "sd_model_checkpoint": model_title(model) if model else None,
        "sd_checkpoint_hash": model_sha256(model) if model else None,
        **FIXED_OPTIONS,
    }


def embedding_shape(model: AIModel) -> tuple[int, int]:
    """(vectors, dimension) of an embedding, read from its safetensors header (0, 0 if unknown)."""
    try:
        folder, name = weight_file(model.ref(), EMBEDDING_FILE)
        with open(Path(folder) / name, "rb") as weights:
            size = int.from_bytes(weights.read(8), "little")
            if not 0 < size <= 1_000_000:
                return 0, 0
            header = json.loads(weights.read(size))
        shape = next(v["shape"] for k, v in header.items() if k != "__metadata__")
        return (int(shape[0]), int(shape[-1])) if len(shape) == 2 else (1, int(shape[-1]))
    except (OSError, ValueError, KeyError, StopIteration, TypeError, IndexError):
        return 0, 0
