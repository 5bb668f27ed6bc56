"""The ControlNet extension's units on /sdapi/v1/txt2img and its lists (a1111/controlnet.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid

import cv2
import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from generation.models import Job
from tests.images import outputs, png_base64, shapes_image

pytestmark = pytest.mark.django_db(transaction=True)

TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
CANNY = "demo-controlnet-canny"
# The same job on both formats: 64 px, 21 steps (a step count every plan's list has), Euler a.
SETTINGS = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "seed": 3, "steps": 21}


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"webui:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def list_name(model_id: str) -> str:
    return f"{model_id} [{hashlib.sha256(model_id.encode()).hexdigest()[:8]}]"


def unit(**fields) -> dict:
    """A canny unit as webuiapi's ControlNetUnit.to_dict() sends it, fields overridden."""
    return {
        "image": png_base64(shapes_image(64, 64, variant=0)),
        "mask": None,
        "module": "canny",
        "model": list_name(CANNY),
        "weight": 1.0,
        "resize_mode": "Just Resize",
        "low_vram": False,
        "processor_res": 512,
        "threshold_a": 100,
        "threshold_b": 200,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "control_mode": "Balanced",
        "pixel_perfect": True,
        "hr_option": "Both",
        "enabled": True,
        **fields,
    }


def txt2img(api, tenant, *units, path=TXT2IMG, **fields):
    # A comment of its own: the spam filter refuses the same body twice within 30 s.
    body = {**SETTINGS, "comments": {"test": uuid.uuid4().hex}, **fields}
    if units:
        body["alwayson_scripts"] = {"controlnet": {"args": list(units)}}
    return api.post(path, body, **basic(tenant.key))


def image_of(api, tenant, *units, **fields) -> np.ndarray:
    status, data = txt2img(api, tenant, *units, **fields)
    assert status == 200, data
    [image] = data["images"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB")).astype(
        np.int16
    )


def test_a_canny_unit_guides_the_image_as_the_modelslab_controlnet_does(
    api, tenant, demo_models, sync_queue
):
    guided = image_of(api, tenant, unit())
    job = Job.objects.get()
    assert (job.kind, job.params["controlnet_model"]) == ("controlnet", CANNY)
    assert job.params["controlnet_type"] == "canny"

    # The extension's canny (on RGB, thresholds 100/200) as a ready map on /api/v5/controlnet.
    shapes = np.asarray(shapes_image(64, 64, variant=0))
    edges = Image.fromarray(np.stack([cv2.Canny(shapes, 100, 200)] * 3, axis=-1))
    status, data = api.post(
        "/api/v5/controlnet",
        {
            "key": tenant.key,
            **SETTINGS,
            "guidance_scale": 7,
            "scheduler": "EulerAncestralDiscreteScheduler",
            "controlnet_model": CANNY,
            "control_image": png_base64(edges),
        },
    )
    assert status == 200, data
    [modelslab] = outputs(data)
    assert np.abs(guided - modelslab).max() <= 1


def test_the_unit_its_weight_and_guidance_window_act(api, tenant, demo_models, sync_queue):
    # Few steps: five generations, each a ControlNet run on the CPU.
    few = {"steps": 6}
    plain = image_of(api, tenant, **few)
    full = image_of(api, tenant, unit(), **few)
    off = image_of(api, tenant, unit(weight=0), **few)
    late = image_of(api, tenant, unit(guidance_start=0.5), **few)
    disabled = unit(enabled=False, module="depth_midas", image="")
    ignored = image_of(api, tenant, disabled, **few)
    assert np.abs(full - plain).mean() > 0.3
    assert np.abs(full - off).mean() > 0.3
    assert np.abs(full - late).mean() > 0.3
    # With the ControlNet's residuals scaled to zero it is plain txt2img.
    assert np.abs(off - plain).max() <= 1
    # A disabled unit is not read: the plain image, no ControlNet job.
    assert np.array_equal(plain, ignored)
    kinds = list(Job.objects.order_by("pk").values_list("kind", flat=True))
    assert kinds == ["text2img", "controlnet", "controlnet", "controlnet", "text2img"]
    params = [j.params for j in Job.objects.filter(kind="controlnet").order_by("pk")]
    assert [p["controlnet_conditioning_scale"] for p in params] == [1.0, 0.0, 1.0]
    assert [p["control_guidance_start"] for p in params] == [0.0, 0.0, 0.5]


def test_a_script_entry_without_units_runs_nothing(api, tenant, demo_models, queued_only):
    # webuiapi sends {"args": []} when it has no unit: nothing runs, nothing is refused.
    status, _ = txt2img(api, tenant, alwayson_scripts={"ControlNet": {"args": []}})
    assert status == 504
    # Nor a disabled unit, as webuiapi sends one without an image.
    status, _ = txt2img(api, tenant, unit(enabled=False, image="", model="None"))
    assert status == 504
    assert list(Job.objects.values_list("kind", flat=True)) == ["text2img", "text2img"]


def stored_map(job: Job) -> Image.Image:
    with default_storage.open(job.params["control_image"], "rb") as stored:
        return Image.open(io.BytesIO(stored.read())).convert("RGB")


@pytest.mark.parametrize(
    "name", [list_name(CANNY), CANNY, f"{CANNY} [d14c016b]", f"{CANNY.upper()}.safetensors"]
)
def test_the_model_is_found_by_its_listed_name_with_or_without_the_hash(
    api, tenant, demo_models, queued_only, name
):
    status, data = txt2img(api, tenant, unit(model=name))
    assert status == 504, data
    job = Job.objects.get()
    assert (job.kind, job.params["controlnet_model"]) == ("controlnet", CANNY)


@pytest.mark.parametrize("mode", ["Just Resize", "Crop and Resize", "Resize and Fill", 1, 2])
@pytest.mark.parametrize("pixel_perfect", [True, False])
def test_the_control_map_is_made_at_the_output_size(
    api, tenant, demo_models, queued_only, mode, pixel_perfect
):
    wide = png_base64(shapes_image(160, 80, variant=1))
    status, _ = txt2img(
        api,
        tenant,
        unit(image=wide, resize_mode=mode, pixel_perfect=pixel_perfect, processor_res=-1),
        width=64,
        height=96,
    )
    assert status == 504
    control = np.asarray(stored_map(Job.objects.get()))
    assert control.shape == (96, 64, 3)
    assert control.max() == 255  # edges were found


def test_a_ready_map_is_used_as_sent_with_module_none(api, tenant, demo_models, queued_only):
    hint = shapes_image(64, 64, variant=2)
    status, _ = txt2img(api, tenant, unit(module="none", image={"image": png_base64(hint)}))
    assert status == 504
    job = Job.objects.get()
    assert np.array_equal(np.asarray(stored_map(job)), np.asarray(hint))


def five_units():
    return [unit(), unit(enabled=False), unit(), unit(), unit(), unit()]


REFUSED = [
    # (unit fields, status, the field the error names)
    ({"module": "depth_midas"}, 400, "alwayson_scripts.controlnet.args[0].module"),
    (
        {"model": "control_v11p_sd15_depth [cafebabe]"},
        400,
        "alwayson_scripts.controlnet.args[0].model",
    ),
    ({"model": "demo-lora-a"}, 400, "alwayson_scripts.controlnet.args[0].model"),
    ({"model": "None"}, 422, "alwayson_scripts.controlnet.args[0].model"),
    (
        {"control_mode": "My prompt is more important"},
        400,
        "alwayson_scripts.controlnet.args[0].control_mode",
    ),
    ({"control_mode": 7}, 422, "alwayson_scripts.controlnet.args[0].control_mode"),
    (
        {"guidance_start": 0.8, "guidance_end": 0.2},
        422,
        "alwayson_scripts.controlnet.args[0].guidance_end",
    ),
    ({"guidance_end": 1.5}, 422, "alwayson_scripts.controlnet.args[0].guidance_end"),
    ({"weight": 3}, 422, "alwayson_scripts.controlnet.args[0].weight"),
    ({"weight": "nan"}, 422, "alwayson_scripts.controlnet.args[0].weight"),
    ({"threshold_a": 300}, 422, "alwayson_scripts.controlnet.args[0].threshold_a"),
    ({"threshold_b": 0}, 422, "alwayson_scripts.controlnet.args[0].threshold_b"),
    ({"processor_res": 10}, 422, "alwayson_scripts.controlnet.args[0].processor_res"),
    ({"resize_mode": "Stretch"}, 422, "alwayson_scripts.controlnet.args[0].resize_mode"),
    ({"image": None}, 422, "alwayson_scripts.controlnet.args[0].image"),
    ({"image": ""}, 422, "alwayson_scripts.controlnet.args[0].image"),
    ({"image": "not an image"}, 400, "alwayson_scripts.controlnet.args[0].image"),
    (
        {
            "image": {
                "image": png_base64(shapes_image(64, 64)),
                "mask": png_base64(shapes_image(64, 64)),
            }
        },
        400,
        "alwayson_scripts.controlnet.args[0].mask",
    ),
    (
        {"advanced_weighting": [1.0] * 13},
        400,
        "alwayson_scripts.controlnet.args[0].advanced_weighting",
    ),
]


@pytest.mark.parametrize(("fields", "status", "field"), REFUSED)
def test_a_unit_that_cannot_run_is_refused_naming_its_field(
    api, tenant, demo_models, fields, status, field
):
    answer_status, data = txt2img(api, tenant, unit(**fields))
    assert answer_status == status, data
    assert_names(data, status, field)
    assert Job.objects.count() == 0


def assert_names(data: dict, status: int, field: str) -> None:
    if status == 422:
        assert [e["loc"] for e in data["detail"]] == [["body", *field.split(".")]], data
    else:
        assert set(data) == {"error", "detail", "body", "errors"}
        assert data["detail"].startswith(f"{field}: "), data


def test_at_most_four_enabled_units_per_job(api, tenant, demo_models):
    status, data = txt2img(api, tenant, *five_units())
    assert status == 400
    assert_names(data, 400, "alwayson_scripts.controlnet.args[5]")
    assert "At most 4 enabled ControlNet units" in data["detail"]


def test_a_unit_with_the_hires_fix_is_refused(api, tenant, demo_models):
    status, data = txt2img(api, tenant, unit(), enable_hr=True, hr_scale=2)
    assert status == 400
    assert_names(data, 400, "alwayson_scripts.controlnet.args[0]")
    # Another extension's script with arguments is still refused, by its name.
    status, data = txt2img(
        api, tenant, alwayson_scripts={"ADetailer": {"args": [True, {"ad_model": "face"}]}}
    )
    assert status == 400
    assert_names(data, 400, "alwayson_scripts.ADetailer")
    assert Job.objects.count() == 0


def test_a_controlnet_for_another_architecture_is_refused(api, tenant, demo_models):
    status, data = txt2img(
        api, tenant, unit(), override_settings={"sd_model_checkpoint": "demo-sdxl"}
    )
    assert status == 400
    assert data["detail"].startswith("alwayson_scripts.controlnet.args[0].model: "), data


def test_the_extension_lists(api, tenant, demo_models, outsider):
    status, data = api.get("/controlnet/model_list", **basic(tenant.key))
    nets = [f"demo-controlnet-{name}" for name in ("canny", "inpaint", "shuffle", "tile")]
    assert (status, data) == (200, {"model_list": [list_name(n) for n in nets]})
    status, data = api.get("/controlnet/module_list?alias_names=true", **basic(tenant.key))
    assert status == 200
    assert data["module_list"] == ["none", "canny", "tile_resample", "shuffle", "inpaint_only"]
    sliders = data["module_detail"]["canny"]["sliders"]
    assert [s["name"] for s in sliders] == ["Resolution", "Low Threshold", "High Threshold"]
    assert api.get("/controlnet/version", **basic(tenant.key)) == (200, {"version": 3})
    status, data = api.get("/controlnet/model_list")
    assert status == 401


def test_the_webuiapi_client_runs_a_controlnet_unit(live_server, tenant, demo_models, sync_queue):
    import webuiapi

    client = webuiapi.WebUIApi(
        baseurl=f"{live_server.url}/sdapi/v1", username="webui", password=tenant.key
    )
    name = list_name(CANNY)
    assert name in client.controlnet_model_list()
    assert "canny" in client.controlnet_module_list()
    cn = webuiapi.ControlNetUnit(
        image=shapes_image(64, 64, variant=0),
        module="canny",
        model=name,
        threshold_a=100,
        threshold_b=200,
        pixel_perfect=True,
    )
    settings = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "seed": 3, "steps": 6}
    result = client.txt2img(**settings, controlnet_units=[cn])
    assert result.image.size == (64, 64)
    job = Job.objects.get()
    assert (job.kind, job.params["controlnet_model"], job.status) == (
        "controlnet",
        CANNY,
        "success",
    )
    control = np.asarray(stored_map(job))
    expected = cv2.Canny(np.asarray(shapes_image(64, 64, variant=0)), 100, 200)
    assert np.array_equal(control[:, :, 0], expected)
    with pytest.raises(RuntimeError) as refused:
        client.txt2img(**settings, controlnet_units=[cn] * 5)
    assert refused.value.args[0] == 400
    assert "alwayson_scripts.ControlNet.args[4]" in refused.value.args[1]
