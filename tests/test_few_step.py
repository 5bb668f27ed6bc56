"""Few-step (LCM, Turbo, Lightning) checkpoints: their own 1-8 steps, priced by what they run."""

from __future__ import annotations

import base64
import io
import shutil
import uuid
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from PIL import Image

from billing.models import CreditEntry
from generation.engine.pngmeta import read_parameters
from generation.management.commands.build_demo_models import DISTILLED
from generation.models import AIModel, Job
from generation.service import image_cost
from tests.images import noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)

LCM = "demo-sd15-lcm"
SIDE = 64
TXT2IMG = "/sdapi/v1/txt2img"


@pytest.fixture
def lcm_model(demo_models: dict[str, Any]) -> AIModel:
    """demo-sd15-lcm registered as the build command registers it: an LCM checkpoint."""
    model = demo_models[LCM]
    model.distillation = DISTILLED[LCM]
    model.save(update_fields=["distillation"])
    return model


def body(tenant: Any, **fields: Any) -> dict[str, Any]:
    return {
        "key": tenant.key,
        "track_id": uuid.uuid4().hex,
        "prompt": "a lighthouse at dusk",
        "width": SIDE,
        "height": SIDE,
        "seed": 5,
        **fields,
    }


def debit(job_id: int) -> int:
    return -CreditEntry.objects.get(key=f"job:{job_id}:debit").amount


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"webui:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_it_runs_four_steps_on_the_lcm_model_and_charges_for_them(
    api, tenant, lcm_model, sync_queue
):
    status, data = api.post("/api/v6/images/text2img", body(tenant, model_id=LCM, steps=4))
    assert status == 200, data
    assert data["status"] == "success"
    assert data["meta"]["steps"] == 4
    job = Job.objects.get(pk=data["id"])
    assert job.params["steps"] == 4
    assert job.progress_total == 4
    # The default scheduler of an LCM checkpoint is LCM's own.
    assert job.params["scheduler"] == "LCMScheduler"
    assert debit(job.pk) == data["meta"]["credits"] == image_cost(SIDE, SIDE, 4)

    # Priced like a plan-steps job of the same size on a plain model, not above it.
    status, plain = api.post(
        "/api/v6/images/text2img", body(tenant, model_id="demo-sd15", num_inference_steps=21)
    )
    assert status == 200, plain
    assert debit(plain["id"]) == image_cost(SIDE, SIDE, 21) == debit(job.pk)
    status, longer = api.post(
        "/api/v6/images/text2img", body(tenant, model_id="demo-sd15", num_inference_steps=41)
    )
    assert status == 200, longer
    assert debit(longer["id"]) == image_cost(SIDE, SIDE, 41) > debit(job.pk)


def test_a_plain_model_keeps_the_plans_steps_list(api, tenant, lcm_model):
    status, data = api.post("/api/v3/text2img", body(tenant, num_inference_steps=4))
    assert status == 400, data
    assert list(data["message"]) == ["num_inference_steps"]
    assert "21, 31, 41" in data["message"]["num_inference_steps"][0]
    assert not Job.objects.exists()


@pytest.mark.parametrize("steps", [9, 21])
def test_the_lcm_model_refuses_more_than_eight_steps(api, tenant, lcm_model, steps):
    status, data = api.post(
        "/api/v3/text2img", body(tenant, model_id=LCM, num_inference_steps=steps)
    )
    assert status == 400, data
    assert list(data["message"]) == ["num_inference_steps"]
    assert not Job.objects.exists()


@pytest.mark.parametrize("steps", [9, 21, 30])
def test_each_model_answers_its_own_steps_rule(api, tenant, lcm_model, steps):
    """A few-step model's steps message is its 1-8 range, a plain model's the plan's list."""
    status, data = api.post(
        "/api/v3/text2img", body(tenant, model_id=LCM, num_inference_steps=steps)
    )
    assert status == 400, data
    [message] = data["message"]["num_inference_steps"]
    assert "must be between 1 and 8" in message and LCM in message, message
    assert not Job.objects.exists()
    if steps == 21:
        return  # on the plan's list: a plain model takes it
    status, data = api.post(
        "/api/v3/text2img", body(tenant, model_id="demo-sd15", num_inference_steps=steps)
    )
    assert status == 400, data
    [message] = data["message"]["num_inference_steps"]
    assert "must be one of 21, 31, 41" in message, message
    assert not Job.objects.exists()


def test_without_steps_the_lcm_model_runs_its_own_default(api, tenant, lcm_model, no_wait):
    status, data = api.post("/api/v3/text2img", body(tenant, model_id=LCM))
    assert status == 200, data
    job = Job.objects.get(pk=data["id"])
    assert (job.params["steps"], job.params["scheduler"]) == (4, "LCMScheduler")


def test_a_scheduler_the_client_chose_is_kept(api, tenant, lcm_model, no_wait):
    status, data = api.post(
        "/api/v3/text2img",
        body(tenant, model_id=LCM, steps=2, scheduler="EulerDiscreteScheduler"),
    )
    assert status == 200, data
    assert Job.objects.get(pk=data["id"]).params["scheduler"] == "EulerDiscreteScheduler"


def test_a1111_takes_few_steps_on_the_lcm_model_and_refuses_nine(
    api, tenant, lcm_model, sync_queue
):
    lcm = {"override_settings": {"sd_model_checkpoint": LCM}, "sampler_name": "LCM"}
    fields = {"prompt": "a lighthouse", "width": SIDE, "height": SIDE, "seed": 3, **lcm}
    status, data = api.post(TXT2IMG, {**fields, "steps": 4}, **basic(tenant.key))
    assert status == 200, data
    [job] = Job.objects.all()
    assert (job.model.model_id, job.params["steps"], job.progress_total) == (LCM, 4, 4)
    assert debit(job.pk) == image_cost(SIDE, SIDE, 4)

    status, data = api.post(TXT2IMG, {**fields, "steps": 9}, **basic(tenant.key))
    assert status == 400, data
    assert data["detail"].startswith("steps: ")
    assert Job.objects.count() == 1


def test_a1111_keeps_its_own_range_on_a_plain_model(api, tenant, lcm_model, sync_queue):
    status, data = api.post(
        TXT2IMG,
        {"prompt": "a lighthouse", "width": SIDE, "height": SIDE, "steps": 4},
        **basic(tenant.key),
    )
    assert status == 200, data
    assert Job.objects.get().params["steps"] == 4


def test_import_model_sets_and_clears_the_distillation(
    settings, tmp_path: Path, models_dir: Path, media_dir
):
    root = tmp_path / "models"
    shutil.copytree(models_dir / "demo-sd15", root / "fast")
    settings.PICTOR_MODELS_DIR = root
    options = {"stdout": StringIO(), "stderr": StringIO()}
    call_command(
        "import_model", "fast", "--name", "fast", "--distillation", "lcm", "--no-check", **options
    )
    assert AIModel.objects.get(model_id="fast").distillation == "lcm"
    # Importing again without the option keeps it; "none" clears it.
    call_command("import_model", "fast", "--name", "fast", "--no-check", **options)
    assert AIModel.objects.get(model_id="fast").distillation == "lcm"
    call_command(
        "import_model", "fast", "--name", "fast", "--distillation", "none", "--no-check", **options
    )
    assert AIModel.objects.get(model_id="fast").distillation == ""


def test_build_demo_models_registers_the_lcm_demo(settings, models_dir: Path, media_dir):
    settings.PICTOR_MODELS_DIR = models_dir
    call_command("build_demo_models", stdout=StringIO(), stderr=StringIO())
    assert AIModel.objects.get(model_id=LCM).distillation == AIModel.Distillation.LCM
    assert AIModel.objects.get(model_id="demo-sd15").distillation == ""


def openai_steps(data: dict[str, Any]) -> str:
    """The `Steps: N` of the first image's A1111 parameters (b64_json answers)."""
    image = Image.open(io.BytesIO(base64.b64decode(data["data"][0]["b64_json"])))
    [steps] = [part for part in (read_parameters(image) or "").split(", ") if "Steps:" in part]
    return steps.rsplit("Steps: ", 1)[1]


@pytest.mark.parametrize(
    ("quality", "level", "steps"),
    [(None, "medium", 4), ("low", "low", 2), ("auto", "medium", 4), ("high", "high", 8)],
)
def test_openai_quality_picks_the_few_step_models_steps(
    api, tenant, lcm_model, sync_queue, quality, level, steps
):
    fields = {"prompt": "a lighthouse", "size": "64x64", "model": LCM, "quality": quality}
    status, data = api.post(
        "/v1/images/generations",
        {"response_format": "b64_json", **{k: v for k, v in fields.items() if v is not None}},
        Authorization=f"Bearer {tenant.key}",
    )
    assert status == 200, data
    job = Job.objects.get()
    assert (job.params["steps"], job.progress_total, job.params["scheduler"]) == (
        steps,
        steps,
        "LCMScheduler",
    )
    assert openai_steps(data) == str(steps)
    assert data["quality"] == level
    assert data["usage"]["total_tokens"] == debit(job.pk) == image_cost(SIDE, SIDE, steps)


def test_openai_edits_run_more_steps_for_a_higher_quality(client, tenant, lcm_model, sync_queue):
    ran = {}
    for quality in ("low", "hd"):
        buffer = io.BytesIO()
        noise_image(SIDE, SIDE).save(buffer, format="PNG")
        buffer.seek(0)
        buffer.name = "image.png"
        response = client.post(
            "/v1/images/edits",
            data={
                "image": buffer,
                "prompt": f"a stone bridge, {quality}",
                "model": LCM,
                "quality": quality,
                "response_format": "b64_json",
            },
            headers={"Authorization": f"Bearer {tenant.key}"},
        )
        data = response.json()
        assert response.status_code == 200, data
        ran[quality] = (openai_steps(data), data["quality"])
    assert ran == {"low": ("2", "low"), "hd": ("8", "high")}
    assert sorted(job.params["steps"] for job in Job.objects.all()) == [2, 8]


OUTPAINT = "/api/v6/image_editing/outpaint"


def outpaint_body(tenant: Any, **fields: Any) -> dict[str, Any]:
    return {
        "key": tenant.key,
        "track_id": uuid.uuid4().hex,
        "image": png_base64(noise_image(SIDE, SIDE)),
        "left": 16,
        **fields,
    }


@pytest.mark.parametrize("steps", [9, 30])
def test_outpaint_answers_the_few_step_range_on_the_lcm_model(api, tenant, lcm_model, steps):
    status, data = api.post(
        OUTPAINT, outpaint_body(tenant, model_id=LCM, num_inference_steps=steps)
    )
    assert status == 400, data
    [message] = data["message"]["num_inference_steps"]
    assert "must be between 1 and 8" in message and LCM in message, message
    assert not Job.objects.exists()


def test_outpaint_takes_few_steps_on_the_lcm_model_only(api, tenant, lcm_model, no_wait):
    status, data = api.post(OUTPAINT, outpaint_body(tenant, model_id=LCM, num_inference_steps=6))
    assert status == 200, data
    assert Job.objects.get().params["steps"] == 6
    status, data = api.post(
        OUTPAINT, outpaint_body(tenant, model_id="demo-sd15", num_inference_steps=6)
    )
    assert status == 400, data
    [message] = data["message"]["num_inference_steps"]
    assert "must be one of 21, 31, 41" in message, message
    assert Job.objects.count() == 1


@pytest.mark.parametrize("karras", ["yes", True, "1"])
def test_karras_sigmas_without_a_scheduler_are_refused_on_the_lcm_model(
    api, tenant, lcm_model, karras
):
    status, data = api.post(
        "/api/v3/text2img", body(tenant, model_id=LCM, steps=4, use_karras_sigmas=karras)
    )
    assert status == 400, data
    [message] = data["message"]["use_karras_sigmas"]
    assert "LCMScheduler" in message and "name a scheduler" in message, message
    assert not Job.objects.exists()


def test_karras_sigmas_with_a_named_scheduler_run_on_the_lcm_model(api, tenant, lcm_model, no_wait):
    status, data = api.post(
        "/api/v3/text2img",
        body(
            tenant,
            model_id=LCM,
            steps=4,
            use_karras_sigmas="yes",
            scheduler="DPMSolverMultistepScheduler",
        ),
    )
    assert status == 200, data
    params = Job.objects.get().params
    assert (params["scheduler"], params["use_karras_sigmas"]) == (
        "DPMSolverMultistepScheduler",
        True,
    )
    # "no" is the default: the LCM model still runs its own scheduler.
    status, data = api.post(
        "/api/v3/text2img", body(tenant, model_id=LCM, steps=4, use_karras_sigmas="no")
    )
    assert status == 200, data
    assert Job.objects.get(pk=data["id"]).params["scheduler"] == "LCMScheduler"
