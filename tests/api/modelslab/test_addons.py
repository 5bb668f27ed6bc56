"""LoRAs, embeddings, VAE, tomesd, enhance_prompt and hires fix through POST /api/v3/text2img."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from generation.engine.prompts import ENHANCE_TERMS
from generation.models import AIModel, Job
from tests.images import outputs

pytestmark = pytest.mark.django_db(transaction=True)


def body(tenant, **fields):
    return {
        "key": tenant.key,
        # A new request each time: the spam filter refuses the same body within 30 s.
        "track_id": uuid.uuid4().hex,
        "prompt": "a castle on a hill",
        "width": 64,
        "height": 64,
        "seed": 21,
        **fields,
    }


def image(api, tenant, **fields) -> np.ndarray:
    status, data = api.post("/api/v3/text2img", body(tenant, **fields))
    assert status == 200, data
    [pixels] = outputs(data)
    return pixels


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return np.abs(a - b).mean() > 0.3


def test_a_lora_changes_pixels_and_leaves_nothing_behind(api, tenant, demo_models, sync_queue):
    before = image(api, tenant)
    with_a = image(api, tenant, lora_model="demo-lora-a")
    with_b = image(api, tenant, lora_model="demo-lora-b")
    after = image(api, tenant)

    assert differ(before, with_a) and differ(before, with_b) and differ(with_a, with_b)
    assert np.array_equal(before, after)


def test_the_prompt_tag_equals_the_lora_fields(api, tenant, demo_models, sync_queue):
    fields = image(api, tenant, lora_model="demo-lora-a", lora_strength="0.6")
    tagged = image(api, tenant, prompt="a castle on a hill <lora:demo-lora-a:0.6>")
    weaker = image(api, tenant, lora_model="demo-lora-a", lora_strength="0.2")
    assert np.array_equal(fields, tagged)
    assert differ(fields, weaker)


def test_several_loras_combine(api, tenant, demo_models, sync_queue):
    a = image(api, tenant, lora_model="demo-lora-a")
    both = image(api, tenant, lora_model="demo-lora-a,demo-lora-b", lora_strength="1,0.8")
    mixed = image(api, tenant, lora_model="demo-lora-a", prompt="a castle <lora:demo-lora-b:0.8>")
    status, data = api.post(
        "/api/v3/text2img",
        body(tenant, lora_model="demo-lora-a, demo-lora-b", lora_strength="1,0.8"),
    )
    assert differ(a, both)
    assert data["meta"]["lora_model"] == "demo-lora-a,demo-lora-b"
    assert data["meta"]["lora_strength"] == "1,0.8"
    assert mixed.shape == both.shape


def test_an_embedding_changes_pixels_and_is_unloaded(api, tenant, demo_models, sync_queue):
    before = image(api, tenant)
    embedded = image(api, tenant, embeddings_model="demo-embedding")
    after = image(api, tenant)
    status, data = api.post("/api/v3/text2img", body(tenant, embeddings_model="demo-embedding"))
    assert differ(before, embedded)
    assert np.array_equal(before, after)
    # The embedding's token is added to the prompt when the prompt does not use it.
    assert data["meta"]["prompt"] == "a castle on a hill, demo-embedding"
    assert data["meta"]["embeddings_model"] == "demo-embedding"


def test_a_vae_override_changes_pixels(api, tenant, demo_models, sync_queue):
    before = image(api, tenant)
    swapped = image(api, tenant, vae="demo-vae")
    after = image(api, tenant)
    assert differ(before, swapped)
    assert np.array_equal(before, after)


def test_tomesd_acts_and_is_removed(api, tenant, demo_models, sync_queue):
    before = image(api, tenant)
    merged = image(api, tenant, tomesd="yes")
    after = image(api, tenant)
    assert not np.array_equal(before, merged)
    assert np.array_equal(before, after)


def test_enhance_prompt_is_deterministic_and_shown(api, tenant, demo_models, sync_queue):
    _, first = api.post("/api/v3/text2img", body(tenant, enhance_prompt="yes"))
    _, again = api.post("/api/v3/text2img", body(tenant, enhance_prompt="yes"))
    plain = image(api, tenant)
    final = first["meta"]["prompt"]
    assert final.startswith("a castle on a hill, ")
    assert all(term in final for term in ENHANCE_TERMS)
    assert first["meta"]["enhance_prompt"] == "yes"
    assert np.array_equal(outputs(first)[0], outputs(again)[0])
    assert differ(outputs(first)[0], plain)


@pytest.mark.parametrize("fields", [{"highres_fix": "yes"}, {"upscale": 2}, {"upscale": "yes"}])
def test_hires_fix_doubles_the_size(api, tenant, demo_models, sync_queue, fields):
    status, data = api.post("/api/v3/text2img", body(tenant, **fields))
    assert status == 200, data
    [pixels] = outputs(data)
    assert pixels.shape == (128, 128, 3)
    assert (data["meta"]["W"], data["meta"]["H"], data["meta"]["upscale"]) == (128, 128, 2)
    # Priced on the output size: 128x128 still costs one credit, as 64x64 does.
    assert data["meta"]["credits"] == 1


def test_hires_fix_is_priced_on_the_output_size(api, tenant, demo_models, no_wait):
    status, data = api.post(
        "/api/v3/text2img", body(tenant, width=512, height=512, highres_fix="yes")
    )
    assert status == 200, data
    # 1024x1024 is four 512x512 tiles.
    assert data["meta"]["credits"] == 4


def test_the_sdxl_model_generates(api, tenant, demo_models, sync_queue):
    status, data = api.post(
        "/api/v4/dreambooth", body(tenant, model_id="demo-sdxl", width=128, height=128, samples=2)
    )
    assert status == 200, data
    images = outputs(data)
    assert [i.shape for i in images] == [(128, 128, 3)] * 2
    assert not np.array_equal(images[0], images[1])


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"lora_model": "no-such-lora"}, "lora_model", "no-such-lora"),
        ({"lora_model": "demo-vae"}, "lora_model", "demo-vae"),
        ({"prompt": "a <lora:ghost:1>"}, "lora_model", "ghost"),
        ({"prompt": "a <lora:demo-lora-a:x>"}, "prompt", "not a number"),
        ({"lora_model": "demo-lora-a", "lora_strength": "1,2"}, "lora_strength", "one per name"),
        ({"lora_model": "demo-lora-a", "lora_strength": "9"}, "lora_strength", "between"),
        ({"lora_model": "demo-lora-a,demo-lora-a"}, "lora_model", "more than once"),
        ({"embeddings_model": "nope"}, "embeddings_model", "nope"),
        ({"vae": "demo-lora-b"}, "vae", "demo-lora-b"),
        ({"upscale": 9}, "upscale", "factor"),
        ({"upscale": 2, "width": 768}, "upscale", "1024"),
        ({"model_id": "demo-sdxl", "lora_model": "demo-lora-a"}, "lora_model", "does not fit"),
    ],
)
def test_it_names_what_it_cannot_use(api, tenant, demo_models, fields, field, words):
    status, data = api.post("/api/v3/text2img", body(tenant, **fields))
    assert status == 400, data
    assert words in data["message"][field][0]
    assert not Job.objects.exists()


def test_another_tenants_private_lora_looks_missing(api, tenant, outsider, demo_models):
    AIModel.objects.filter(model_id="demo-lora-b").update(organization=outsider.org)
    status, data = api.post("/api/v3/text2img", body(tenant, lora_model="demo-lora-b"))
    assert status == 400
    assert "not found" in data["message"]["lora_model"][0]
