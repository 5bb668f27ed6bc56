"""Every endpoint that takes an id or a model name from a request is scoped to the caller.

Three tenants: the owner and a member of one organization, and an outsider. Another tenant's
job, private checkpoint or private add-on must answer exactly like one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from accounts.models import ApiKey, Membership, User
from generation.models import Job
from tests.helpers import make_tenant, private_copy
from tests.images import centre_mask, noise_image, png_base64

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Caller:
    key: str
    user: Any
    org: Any


@pytest.fixture
def three(db: None) -> dict[str, Caller]:
    """owner and member of acme (each with a key of their own), and outsider of globex."""
    acme = make_tenant("acme")
    globex = make_tenant("globex")
    callers = {}
    for name, tenant, role in (
        ("owner", acme, Membership.Role.OWNER),
        ("member", acme, Membership.Role.MEMBER),
        ("outsider", globex, Membership.Role.OWNER),
    ):
        user = User.objects.create_user(f"{name}@example.com", "pw-123456789")
        Membership.objects.create(user=user, organization=tenant.org, role=role)
        _, key = ApiKey.objects.issue(tenant.org, name=name)
        callers[name] = Caller(key, user, tenant.org)
    return callers


IMAGE = png_base64(noise_image(64, 64))
MASK = png_base64(centre_mask(64, 64))
# (endpoint, body, the field naming the private thing)
PRIVATE_USES = [
    ("/api/v3/text2img", {"model_id": "{private}"}, "model_id"),
    ("/api/v4/dreambooth", {"model_id": "{private}"}, "model_id"),
    ("/api/v3/img2img", {"model_id": "{private}", "init_image": IMAGE}, "model_id"),
    ("/api/v4/dreambooth/img2img", {"model_id": "{private}", "init_image": IMAGE}, "model_id"),
    (
        "/api/v3/inpaint",
        {"model_id": "{private}", "init_image": IMAGE, "mask_image": MASK},
        "model_id",
    ),
    (
        "/api/v4/dreambooth/inpaint",
        {"model_id": "{private}", "init_image": IMAGE, "mask_image": MASK},
        "model_id",
    ),
    (
        "/api/v5/controlnet",
        {"model_id": "{private}", "controlnet_model": "demo-controlnet-canny", "init_image": IMAGE},
        "model_id",
    ),
    ("/api/v3/text2img", {"lora_model": "{private}"}, "lora_model"),
    ("/api/v3/text2img", {"prompt": "a <lora:{private}:1>"}, "lora_model"),
    ("/api/v3/text2img", {"embeddings_model": "{private}"}, "embeddings_model"),
    ("/api/v3/text2img", {"vae": "{private}"}, "vae"),
    (
        "/api/v5/controlnet",
        {"controlnet_model": "{private}", "init_image": IMAGE},
        "controlnet_model",
    ),
    (
        "/api/v6/image_editing/super_resolution",
        {"model_id": "{private}", "init_image": IMAGE},
        "model_id",
    ),
]
PRIVATE_SOURCE = {
    "model_id": "demo-sd15",
    "lora_model": "demo-lora-a",
    "embeddings_model": "demo-embedding",
    "vae": "demo-vae",
    "controlnet_model": "demo-controlnet-canny",
}


def fill(body: dict, name: str) -> dict:
    return {k: v.replace("{private}", name) if isinstance(v, str) else v for k, v in body.items()}


@pytest.mark.parametrize(("path", "fields", "field"), PRIVATE_USES)
def test_a_private_model_is_invisible_to_other_tenants(
    api, three, demo_models, no_wait, path, fields, field
):
    source = "demo-upscaler-x4" if "super_resolution" in path else PRIVATE_SOURCE[field]
    private = private_copy(source, three["owner"].org)
    # The generating endpoints' fields; the upscaler takes only its image (and refuses them).
    base = (
        {} if "super_resolution" in path else {"prompt": "a lighthouse", "width": 64, "height": 64}
    )

    answers = {}
    for name in ("owner", "member", "outsider"):
        # owner and member are one organization: the same body twice in 30 s would be spam.
        body = {"key": three[name].key, "track_id": name, **base, **fill(fields, private)}
        answers[name] = api.post(path, body)
    missing = api.post(
        path, {"key": three["outsider"].key, **base, **fill(fields, "no-such-model")}
    )

    assert answers["owner"][0] == answers["member"][0] == 200, answers
    assert answers["outsider"][0] == missing[0] in (400, 404)
    # Word for word the answer for a name that does not exist, with the name swapped.
    assert str(answers["outsider"][1]).replace(private, "X") == str(missing[1]).replace(
        "no-such-model", "X"
    )
    assert Job.objects.filter(organization=three["outsider"].org).count() == 0


def test_model_list_shows_private_models_to_their_tenant_only(api, three, demo_models):
    private = private_copy("demo-sd15", three["owner"].org)
    seen = {
        name: {m["model_id"] for m in api.post("/api/v4/dreambooth/model_list", {"key": c.key})[1]}
        for name, c in three.items()
    }
    assert private in seen["owner"] and private in seen["member"]
    assert private not in seen["outsider"]
    assert seen["outsider"] == seen["owner"] - {private}


@pytest.mark.parametrize("path", ["/api/v3/fetch/{}", "/api/v4/dreambooth/fetch/{}"])
def test_a_job_is_fetched_by_its_organization_only(api, three, demo_models, no_wait, path):
    _, data = api.post(
        "/api/v3/text2img",
        {"key": three["owner"].key, "prompt": "a boat", "width": 64, "height": 64},
    )
    job_id = data["id"]
    for name in ("owner", "member"):
        status, mine = api.post(path.format(job_id), {"key": three[name].key})
        assert (status, mine["id"]) == (200, job_id)
    theirs = api.post(path.format(job_id), {"key": three["outsider"].key})
    missing = api.post(path.format(job_id + 999), {"key": three["outsider"].key})
    assert theirs == missing == (404, {"status": "error", "message": "Request not found"})
