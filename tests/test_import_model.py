"""manage.py import_model: diffusers folders and single-file checkpoints, registered and used."""

from __future__ import annotations

import json
import shutil
import struct
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from generation.models import AIModel
from tests.images import stored_image
from tests.ldm_checkpoint import write_ldm_checkpoint

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="session")
def ldm_file(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo-sd15 as one original-format (A1111 / civitai style) .safetensors checkpoint."""
    return write_ldm_checkpoint(
        models_dir / "demo-sd15", tmp_path_factory.mktemp("ldm") / "demo-single.safetensors"
    )


@pytest.fixture
def models_root(settings: Any, tmp_path: Path, models_dir: Path, media_dir: Path) -> Path:
    """A fresh PICTOR_MODELS_DIR holding a copy of the demo folder as `demo-copy`."""
    root = tmp_path / "models"
    shutil.copytree(models_dir / "demo-sd15", root / "demo-copy")
    settings.PICTOR_MODELS_DIR = root
    return root


def import_model(*args: str, **options: Any) -> str:
    """Run the command; its stdout."""
    out = StringIO()
    call_command("import_model", *args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def generate(api: Any, tenant: Any, model_id: str, seed: int = 42) -> tuple[int, Any]:
    return api.post(
        "/api/v4/dreambooth",
        {
            "key": tenant.key,
            "model_id": model_id,
            "prompt": "a red fox in the snow",
            "width": 64,
            "height": 64,
            "seed": seed,
        },
    )


def output_pixels(data: Any) -> np.ndarray:
    return np.asarray(stored_image(data["output"][0]), dtype=np.int16)


def listed(api: Any, tenant: Any) -> list[str]:
    status, models = api.post("/api/v4/dreambooth/model_list", {"key": tenant.key})
    assert status == 200, models
    return [m["model_id"] for m in models]


def test_it_registers_a_checked_diffusers_folder_that_generates(
    api, tenant, models_root, sync_queue
):
    # The default --check loads it and runs one tiny generation before registering.
    out = import_model(str(models_root / "demo-copy"), name="demo-copy")

    assert out.strip() == "demo-copy sd15"
    model = AIModel.objects.get(model_id="demo-copy")
    assert (model.family, model.base, model.path, model.config_path) == (
        "sd15",
        "sd15",
        "demo-copy",
        "",
    )
    assert model.organization is None and model.enabled and not model.is_default
    assert "demo-copy" in listed(api, tenant)
    status, data = generate(api, tenant, "demo-copy")
    assert status == 200, data
    assert data["status"] == "success"
    assert data["meta"]["model_id"] == "demo-copy"
    assert output_pixels(data).shape == (64, 64, 3)


def test_it_stores_paths_outside_the_models_dir_absolute(models_root, tmp_path):
    outside = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(models_root / "demo-copy", outside)

    out = import_model(str(outside), name="my_model-2", family="sd2", check=False)

    assert out.strip() == "my_model-2 sd2"
    model = AIModel.objects.get(model_id="my_model-2")
    assert (model.path, model.family, model.base) == (str(outside.resolve()), "sd2", "sd2")
    assert model.ref().path == str(outside.resolve())


def test_a_relative_path_is_found_inside_the_models_dir(models_root):
    import_model("demo-copy", name="demo-copy", check=False, description="A copy")

    model = AIModel.objects.get(model_id="demo-copy")
    assert (model.path, model.description) == ("demo-copy", "A copy")
    # Importing again updates the row (here: the description is kept when not given).
    import_model("demo-copy", name="demo-copy", check=False, private_to=None)
    assert AIModel.objects.get(model_id="demo-copy").description == "A copy"
    assert AIModel.objects.count() == 1


def test_private_to_shows_it_to_that_organization_only(api, tenant, outsider, models_root, no_wait):
    import_model(str(models_root / "demo-copy"), name="acme-model", private_to="acme", check=False)

    assert AIModel.objects.get(model_id="acme-model").organization == tenant.org
    assert "acme-model" in listed(api, tenant)
    assert "acme-model" not in listed(api, outsider)
    status, data = generate(api, outsider, "acme-model")
    assert (status, data) == (404, {"status": "error", "message": "Model id not found"})
    status, data = generate(api, tenant, "acme-model")
    assert status == 200, data


def test_default_moves_the_default_flag(demo_model, models_root):
    import_model(str(models_root / "demo-copy"), name="demo-copy", default=True, check=False)

    assert list(AIModel.objects.filter(is_default=True).values_list("model_id", flat=True)) == [
        "demo-copy"
    ]


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (["missing-folder"], {}, "missing-folder does not exist"),
        (["demo-copy"], {"name": "Not a slug!"}, "is not a valid model id"),
        (["demo-copy"], {"private_to": "nobody"}, "No organization with slug 'nobody'"),
        (["demo-copy"], {"family": "sdxl"}, "holds a StableDiffusionPipeline"),
        (["demo-copy/unet"], {}, "no model_index.json"),
        (["demo-copy"], {"family": "controlnet"}, "no config.json"),
        (["demo-copy"], {"family": "lora"}, "holds no .safetensors file"),
        (["demo-copy"], {"default": True, "private_to": "acme"}, "must be a public checkpoint"),
        (["demo-copy/unet/config.json"], {}, "only .safetensors files"),
        (["/dev/null"], {"family": "lora"}, "neither a file nor a folder"),
    ],
)
def test_it_refuses_what_it_cannot_register(tenant, models_root, args, options, message):
    options = {"name": "x", "check": False, **options}
    with pytest.raises(CommandError, match=message):
        import_model(*args, **options)
    assert not AIModel.objects.exists()


def weights_file(path: Path, header: dict[str, Any]) -> Path:
    """A .safetensors file whose header is `header` and that holds no tensor data."""
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"__metadata__": {}}, "holds no tensors"),
        ({"a": 1}, "header is damaged"),
    ],
)
def test_it_refuses_a_weights_file_without_tensors(models_root, header, message):
    lone = weights_file(models_root / "empty.safetensors", header)
    folder = models_root / "empty-lora"
    folder.mkdir()
    weights_file(folder / "pytorch_lora_weights.safetensors", header)

    for path in (lone, folder):
        with pytest.raises(CommandError, match=message):
            import_model(str(path), name="empty", family="lora")
    assert not AIModel.objects.exists()


def uploaded_model(org: Any) -> AIModel:
    """A row as own_models.add_model leaves a tenant's upload: private, in the object store."""
    return AIModel.objects.create(
        model_id="their-lora",
        name="their-lora",
        family="lora",
        organization=org,
        path="pytorch_lora_weights.safetensors",
        storage_prefix=f"models/{org.pk}/their-lora/0123456789abcdef",
        files=[{"name": "pytorch_lora_weights.safetensors", "sha256": "0" * 64, "size": 8}],
        size=8,
    )


def test_it_never_takes_over_a_tenants_uploaded_model(tenant, models_root, models_dir):
    lora = models_dir / "demo-lora-a" / "pytorch_lora_weights.safetensors"
    model = uploaded_model(tenant.org)
    before = AIModel.objects.filter(pk=model.pk).values().get()

    for private_to in (None, "acme"):
        with pytest.raises(CommandError, match="their-lora is a model that acme uploaded"):
            import_model(str(lora), name="their-lora", family="lora", private_to=private_to)
    # Nor does publishing it replace (and delete) the tenant's stored files.
    with pytest.raises(CommandError, match="A tenant's own model"):
        call_command("publish_model", "their-lora", stdout=StringIO())

    assert AIModel.objects.filter(pk=model.pk).values().get() == before


def test_a_private_import_is_imported_again_only_for_its_organization(
    tenant, outsider, models_root
):
    import_model("demo-copy", name="acme-model", private_to="acme", check=False)

    for private_to in (None, "globex"):
        with pytest.raises(CommandError, match="acme-model is private to acme"):
            import_model("demo-copy", name="acme-model", private_to=private_to, check=False)
    assert AIModel.objects.get(model_id="acme-model").organization == tenant.org

    import_model("demo-copy", name="acme-model", private_to="acme", check=False, description="v2")
    model = AIModel.objects.get(model_id="acme-model")
    assert (model.organization, model.description) == (tenant.org, "v2")


def test_a_failed_check_registers_nothing(models_root):
    # A VAE config that does not fit its weights: the load in --check fails.
    broken = models_root / "demo-copy"
    (broken / "vae" / "config.json").write_text(
        (broken / "vae" / "config.json")
        .read_text()
        .replace('"latent_channels": 4', '"latent_channels": 8')
    )
    with pytest.raises(CommandError, match="--check failed, nothing registered"):
        import_model(str(broken), name="broken")
    assert not AIModel.objects.exists()


# Single-file (original LDM layout) checkpoints.


def test_the_test_checkpoint_is_in_the_original_layout(ldm_file):
    from generation.engine.single_file import Detected, detect_family, read_safetensors_shapes

    names = read_safetensors_shapes(str(ldm_file))
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" not in names  # 2 levels only
    assert "model.diffusion_model.output_blocks.1.1.conv.weight" in names  # upsampler
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in names
    assert names["first_stage_model.encoder.mid.attn_1.q.weight"] == [16, 16, 1, 1]
    assert "cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc2.bias" in names
    assert detect_family(str(ldm_file)) == Detected("sd15", "sd15")


def test_detect_family_tells_the_architectures_apart(tmp_path):
    import torch
    from safetensors.torch import save_file

    from generation.engine.single_file import Detected, detect_family

    def family_of(channels: int, text_key: str) -> Detected | None:
        file = tmp_path / "x.safetensors"
        tensors = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, channels, 3, 3)}
        tensors[text_key] = torch.zeros(2)
        save_file(tensors, str(file))
        return detect_family(str(file))

    assert family_of(4, "cond_stage_model.transformer.x") == ("sd15", "sd15")
    assert family_of(9, "cond_stage_model.transformer.x") == ("inpaint", "sd15")
    assert family_of(4, "cond_stage_model.model.x") == ("sd2", "sd2")
    assert family_of(4, "conditioner.embedders.1.model.x") == ("sdxl", "sdxl")
    assert family_of(9, "conditioner.embedders.1.model.x") == ("inpaint", "sdxl")
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    assert detect_family(str(lora)) is None
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        detect_family(str(tmp_path / "junk.safetensors"))


def test_load_single_file_gives_the_folder_models_weights_and_pixels(ldm_file, models_dir):
    import torch
    from diffusers import StableDiffusionPipeline

    from generation.engine.single_file import load_single_file

    folder = str(models_dir / "demo-sd15")
    single = load_single_file(str(ldm_file), "sd15", folder, torch.float32)
    reference = StableDiffusionPipeline.from_pretrained(
        folder, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    assert type(single) is StableDiffusionPipeline
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(single, name).state_dict(), getattr(reference, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    images = [
        pipe(
            "a red fox",
            num_inference_steps=2,
            width=64,
            height=64,
            generator=torch.Generator().manual_seed(3),
        ).images[0]
        for pipe in (single, reference)
    ]
    assert np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_load_single_file_needs_a_local_config_folder(ldm_file, tmp_path):
    import torch

    from generation.engine.single_file import load_single_file

    with pytest.raises(ValueError, match="needs a local diffusers config folder"):
        load_single_file(str(ldm_file), "sd15", "", torch.float32)
    with pytest.raises(ValueError, match="no model_index.json"):
        load_single_file(str(ldm_file), "sd15", str(tmp_path), torch.float32)


def test_a_single_file_checkpoint_generates_the_folder_models_pixels(
    api, tenant, models_root, ldm_file, sync_queue
):
    shutil.copy(ldm_file, models_root / "demo-single.safetensors")
    import_model("demo-copy", name="demo-copy", check=False)

    # The default --check runs the file through the worker's engine before registering it.
    out = import_model(
        str(models_root / "demo-single.safetensors"),
        name="demo-single",
        config=str(models_root / "demo-copy"),
        family="sd15",
    )

    assert out.strip() == "demo-single sd15"
    model = AIModel.objects.get(model_id="demo-single")
    assert (model.path, model.config_path) == ("demo-single.safetensors", "demo-copy")
    assert model.ref().config_path == str(models_root / "demo-copy")
    _, from_folder = generate(api, tenant, "demo-copy", seed=7)
    status, from_file = generate(api, tenant, "demo-single", seed=7)
    assert status == 200, from_file
    assert from_file["status"] == "success", from_file
    assert np.array_equal(output_pixels(from_file), output_pixels(from_folder))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs --config"),
        ({"config": "demo-copy/unet"}, "no model_index.json"),
        ({"config": "demo-copy", "family": "inpaint"}, "is a sd15 checkpoint, not inpaint"),
        ({"config": "demo-copy", "family": "vae"}, "registered as diffusers folders"),
        ({"config": "demo-copy", "base": "sdxl"}, "is a sd15 checkpoint for sd15, not sdxl"),
        ({"config": "demo-copy", "family": "lora"}, "is a sd15 checkpoint, not a lora"),
    ],
)
def test_it_refuses_a_single_file_it_cannot_load(models_root, ldm_file, options, message):
    with pytest.raises(CommandError, match=message):
        import_model(str(ldm_file), name="single", check=False, **options)
    assert not AIModel.objects.exists()
