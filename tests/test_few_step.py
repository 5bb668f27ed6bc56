"""Few-step (LCM, Turbo, Lightning) checkpoints: their own 1-8 steps, priced by what they run."""

from __future__ import annotations

import base64
import shutil
import uuid
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from billing.models import CreditEntry
from generation.management.commands.build_demo_models import DISTILLED
from generation.models import AIModel, Job
from generation.service import image_cost

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


def test_openai_runs_the_few_step_default_whatever_the_quality(api, tenant, lcm_model, queued_only):
    status, data = api.post(
        "/v1/images/generations",
        {"prompt": "a lighthouse", "size": "64x64", "quality": "high", "model": LCM},
        Authorization=f"Bearer {tenant.key}",
    )
    assert status == 504, data
    job = Job.objects.get()
    assert (job.params["steps"], job.params["scheduler"]) == (4, "LCMScheduler")
