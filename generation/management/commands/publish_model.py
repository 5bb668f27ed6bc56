"""manage.py publish_model <model_id>: put a registered model's files in the object store.

The model must be on this host's disk (PICTOR_MODELS_DIR, as import_model or build_demo_models
registered it). Afterwards every worker of the fleet loads it from the store: each fetches the
files into its model cache on first use and checks their SHA-256 (generation/model_store.py).
Publishing again uploads the current files and removes the ones published before.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from generation import model_store
from generation.models import AIModel, stored_models


def local_files(root: Path) -> list[tuple[str, Path]]:
    """(name in the store, local path) of a model folder's files, or of a single file."""
    if root.is_file():
        return [(root.name, root)]
    return [
        (p.relative_to(root).as_posix(), p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


class Command(BaseCommand):
    help = "Upload a registered model's files to the object store, for every worker to fetch."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model_id")

    def handle(self, *args: Any, **options: Any) -> None:
        model = AIModel.objects.filter(model_id=options["model_id"]).first()
        if model is None:
            raise CommandError(f"No model {options['model_id']!r}.")
        if model.organization_id is not None:
            raise CommandError("A tenant's own model is in the object store already.")
        previous = AIModel(pk=model.pk, storage_prefix=model.storage_prefix, files=model.files)
        if model.storage_prefix:
            # Published before: its files come from the cache entry of the current version.
            source = Path(model_store.local_ref(model, stored_models).path)
            entry = model_store.ensure_local(model, stored_models)
            config = entry / model.config_path if model.config_path else None
            weights = source
        else:
            weights = Path(model.local_path)
            config = Path(model.ref().config_path) if model.config_path else None
        if not weights.exists():
            raise CommandError(f"{weights} does not exist on this host.")
        picks = local_files(weights)
        if config is not None:
            picks += [(f"config/{name}", path) for name, path in local_files(config)]
        model.storage_prefix = f"models/public/{model.model_id}/{secrets.token_hex(8)}"
        model.files = [model_store.upload(model, name, path) for name, path in picks]
        model.size = sum(entry["size"] for entry in model.files)
        model.sha256 = (
            model.files[0]["sha256"]
            if weights.is_file()
            else model_store.manifest_digest(model.files)
        )
        model.path = weights.name if weights.is_file() else ""
        model.config_path = "config" if config is not None else ""
        with transaction.atomic():
            model.save(
                update_fields=["storage_prefix", "files", "size", "sha256", "path", "config_path"]
            )
        if previous.storage_prefix and previous.storage_prefix != model.storage_prefix:
            model_store.delete_objects(previous)
        self.stdout.write(
            f"{model.model_id}: {len(model.files)} files, {model.size} bytes, "
            f"under {model.storage_prefix}"
        )
