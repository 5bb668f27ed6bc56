"""manage.py sweep_model_cache: drop this host's cached models that were deleted or replaced.

Each fetch sweeps too; run this from cron on hosts that fetch rarely, to free their disk sooner.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from generation import model_store
from generation.models import stored_models


class Command(BaseCommand):
    help = "Remove model cache entries whose model no longer exists or has other files now."

    def handle(self, *args: Any, **options: Any) -> None:
        removed = model_store.sweep_cache(stored_models)
        self.stdout.write(f"removed {removed} cache entries from {model_store.cache_dir()}")
