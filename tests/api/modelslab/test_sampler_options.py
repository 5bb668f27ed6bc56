"""An A1111 sampler name as `scheduler` fixes the algorithm and sigmas: a body saying otherwise
is a 400 naming the field, never a silently different sampler."""

from __future__ import annotations

import uuid

import pytest

from generation.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def body(tenant, **fields):
    return {
        "key": tenant.key,
        "track_id": uuid.uuid4().hex,
        "prompt": "a lighthouse at dusk",
        "width": 64,
        "height": 64,
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"scheduler": "DPM++ 2M", "algorithm_type": "dpmsolver+++"}, "algorithm_type"),
        ({"scheduler": "DPM++ 2M Karras", "algorithm_type": "dpmsolver+++"}, "algorithm_type"),
        ({"scheduler": "DPM++ 2M Karras", "use_karras_sigmas": "no"}, "use_karras_sigmas"),
        ({"scheduler": "DPM2 a Karras", "use_karras_sigmas": False}, "use_karras_sigmas"),
        ({"scheduler": "DPM++ 2M SDE Karras", "use_karras_sigmas": "no"}, "use_karras_sigmas"),
    ],
)
def test_a_contradicting_option_is_a_400_naming_it(api, tenant, demo_model, fields, field):
    status, data = api.post("/api/v3/text2img", body(tenant, **fields))
    assert status == 400, data
    assert list(data["message"]) == [field], data
    assert not Job.objects.exists()


def test_the_name_of_the_sampler_that_fits_is_suggested(api, tenant, demo_model):
    fields = {"scheduler": "DPM++ 2M", "algorithm_type": "dpmsolver+++"}
    status, data = api.post("/api/v3/text2img", body(tenant, **fields))
    assert status == 400, data
    assert "'DPM++ 2M SDE'" in data["message"]["algorithm_type"][0]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # The same choice said twice, or options the name leaves open, are taken.
        (
            {"scheduler": "DPM++ 2M SDE", "algorithm_type": "dpmsolver+++"},
            ("DPMSolverMultistepScheduler", False, "sde-dpmsolver++"),
        ),
        (
            {"scheduler": "DPM++ 2M", "algorithm_type": "none"},
            ("DPMSolverMultistepScheduler", False, "dpmsolver++"),
        ),
        (
            {"scheduler": "DPM++ 2M Karras", "use_karras_sigmas": "yes"},
            ("DPMSolverMultistepScheduler", True, "dpmsolver++"),
        ),
        (
            {"scheduler": "DPM++ 2M", "use_karras_sigmas": "yes"},
            ("DPMSolverMultistepScheduler", True, "dpmsolver++"),
        ),
        (
            {"scheduler": "Euler", "use_karras_sigmas": "no"},
            ("EulerDiscreteScheduler", False, "none"),
        ),
    ],
)
def test_an_option_that_agrees_with_the_name_is_taken(
    api, tenant, demo_model, no_wait, fields, expected
):
    status, data = api.post("/api/v3/text2img", body(tenant, **fields))
    assert status == 200, data
    p = Job.objects.get(pk=data["id"]).params
    assert (p["scheduler"], p["use_karras_sigmas"], p["algorithm_type"]) == expected
