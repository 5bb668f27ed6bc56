"""Models kept in the object store, and each host's bounded cache of them on local disk.

A stored model (a tenant's upload, or an operator's model published with `publish_model`) has
its files under `AIModel.storage_prefix` in the default storage (a bucket in production). A
worker that needs one fetches every file into PICTOR_MODEL_CACHE_DIR, checks each against its
SHA-256 and size, and loads it from there; past PICTOR_MODEL_CACHE_BYTES the least recently
used entries go. An entry is named `<pk>-<digest>`, so an entry whose model was deleted (on
another host) or republished with other files is found by its name and dropped on the next fetch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from generation.engine.request import ModelRef


class StoredModel(Protocol):
    """What this module reads of a model (an AIModel; typed here so models may import this)."""

    pk: Any
    model_id: str
    family: str
    base: str
    path: str
    config_path: str
    storage_prefix: str
    files: list[dict[str, Any]]
    size: int


# Every model whose files are in the store (AIModel's stored_models): what a cache may keep.
Stored = Callable[[], Iterable[StoredModel]]

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# Marks an entry whose every file arrived and matched; its mtime is the entry's last use.
COMPLETE = ".complete"
LOCK = ".lock"
TEMP_PREFIX = ".fetching-"


class CorruptModel(Exception):
    """A stored file does not match its recorded SHA-256 or size."""


def file_entry(name: str, path: Path) -> dict[str, Any]:
    """{"name", "sha256", "size"} of a local file, as AIModel.files lists it."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"name": name, "sha256": digest.hexdigest(), "size": size}


def manifest_digest(files: list[dict[str, Any]]) -> str:
    """One SHA-256 for a model's whole file list: what its cache entry is named by."""
    canonical = json.dumps(
        sorted((f["name"], f["sha256"], f["size"]) for f in files), separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def entry_name(model: StoredModel) -> str:
    return f"{model.pk}-{manifest_digest(model.files)[:32]}"


def upload(model: StoredModel, name: str, path: Path) -> dict[str, Any]:
    """Put one local file into the model's storage folder; returns its files entry."""
    entry = file_entry(name, path)
    with path.open("rb") as fh:
        default_storage.save(f"{model.storage_prefix}/{name}", File(fh, name=Path(name).name))
    return entry


def delete_objects(model: StoredModel) -> None:
    """Remove the model's files from the object store and this host's cache entries."""
    for entry in model.files:
        default_storage.delete(f"{model.storage_prefix}/{entry['name']}")
    root = cache_dir()
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(f"{model.pk}-"):
                shutil.rmtree(child, ignore_errors=True)


def cache_dir() -> Path:
    return Path(settings.PICTOR_MODEL_CACHE_DIR)


def local_ref(model: StoredModel, stored: Stored) -> ModelRef:
    """The engine's ref of a stored model: its files in this host's cache, fetched if missing.

    `path` and `config_path` of a stored model are relative to its cache entry ("" is the
    entry folder itself).
    """
    folder = ensure_local(model, stored)
    return ModelRef(
        model_id=model.model_id,
        path=str(folder / model.path) if model.path else str(folder),
        family=model.family,
        base=model.base,
        config_path=str(folder / model.config_path) if model.config_path else "",
    )


@contextmanager
def host_lock(root: Path) -> Iterator[None]:
    """One process of this host at a time fetches or evicts (workers share the folder)."""
    with (root / LOCK).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_local(model: StoredModel, stored: Stored) -> Path:
    """The model's cache entry on this host, fetched and verified first if it is missing."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / entry_name(model)
    if (entry / COMPLETE).is_file():
        _touch(entry)
        return entry
    with host_lock(root):
        if (entry / COMPLETE).is_file():
            _touch(entry)
            return entry
        sweep(stored(), root)
        make_room(root, model.size, keep=entry.name)
        temp = root / f"{TEMP_PREFIX}{entry.name}"
        shutil.rmtree(temp, ignore_errors=True)
        started = time.monotonic()
        try:
            for item in model.files:
                fetch_file(f"{model.storage_prefix}/{item['name']}", temp / item["name"], item)
            (temp / COMPLETE).touch()
            os.replace(temp, entry)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    log.info(
        "fetched model %s (%d bytes) into %s in %.1f s",
        model.model_id,
        model.size,
        entry,
        time.monotonic() - started,
    )
    return entry


def fetch_file(name: str, target: Path, expected: dict[str, Any]) -> None:
    """Copy one object to `target`, hashing as it streams; a mismatch raises CorruptModel."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    source: IO[bytes]
    with default_storage.open(name, "rb") as source, target.open("wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > expected["size"]:
                break
            digest.update(chunk)
            out.write(chunk)
    if size != expected["size"] or digest.hexdigest() != expected["sha256"]:
        raise CorruptModel(f"{name}: the stored file does not match its SHA-256 and size")


def _touch(entry: Path) -> None:
    try:
        os.utime(entry / COMPLETE)
    except FileNotFoundError:  # evicted by another process this instant; it fetches again
        pass


def entry_bytes(entry: Path) -> int:
    return sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())


def make_room(root: Path, needed: int, keep: str = "") -> None:
    """Remove least recently used entries until `needed` more bytes fit under the cap."""
    cap = settings.PICTOR_MODEL_CACHE_BYTES
    if needed > cap:
        raise CorruptModel(
            f"The model ({needed} bytes) is larger than this host's model cache "
            f"(PICTOR_MODEL_CACHE_BYTES={cap})."
        )
    entries = []
    for child in root.iterdir():
        marker = child / COMPLETE
        if child.is_dir() and child.name != keep and marker.is_file():
            entries.append((marker.stat().st_mtime, child, entry_bytes(child)))
    used = sum(size for _when, _child, size in entries)
    for _when, child, size in sorted(entries, key=lambda e: e[0]):
        if used + needed <= cap:
            break
        log.info("model cache full: removing %s (%d bytes)", child.name, size)
        shutil.rmtree(child, ignore_errors=True)
        used -= size


def sweep(stored: Iterable[StoredModel], root: Path | None = None) -> int:
    """Drop entries whose model is gone or now has other files, and leftovers of fetches.

    Call it holding host_lock (ensure_local does), so that no fetch of this host is under way.
    """
    root = root or cache_dir()
    if not root.is_dir():
        return 0
    wanted = {entry_name(model) for model in stored if model.files}
    removed = 0
    for child in root.iterdir():
        if not child.is_dir():
            continue
        if child.name.startswith(TEMP_PREFIX) or child.name not in wanted:
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed


def sweep_cache(stored: Stored) -> int:
    """sweep() under this host's lock, for a periodic task or a command."""
    root = cache_dir()
    if not root.is_dir():
        return 0
    with host_lock(root):
        return sweep(stored(), root)
