"""manage.py import_model <path> --name <id> [--family …] [--config <folder>] [--private-to <org>]

Registers a model that is already on this host's disk: a diffusers folder, or an original-format
(A1111 / civitai) `.safetensors` checkpoint with a local diffusers folder for its configs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from accounts.models import Organization
from generation import own_models
from generation.engine import single_file
from generation.engine.pipelines import FAMILIES_BY_CLASS, FAMILY_BY_MODEL_CLASS
from generation.engine.request import GenerationRequest, ModelRef
from generation.models import AIModel

Family = AIModel.Family
Base = AIModel.Base

# A diffusers pipeline folder's model_index.json `_class_name` -> the families it can be, and a
# single-model folder's config.json `_class_name` -> its family: the engine's own class tables.
PIPELINE_FAMILIES = FAMILIES_BY_CLASS
PIPELINE_FOLDER_FAMILIES = (*AIModel.CHECKPOINTS, Family.UPSCALER)
MODEL_FAMILIES = FAMILY_BY_MODEL_CLASS
# Add-ons that are one weights file, alone or in a folder (as generation.engine.addons finds it).
FILE_ADDONS = (Family.LORA, Family.EMBEDDING)
# --distillation's values: "none" stands for the blank choice (a plain checkpoint).
DISTILLATION_CHOICES = ["none", *(v for v in AIModel.Distillation.values if v)]
# OpenCLIP ViT-H, SD 2.x's text encoder, is 1024 wide; SD 1.x's CLIP ViT-L is 768.
SD2_TEXT_WIDTH = 1024
# What --check asks each family to do: one step at 64x64 (the upscaler: 16x16 up to 64x64).
CHECK_KINDS: dict[str, str] = {
    Family.SD15: "text2img",
    Family.SD2: "text2img",
    Family.SDXL: "text2img",
    Family.INPAINT: "inpaint",
    Family.UPSCALER: "upscale",
}
CHECK_SIZE = 64


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError(f"Cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CommandError(f"{path} is not a JSON object")
    return data


def _text_base(folder: Path) -> str:
    """sd2 when the folder's text encoder is OpenCLIP-wide, else sd15."""
    config = folder / "text_encoder" / "config.json"
    if config.is_file() and _read_json(config).get("hidden_size") == SD2_TEXT_WIDTH:
        return Base.SD2
    return Base.SD15


def check_weights(path: Path) -> None:
    """Refuse a .safetensors file that is damaged or holds no tensors, as tenants' uploads are."""
    try:
        own_models.safetensors_header(path)
    except (OSError, ValueError) as exc:
        raise CommandError(f"{path}: {exc}") from None


def check_owner(model: AIModel | None, organization: Organization | None) -> None:
    """Refuse to register over an organization's model, unless it is an operator's import
    private to that same organization: a tenant's upload stays theirs, in its storage."""
    if model is None or model.organization is None:
        return
    owner = model.organization.slug
    if model.storage_prefix:
        raise CommandError(
            f"{model.model_id} is a model that {owner} uploaded; it stays theirs, in the object "
            "store (choose another --name)"
        )
    if organization is None or organization.pk != model.organization_id:
        raise CommandError(
            f"{model.model_id} is private to {owner}; import it with --private-to {owner}, or "
            "choose another --name"
        )


def pipeline_folder(folder: Path) -> tuple[str, tuple[str, ...], str]:
    """(pipeline class, the families it can be, base) of a diffusers pipeline folder."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise CommandError(f"{folder} is not a diffusers pipeline folder (no model_index.json)")
    class_name = _read_json(index).get("_class_name", "")
    families = PIPELINE_FAMILIES.get(class_name)
    if families is None:
        known = ", ".join(PIPELINE_FAMILIES)
        raise CommandError(
            f"{folder} holds a {class_name or 'unnamed'} pipeline; Pictor runs {known}"
        )
    base = Base.SDXL if "XL" in class_name else _text_base(folder)
    return class_name, families, base


def pipeline_folder_kind(folder: Path, family: str | None) -> tuple[str, str]:
    """(family, base) of a diffusers pipeline folder, checked against a requested family."""
    class_name, families, base = pipeline_folder(folder)
    if family is None:
        family = Family.SD2 if families[0] == Family.SD15 and base == Base.SD2 else families[0]
    elif family not in families:
        raise CommandError(
            f"{folder} holds a {class_name} (family {'/'.join(families)}), not a {family} model"
        )
    if family in (Family.SD15, Family.SD2):
        # The user's word settles SD 1 vs 2 (a text encoder's width is only a hint).
        base = family
    return family, base


class Command(BaseCommand):
    help = (
        "Register a model on this host's disk: a diffusers folder, or a single .safetensors "
        "checkpoint with --config. Prints the model id and family."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The folder or .safetensors file (absolute, or relative)")
        parser.add_argument("--name", required=True, help="The model id clients send (a slug)")
        parser.add_argument("--family", choices=Family.values, help="Default: inferred")
        parser.add_argument(
            "--base",
            choices=Base.values,
            help="Architecture, for matching add-ons (default: inferred; sd15 for add-ons)",
        )
        parser.add_argument(
            "--config",
            help="For a single-file checkpoint: a local diffusers folder with its configs",
        )
        parser.add_argument("--private-to", metavar="ORG", help="Only this organization sees it")
        parser.add_argument(
            "--default", action="store_true", help="Make it the default model for everyone"
        )
        parser.add_argument("--description", help="Shown in the admin and model lists")
        parser.add_argument(
            "--distillation",
            choices=DISTILLATION_CHOICES,
            help="A few-step checkpoint (lcm, turbo, lightning) takes 1 to 8 steps; none for "
            "a plain one (default: kept, or none for a new model)",
        )
        parser.add_argument(
            "--check",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Load it and run a 1-step 64x64 generation before registering "
            "(default: on for checkpoints; --no-check on a host without the weights' runtime)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        model_id = options["name"]
        try:
            validate_slug(model_id)
        except ValidationError:
            raise CommandError(
                f"--name {model_id!r} is not a valid model id: use letters, digits, - and _"
            ) from None
        limit = AIModel._meta.get_field("model_id").max_length  # set on the model: never None
        if limit is not None and len(model_id) > limit:
            raise CommandError(f"--name {model_id!r} is too long")

        organization = None
        if options["private_to"]:
            organization = Organization.objects.filter(slug=options["private_to"]).first()
            if organization is None:
                raise CommandError(f"No organization with slug {options['private_to']!r}")
        # Checked again under the row lock (_register); here before a --check loads anything.
        check_owner(AIModel.objects.filter(model_id=model_id).first(), organization)

        path = self._existing(options["path"])
        config = self._existing(options["config"]) if options["config"] else None
        family, base = self._kind(path, options["family"], config)
        checkpoint = family in AIModel.CHECKPOINTS
        if checkpoint and options["base"] and options["base"] != base:
            raise CommandError(
                f"{path.name} is a {family} checkpoint for {base}, not {options['base']}"
            )
        base = options["base"] or base
        if options["distillation"] not in (None, "none") and not checkpoint:
            raise CommandError("--distillation is for checkpoints (sd15, sd2, sdxl, inpaint)")
        if options["default"] and (not checkpoint or organization is not None):
            raise CommandError("--default must be a public checkpoint (sd15, sd2, sdxl, inpaint)")

        ref = ModelRef(
            model_id=model_id,
            path=str(path),
            family=family,
            base=base,
            config_path=str(config) if config else "",
        )
        check = options["check"]
        if check is None:
            check = checkpoint
        if check:
            if family not in CHECK_KINDS:
                raise CommandError(
                    f"--check loads checkpoints and upscalers; a {family} model is checked when "
                    "a request uses it (pass --no-check)"
                )
            self._check(ref)

        self._register(ref, organization, options)
        self.stderr.write(
            f"{model_id}: {family} (base {base}) at {ref.path}"
            + (f", configs from {ref.config_path}" if ref.config_path else "")
            + (f", private to {organization.slug}" if organization else "")
        )
        self.stdout.write(f"{model_id} {family}")

    def _existing(self, given: str) -> Path:
        """An existing path: as given (absolute or relative to here), else inside the models dir."""
        path = Path(given).expanduser()
        if not path.exists() and not path.is_absolute():
            path = Path(settings.PICTOR_MODELS_DIR) / given
        if not path.exists():
            raise CommandError(f"{given} does not exist")
        return path.resolve()

    def _kind(self, path: Path, family: str | None, config: Path | None) -> tuple[str, str]:
        """(family, base) of the model at path, refusing a path of the wrong shape."""
        if path.is_file():
            return self._file_kind(path, family, config)
        if not path.is_dir():
            raise CommandError(f"{path} is neither a file nor a folder")
        if config is not None:
            raise CommandError("--config is for a single-file checkpoint; this is a folder")
        if family in FILE_ADDONS:
            weights = [p for p in path.iterdir() if p.suffix == ".safetensors"]
            if not weights:
                raise CommandError(f"{path} holds no .safetensors file for a {family}")
            for file in weights:
                check_weights(file)
            return family, Base.SD15
        if family is None and not (path / "model_index.json").is_file():
            config_json = path / "config.json"
            if config_json.is_file():
                class_name = _read_json(config_json).get("_class_name", "")
                if class_name in MODEL_FAMILIES:
                    family = MODEL_FAMILIES[class_name]
        if family is not None and family in MODEL_FAMILIES.values():
            config_json = path / "config.json"
            if not config_json.is_file():
                raise CommandError(f"{path} is not a diffusers {family} folder (no config.json)")
            class_name = _read_json(config_json).get("_class_name", "")
            expected = next(name for name, fam in MODEL_FAMILIES.items() if fam == family)
            if class_name != expected:
                raise CommandError(f"{path} holds a {class_name or 'unnamed'}, not a {expected}")
            return family, Base.SD15
        return pipeline_folder_kind(path, family)

    def _file_kind(self, path: Path, family: str | None, config: Path | None) -> tuple[str, str]:
        if path.suffix != ".safetensors":
            raise CommandError(
                f"{path.name}: only .safetensors files are loaded (a .ckpt is a pickle that can "
                "run code); convert it first"
            )
        check_weights(path)
        try:
            detected = single_file.detect_family(str(path))
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if family in FILE_ADDONS:
            if detected is not None:
                raise CommandError(f"{path.name} is a {detected.family} checkpoint, not a {family}")
            return family, Base.SD15
        if family is not None and family not in AIModel.CHECKPOINTS:
            raise CommandError(f"{family} models are registered as diffusers folders, not files")
        if detected is None:
            raise CommandError(
                f"{path.name} is not an original-format Stable Diffusion checkpoint "
                "(no model.diffusion_model.* UNet with a known text encoder); for a LoRA or an "
                "embedding pass --family"
            )
        if family is not None and family != detected.family:
            raise CommandError(f"{path.name} is a {detected.family} checkpoint, not {family}")
        if config is None:
            raise CommandError(
                "A single-file checkpoint needs --config: a local diffusers folder of the same "
                "architecture (model_index.json, component configs, tokenizer; no weights needed)"
            )
        if not config.is_dir():
            raise CommandError(f"--config {config} is not a folder")
        class_name, families, config_base = pipeline_folder(config)
        if detected.family not in families or config_base != detected.base:
            raise CommandError(
                f"--config {config} holds a {class_name} for {config_base}; {path.name} is a "
                f"{detected.family} checkpoint for {detected.base}"
            )
        return detected.family, detected.base

    def _check(self, ref: ModelRef) -> None:
        """Load the model on this host and run one tiny generation, or refuse to register it."""
        from PIL import Image

        from generation.engine import runner
        from generation.engine.cache import PipelineCache

        kind = CHECK_KINDS[ref.family]
        side = CHECK_SIZE // 4 if kind == "upscale" else CHECK_SIZE
        gray = Image.new("RGB", (side, side), (128, 128, 128))
        images = {"init_image": gray}
        if kind == "inpaint":
            mask = Image.new("L", (side, side), 0)
            mask.paste(255, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
            images["mask_image"] = mask
        req = GenerationRequest(
            prompt="a lighthouse on a cliff",
            model_id=ref.model_id,
            width=CHECK_SIZE,
            height=CHECK_SIZE,
            steps=1,
            seed=0,
            safety_checker=False,
            kind=kind,
            init_image="check" if kind != "text2img" else "",
            mask_image="check" if kind == "inpaint" else "",
            scale=4,
        )
        self.stderr.write(f"{ref.model_id}: checking ({kind}, 1 step) …")
        started = time.monotonic()
        cache = PipelineCache(max_models=1)
        try:
            result = runner.generate(req, ref, images=images, cache=cache)
        except Exception as exc:  # anything a broken model raises: report it, register nothing
            raise CommandError(
                f"--check failed, nothing registered: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            cache.clear()  # this process may go on running (tests, a shell): free the weights
        image = result.images[0]
        if image.size != (CHECK_SIZE, CHECK_SIZE):
            raise CommandError(f"--check made a {image.size} image instead of 64x64")
        # NaNs (wrong weights, an fp16 overflow) decode to one flat colour.
        if all(low == high for low, high in image.getextrema()):
            raise CommandError("--check made a single-colour image: the weights do not fit")
        self.stderr.write(f"{ref.model_id}: check passed in {time.monotonic() - started:.1f} s")

    def _register(
        self, ref: ModelRef, organization: Organization | None, options: dict[str, Any]
    ) -> None:
        fields: dict[str, Any] = {
            "name": ref.model_id,
            "family": ref.family,
            "base": ref.base,
            "path": _stored(ref.path),
            "config_path": _stored(ref.config_path) if ref.config_path else "",
            "organization": organization,
            "enabled": True,
        }
        if options["description"] is not None:
            fields["description"] = options["description"]
        if options["distillation"] is not None:
            given = options["distillation"]
            fields["distillation"] = "" if given == "none" else given
        try:
            with transaction.atomic():
                existing = AIModel.objects.select_for_update().filter(model_id=ref.model_id).first()
                check_owner(existing, organization)
                if organization is not None and existing is not None and existing.is_default:
                    raise CommandError(f"{ref.model_id} is the default model; it cannot be private")
                if options["default"]:
                    # One default at a time (a unique constraint): clear the old one first.
                    AIModel.objects.filter(is_default=True).exclude(model_id=ref.model_id).update(
                        is_default=False
                    )
                    fields["is_default"] = True
                if existing is None:
                    AIModel.objects.create(model_id=ref.model_id, **fields)
                else:
                    for name, value in fields.items():
                        setattr(existing, name, value)
                    existing.save()
        except IntegrityError:
            # Not update_or_create: on this clash it would update the row a tenant just added.
            raise CommandError(
                f"{ref.model_id} changed while this ran; nothing registered, run it again"
            ) from None


def _stored(path: str) -> str:
    """path relative to PICTOR_MODELS_DIR when inside it (so the folder can move), else absolute."""
    models_dir = Path(settings.PICTOR_MODELS_DIR).resolve()
    try:
        return str(Path(path).relative_to(models_dir))
    except ValueError:
        return path
