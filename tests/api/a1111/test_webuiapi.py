"""The `webuiapi` client (what people script webui with) against a live Pictor server.

Its img2img sends every field with its own defaults, among them `inpaint_full_res: true`
("only masked"), `mask_blur: 4` and `inpainting_fill: 0`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np
import pytest
import webuiapi
from PIL import Image

from generation.models import Job
from tests.images import noise_image

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client_api(live_server, tenant, demo_models, sync_queue) -> webuiapi.WebUIApi:
    """webuiapi on the live server, the key as the --api-auth password."""
    address = urlsplit(live_server.url)
    return webuiapi.WebUIApi(
        host=address.hostname, port=address.port, username="webui", password=tenant.key
    )


def test_webuiapi_inpaints_with_its_defaults(client_api, tenant):
    init = noise_image(192, 192, seed=11)
    mask = Image.new("L", init.size, 0)
    mask.paste(255, (120, 40, 160, 80))

    result = client_api.img2img(
        images=[init], mask_image=mask, inpainting_fill=0, prompt="a red kite", seed=3
    )

    # "Only masked": painted at the client's default 512 × 512, answered at the init's size.
    assert result.image.size == init.size
    painted = np.asarray(result.image.convert("RGB")).astype(int)
    original = np.asarray(init).astype(int)
    assert np.abs(painted[40:80, 120:160] - original[40:80, 120:160]).mean() > 10
    assert np.array_equal(painted[:, :100], original[:, :100])
    assert result.info["seed"] == 3
    assert result.parameters["inpaint_full_res"] is True
    job = Job.objects.get()
    assert (job.kind, job.status, job.params["inpaint_full_res"]) == ("inpaint", "success", True)
    assert (job.params["width"], job.params["height"]) == (512, 512)


def test_webuiapi_gets_webuis_error_for_a_refused_setting(client_api):
    init = noise_image(64, 64)
    mask = Image.new("L", init.size, 255)

    with pytest.raises(RuntimeError) as refused:
        client_api.img2img(images=[init], mask_image=mask, inpainting_fill=2, prompt="x")

    status, text = refused.value.args
    assert status == 400
    assert '"error":"ValidationError"' in text.replace(" ", "")
    assert "inpainting_fill" in text
