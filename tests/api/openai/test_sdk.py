"""The official `openai` SDK, pointed at a live Pictor with base_url: the test of the format."""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
import requests
from PIL import Image

from billing import ledger
from generation.models import Job
from tests.images import noise_image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Django's threaded test server closes every connection after each request, in the request's
    # thread; the shared in-memory SQLite connection refuses that close (a DatabaseError in a
    # thread that has already answered). Answers themselves are checked below.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]
SIZE = 64


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def sdk(live_server, tenant, demo_model, sync_queue) -> openai.OpenAI:
    # No retries: a retried submit would be a second job (and a refused duplicate).
    return openai.OpenAI(api_key=tenant.key, base_url=live_server.url + "/v1", max_retries=0)


def test_the_sdk_lists_and_retrieves_models(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert "demo-sd15" in ids and "dall-e-3" in ids
    model = sdk.models.retrieve("demo-sd15")
    assert (model.id, model.object, model.owned_by) == ("demo-sd15", "model", "pictor")
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


def test_the_sdk_generates_links_and_base64(sdk, tenant):
    before = ledger.balance(tenant.org)
    answer = sdk.images.generate(model="dall-e-2", prompt="a red fox", size="64x64", user="u-1")
    [image] = answer.data
    assert image.revised_prompt == "a red fox" and image.b64_json is None
    png = requests.get(image.url, timeout=30)
    assert png.status_code == 200
    assert Image.open(io.BytesIO(png.content)).size == (SIZE, SIZE)
    job = Job.objects.get()
    assert (job.track_id, answer.usage.total_tokens) == ("u-1", job.cost)
    assert ledger.balance(tenant.org) == before - job.cost

    answer = sdk.images.generate(
        model="gpt-image-1",
        prompt="a red fox in snow",
        size="64x64",
        n=2,
        quality="low",
        response_format="b64_json",
        output_format="webp",
        output_compression=80,
    )
    assert (answer.output_format, answer.quality, answer.size) == ("webp", "low", "64x64")
    formats = [Image.open(io.BytesIO(base64.b64decode(i.b64_json))).format for i in answer.data]
    assert formats == ["WEBP", "WEBP"]


def test_the_sdk_edits_with_a_mask_and_varies(sdk):
    source = noise_image(SIZE, SIZE)
    mask = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))
    answer = sdk.images.edit(
        image=("photo.png", png_bytes(source), "image/png"),
        mask=("mask.png", png_bytes(mask), "image/png"),
        prompt="a stone bridge",
        response_format="b64_json",
    )
    edited = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json))).convert("RGB")
    assert edited.size == (SIZE, SIZE)
    # The opaque corner is kept (up to rounding), the transparent centre repainted.
    after, before = (np.asarray(i).astype(np.int16) for i in (edited, source))
    assert np.abs(after[:4, :4] - before[:4, :4]).max() <= 2
    assert np.abs(after[28:36, 28:36] - before[28:36, 28:36]).mean() > 20
    assert Job.objects.get().kind == "inpaint"

    answer = sdk.images.create_variation(image=("photo.png", png_bytes(source), "image/png"))
    assert answer.data[0].url and answer.data[0].revised_prompt is None


def test_the_sdk_raises_its_own_errors(sdk, tenant):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(prompt="a fox", size="1792x1024")
    assert (caught.value.code, caught.value.param) == ("invalid_value", "size")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(prompt="a fox", size="64x64", background="transparent")
    assert caught.value.param == "background"
    tenant.org.__class__.objects.filter(pk=tenant.org.pk).update(credit_balance=0)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.images.generate(prompt="a fox", size="64x64")
    assert caught.value.code == "insufficient_quota"
    wrong = openai.OpenAI(api_key="pct_" + "x" * 40, base_url=str(sdk.base_url), max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.code == "invalid_api_key"
