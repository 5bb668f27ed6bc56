"""POST /api/v3/img2img and /api/v4/dreambooth/img2img on the demo model, judged by pixels."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from generation.engine.cache import default_cache
from generation.models import Job
from tests.images import noise_image, outputs, png_base64

pytestmark = pytest.mark.django_db(transaction=True)


def body(tenant, **fields):
    return {
        "key": tenant.key,
        # A new request each time: the spam filter refuses the same body within 30 s.
        "track_id": uuid.uuid4().hex,
        "prompt": "a watercolour harbour",
        "init_image": png_base64(noise_image(64, 64)),
        "base64": "no",
        "seed": 5,
        **fields,
    }


def test_it_answers_success_in_the_init_image_size(api, tenant, demo_models, sync_queue):
    status, data = api.post(
        "/api/v3/img2img", body(tenant, init_image=png_base64(noise_image(96, 64)))
    )
    assert status == 200, data
    [image] = outputs(data)
    assert image.shape == (64, 96, 3)
    assert (data["meta"]["W"], data["meta"]["H"], data["meta"]["strength"]) == (96, 64, 0.7)
    assert Job.objects.get().kind == "img2img"


def test_it_reproduces_pixels_and_follows_seed_strength_and_input(
    api, tenant, demo_models, sync_queue
):
    [first] = outputs(api.post("/api/v3/img2img", body(tenant))[1])
    [again] = outputs(api.post("/api/v3/img2img", body(tenant))[1])
    [seed] = outputs(api.post("/api/v3/img2img", body(tenant, seed=6))[1])
    [strength] = outputs(api.post("/api/v3/img2img", body(tenant, strength=0.3))[1])
    other_input = png_base64(noise_image(64, 64, seed=1), data_url=True)
    [source] = outputs(api.post("/api/v3/img2img", body(tenant, init_image=other_input))[1])

    assert np.array_equal(first, again)
    for different in (seed, strength, source):
        assert np.abs(first - different).mean() > 0.3


def test_a_lower_strength_stays_closer_to_the_input(api, tenant, demo_models, sync_queue):
    source = np.asarray(noise_image(64, 64)).astype(np.int16)
    [low] = outputs(api.post("/api/v3/img2img", body(tenant, strength=0.1))[1])
    [high] = outputs(api.post("/api/v3/img2img", body(tenant, strength=0.9))[1])
    assert np.abs(low - source).mean() < np.abs(high - source).mean()


def test_four_samples_are_four_different_images(api, tenant, demo_models, sync_queue):
    images = outputs(api.post("/api/v3/img2img", body(tenant, samples=4))[1])
    assert len(images) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(images[i], images[j])


def test_it_resizes_the_input_to_the_requested_size(api, tenant, demo_models, sync_queue):
    [image] = outputs(api.post("/api/v3/img2img", body(tenant, width=128, height=64))[1])
    assert image.shape == (64, 128, 3)


def test_it_reuses_the_loaded_text2img_weights(api, tenant, demo_models, sync_queue):
    api.post("/api/v3/text2img", {"key": tenant.key, "prompt": "a", "width": 64, "height": 64})
    loads = default_cache.loads
    status, _ = api.post("/api/v3/img2img", body(tenant))
    assert status == 200
    assert default_cache.loads == loads


def test_dreambooth_img2img_needs_a_model_id(api, tenant, demo_models, sync_queue):
    status, data = api.post("/api/v4/dreambooth/img2img", body(tenant))
    assert status == 400
    assert "model_id" in data["message"]
    status, data = api.post("/api/v4/dreambooth/img2img", body(tenant, model_id="demo-sd15"))
    assert status == 200, data
    assert data["status"] == "success"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"init_image": None}, "init_image"),
        ({"init_image": "bm90IGFuIGltYWdl", "base64": "yes"}, "init_image"),
        ({"init_image": "ftp://example.com/a.png"}, "init_image"),
        ({"init_image": "http://127.0.0.1/a.png"}, "init_image"),
        ({"strength": 1.5}, "strength"),
        ({"strength": "NaN"}, "strength"),
        # 21 steps x 0.04 runs no step at all: refused here, not failed in the worker.
        ({"strength": 0.04}, "strength"),
        ({"strength": 0}, "strength"),
        ({"highres_fix": "yes"}, "highres_fix"),
        ({"model_id": "demo-lora-a"}, "model_id"),
        ({"model_id": "demo-sd15-inpaint"}, "model_id"),
    ],
)
def test_it_refuses_bad_input_with_a_400(api, tenant, demo_models, fields, field):
    status, data = api.post("/api/v3/img2img", body(tenant, **fields))
    assert status == 400, data
    assert data["status"] == "error"
    assert field in data["message"]
    assert not Job.objects.exists()


@pytest.fixture
def image_server(settings):
    """A local HTTP server with one PNG, reachable because its network is explicitly allowed."""
    import io
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    buffer = io.BytesIO()
    noise_image(60, 40).save(buffer, format="PNG")
    png = buffer.getvalue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    settings.PICTOR_FETCH_ALLOWED_PORTS = (80, 443, port)
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ("127.0.0.0/8",)
    yield f"http://127.0.0.1:{port}/in.png"
    server.shutdown()


def test_it_fetches_an_init_image_by_url(api, tenant, demo_models, sync_queue, image_server):
    status, data = api.post("/api/v3/img2img", body(tenant, init_image=image_server))
    assert status == 200, data
    [image] = outputs(data)
    # Scaled up to the 64 px minimum, aspect kept, in multiples of 8.
    assert image.shape == (64, 96, 3)


def test_a_url_refused_by_the_fetch_policy_is_a_400(
    api, tenant, demo_models, image_server, settings
):
    settings.PICTOR_FETCH_ALLOWED_NETWORKS = ()
    status, data = api.post("/api/v3/img2img", body(tenant, init_image=image_server))
    assert status == 400
    assert "not allowed" in data["message"]["init_image"][0]
    assert not Job.objects.exists()
