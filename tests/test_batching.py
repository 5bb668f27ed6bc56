"""Batching across requests: one diffusers call for compatible queued jobs, each job its own."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from billing.models import CreditEntry, Plan
from generation import batching, inputs, jobs, service
from generation.engine import batch, runner
from generation.engine.request import ControlNetUnit, GenerationRequest
from generation.models import AIModel, Job, WebhookDelivery
from generation.tasks import claim_next_job, run_next_job
from tests.helpers import make_tenant
from tests.images import centre_mask, noise_image, shapes_image

pytestmark = pytest.mark.django_db(transaction=True)

BASE = GenerationRequest(prompt="a", model_id="demo-sd15", width=64, height=64, steps=21)
# Three jobs unlike in prompts, seeds and sample counts (one weighted, one with a negative).
VARIED = (
    replace(BASE, prompt="a lighthouse at dusk", seed=11, samples=1),
    replace(BASE, prompt="a (red:1.3) car, [blurry]", negative_prompt="rain", seed=7, samples=2),
    replace(BASE, prompt="a cat on a sofa", seed=123456, samples=1),
)


def submit_all(tenant, demo_model, requests, kind="text2img"):
    return [service.submit(req, tenant.org, demo_model, kind=kind) for req in requests]


def stored_pngs(job: Job) -> list[bytes]:
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESS, job.error
    paths = job.outputs.order_by("index").values_list("path", flat=True)
    return [default_storage.open(path).read() for path in paths]


def alone_then_batched(tenant, model, requests, settings, monkeypatch, kind="text2img"):
    """Run `requests` one job at a time, then again as one batch.

    Each batched job's stored PNGs must be byte for byte its lone twin's, and the batch one
    shared call: one task runs them all, and nothing in it falls back to running alone.
    """
    settings.PICTOR_MAX_BATCH_IMAGES = 1
    alone = submit_all(tenant, model, requests, kind)
    for _ in alone:
        run_next_job()
    settings.PICTOR_MAX_BATCH_IMAGES = 8
    batched = submit_all(tenant, model, requests, kind)
    alone_calls = []
    monkeypatch.setattr(runner, "generate", lambda *a, **k: alone_calls.append(a))
    run_next_job()
    assert alone_calls == []
    for one, other in zip(alone, batched, strict=True):
        assert stored_pngs(other) == stored_pngs(one)
    assert [len(stored_pngs(job)) for job in batched] == [req.samples for req in requests]
    assert len({job.worker for job in Job.objects.filter(pk__in=[j.pk for j in batched])}) == 1


def test_a_batch_gives_every_image_the_bytes_it_gets_alone(
    tenant, demo_model, settings, monkeypatch
):
    alone_then_batched(tenant, demo_model, VARIED, settings, monkeypatch)


def test_an_sdxl_batch_gives_every_image_the_bytes_it_gets_alone(
    tenant, demo_models, settings, monkeypatch
):
    # Two text encoders and pooled embeddings per request; a weighted prompt among them.
    varied = [replace(req, model_id="demo-sdxl", steps=8) for req in VARIED]
    alone_then_batched(tenant, demo_models["demo-sdxl"], varied, settings, monkeypatch)


def test_a_batch_without_guidance_gives_every_image_the_bytes_it_gets_alone(
    tenant, demo_model, settings, monkeypatch
):
    # Without classifier-free guidance a one-sample job's lone UNet runs on one row.
    varied = [replace(req, guidance_scale=1.0, steps=8) for req in VARIED]
    alone_then_batched(tenant, demo_model, varied, settings, monkeypatch)


@pytest.mark.parametrize("model_id", ["demo-sd15", "demo-sdxl"])
def test_an_img2img_batch_gives_every_image_the_bytes_it_gets_alone(
    tenant, demo_models, settings, monkeypatch, model_id
):
    # Each job its own picture (of another size: each is resized as its lone run resizes it).
    def with_picture(req, seed):
        picture = inputs.store_image(noise_image(48 + 8 * seed, 64, seed), tenant.org.pk, "init")
        return replace(req, model_id=model_id, kind="img2img", init_image=picture, strength=0.6)

    varied = [with_picture(replace(req, steps=8), n) for n, req in enumerate(VARIED)]
    model = demo_models[model_id]
    alone_then_batched(tenant, model, varied, settings, monkeypatch, kind="img2img")


def corner_mask(width: int, height: int) -> Image.Image:
    """White (repaint) in a small box near the top-left corner, black (keep) elsewhere."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (4, 6, width // 3, height // 4))
    return mask


def inpainting(tenant, req, n, mask=centre_mask, **options):
    """`req` as an inpaint of its own picture (of its own size) through `mask`."""
    size = (48 + 8 * n, 64)
    picture = inputs.store_image(noise_image(*size, n), tenant.org.pk, "init")
    masked = inputs.store_image(mask(*size), tenant.org.pk, "mask")
    return replace(
        req, kind="inpaint", init_image=picture, mask_image=masked, strength=0.75, **options
    )


@pytest.mark.parametrize("only_masked", [False, True], ids=["whole", "only-masked"])
@pytest.mark.parametrize("model_id", ["demo-sd15", "demo-sdxl", "demo-sd15-inpaint"])
def test_an_inpaint_batch_gives_every_image_the_bytes_it_gets_alone(
    tenant, demo_models, settings, monkeypatch, model_id, only_masked
):
    # Each job its own picture and mask (one a small corner box, so "only masked" crops each
    # elsewhere), pasted back into its own picture; demo-sd15-inpaint's UNet takes 9 channels.
    masks = (centre_mask, corner_mask, centre_mask)
    varied = [
        inpainting(
            tenant,
            replace(req, model_id=model_id, steps=8, samples=1),
            n,
            masks[n],
            inpaint_full_res=only_masked,
            inpaint_padding=4 * only_masked,
        )
        for n, req in enumerate(VARIED)
    ]
    model = demo_models[model_id]
    alone_then_batched(tenant, model, varied, settings, monkeypatch, kind="inpaint")


def test_an_inpaint_of_several_samples_runs_alone(tenant, demo_model, settings):
    # Alone it encodes its one picture with its first sample's generator: no batch does that.
    settings.PICTOR_MAX_BATCH_IMAGES = 8
    one, two = (inpainting(tenant, replace(BASE, samples=n), n) for n in (1, 2))
    leader, several, single, last = submit_all(tenant, demo_model, [one, two, one, two], "inpaint")
    assert claim_next_job().pk == leader.pk
    companions = batching.claim_companions(Job.objects.get(pk=leader.pk))
    assert [job.pk for job in companions] == [single.pk]
    assert claim_next_job().pk == several.pk
    assert batching.claim_companions(Job.objects.get(pk=several.pk)) == []
    assert Job.objects.get(pk=last.pk).status == Job.Status.QUEUED


# Where each ControlNet job's map comes from: its own control image, or computed from its own
# init image (an "inpaint" ControlNet masks either with the job's mask).
MAP_SOURCES = (("control_image",), ("init_image",), ("control_image", "init_image"))


def controlling(tenant, req, n, net="canny", sources=("control_image",), **options):
    """`req` as a one-ControlNet text2img job of `net` whose map comes from `sources`."""
    stored = {
        name: inputs.store_image(shapes_image(48 + 8 * n, 64, n + 3 * i), tenant.org.pk, name)
        for i, name in enumerate(sources)
    }
    if net == "inpaint":
        stored["mask_image"] = inputs.store_image(
            centre_mask(48 + 8 * n, 64), tenant.org.pk, "mask"
        )
    return replace(
        req,
        kind="controlnet",
        controlnet_model=f"demo-controlnet-{net}",
        controlnet_type=net,
        **stored,
        **options,
    )


# A canny ControlNet for demo-sdxl, built by sdxl_controlnet (not a demo model: see its doc).
SDXL_CONTROLNET = "test-controlnet-sdxl-canny"


@pytest.fixture(scope="module")
def sdxl_controlnet_dir(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ControlNet for demo-sdxl, made from its UNet as demo_addons makes demo-sd15's ones."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(models_dir / "demo-sdxl", subfolder="unet")
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16, 16))
    seeded = torch.Generator().manual_seed(4)
    with torch.no_grad():
        # As demo_addons._write_controlnet: a gain of 2 per conditioning conv keeps the map near
        # unit scale, and the zero convolutions get seeded noise so the ControlNet acts.
        for conv in net.controlnet_cond_embedding.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(0.0, 2.0 / math.sqrt(conv.weight[0].numel()), generator=seeded)
                conv.bias.zero_()
        zero_convs = [block.weight for block in net.controlnet_down_blocks]
        for weight in [*zero_convs, net.controlnet_mid_block.weight]:
            weight.normal_(0.0, 0.3, generator=seeded)
    folder = tmp_path_factory.mktemp("sdxl-controlnet")
    net.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture
def sdxl_controlnet(demo_models: dict, sdxl_controlnet_dir: Path) -> AIModel:
    """The SDXL ControlNet registered as an add-on for demo-sdxl.

    Built here rather than among the demo models (demo.py, build_demo_models), which other
    tests and the docs list.
    """
    return AIModel.objects.create(
        model_id=SDXL_CONTROLNET,
        name=SDXL_CONTROLNET,
        family=AIModel.Family.CONTROLNET,
        base=AIModel.Base.SDXL,
        path=str(sdxl_controlnet_dir),
        description="ControlNet for demo-sdxl, random weights (tests only)",
    )


def sdxl_controlling(tenant, req, n, sources=("control_image",), **options):
    """`req` as a one-ControlNet canny text2img job on demo-sdxl, of the SDXL ControlNet."""
    job = controlling(tenant, replace(req, model_id="demo-sdxl"), n, "canny", sources, **options)
    return replace(job, controlnet_model=SDXL_CONTROLNET)


def test_an_sdxl_controlnet_job_changes_the_image(tenant, demo_models, sdxl_controlnet, settings):
    # The lone path first: the ControlNet acts on demo-sdxl (its map computed from the picture).
    settings.PICTOR_MAX_BATCH_IMAGES = 1
    plain = replace(BASE, model_id="demo-sdxl", steps=8, seed=5)
    controlled = sdxl_controlling(tenant, plain, 0, sources=("init_image",))
    model = demo_models["demo-sdxl"]
    plain_job = service.submit(plain, tenant.org, model, kind="text2img")
    controlled_job = service.submit(controlled, tenant.org, model, kind="controlnet")
    run_next_job()
    run_next_job()
    assert stored_pngs(controlled_job) != stored_pngs(plain_job)


GUESS_MODE = {"guess_mode": True, "controlnet_conditioning_scale": 0.7}


@pytest.mark.parametrize(
    ("model_id", "net", "options"),
    [
        ("demo-sd15", "canny", {}),
        ("demo-sd15", "canny", GUESS_MODE),
        ("demo-sd15", "shuffle", {"control_guidance_start": 0.2, "control_guidance_end": 0.8}),
        ("demo-sd15", "inpaint", {}),
        # Pooled embeddings and SDXL's time ids reach the ControlNet too.
        ("demo-sdxl", "canny", {}),
        ("demo-sdxl", "canny", GUESS_MODE),
    ],
    ids=["canny", "canny-guess-mode", "shuffle-window", "inpaint", "sdxl", "sdxl-guess-mode"],
)
def test_a_controlnet_batch_gives_every_image_the_bytes_it_gets_alone(
    tenant, demo_models, sdxl_controlnet, settings, monkeypatch, model_id, net, options
):
    # Each job its own map: one its control image, one computed from its init image (a shuffle
    # map drawn with its own seed), one with both (the control image wins); one of 2 samples.
    def job(req, n):
        req = replace(req, steps=8)
        if model_id == "demo-sdxl":
            return sdxl_controlling(tenant, req, n, MAP_SOURCES[n], **options)
        return controlling(tenant, req, n, net, MAP_SOURCES[n], **options)

    varied = [job(req, n) for n, req in enumerate(VARIED)]
    assert all(batch.batchable(req) for req in varied)
    model = demo_models[model_id]
    alone_then_batched(tenant, model, varied, settings, monkeypatch, kind="controlnet")


@pytest.mark.parametrize(
    ("kind", "model_id"),
    [
        ("controlnet-img2img", "demo-sd15"),
        ("controlnet-inpaint", "demo-sd15"),
        ("controlnet-inpaint", "demo-sd15-inpaint"),
        ("controlnet-img2img", "demo-sdxl"),
        ("controlnet-inpaint", "demo-sdxl"),
    ],
)
def test_a_controlnet_img2img_or_inpaint_batch_gives_every_image_the_bytes_it_gets_alone(
    tenant, demo_models, sdxl_controlnet, settings, monkeypatch, kind, model_id
):
    # Each job its own picture (and mask); the first its own control image too, the others'
    # maps computed from their pictures (an inpaint's as prepared).
    def job(req, n):
        if kind == "controlnet-inpaint":
            req = inpainting(tenant, replace(req, samples=1), n)
        else:
            picture = inputs.store_image(noise_image(48 + 8 * n, 64, n), tenant.org.pk, "init")
            req = replace(req, init_image=picture, strength=0.6)
        net = SDXL_CONTROLNET if model_id == "demo-sdxl" else "demo-controlnet-canny"
        hint = shapes_image(64, 64, n)
        own = {"control_image": inputs.store_image(hint, tenant.org.pk, "hint")} if n == 0 else {}
        return replace(
            req,
            model_id=model_id,
            kind=kind,
            steps=8,
            controlnet_model=net,
            controlnet_type="canny",
            **own,
        )

    varied = [job(req, n) for n, req in enumerate(VARIED)]
    assert all(batch.batchable(req) for req in varied)
    # As a plain inpaint, a ControlNet inpaint of several samples runs alone.
    assert batch.batchable(replace(varied[0], samples=2)) == (kind == "controlnet-img2img")
    alone_then_batched(tenant, demo_models[model_id], varied, settings, monkeypatch, kind=kind)


def test_only_controlnet_jobs_that_share_the_call_join(tenant, demo_models, settings):
    settings.PICTOR_MAX_BATCH_IMAGES = 16
    leader = controlling(tenant, BASE, 0)
    queued = submit_all(
        tenant,
        demo_models["demo-sd15"],
        [
            leader,
            replace(leader, controlnet_model="demo-controlnet-tile"),
            replace(leader, controlnet_type="tile"),
            replace(leader, controlnet_conditioning_scale=0.5),
            replace(leader, control_guidance_start=0.1),
            replace(leader, control_guidance_end=0.9),
            replace(leader, guess_mode=True),
            controlling(tenant, replace(BASE, seed=4, prompt="b", samples=2), 1),  # joins
            controlling(tenant, replace(BASE, seed=5), 2, sources=("init_image",)),  # joins
        ],
        "controlnet",
    )
    companions = batching.claim_companions(claim_next_job())
    assert [job.pk for job in companions] == [queued[-2].pk, queued[-1].pk]


def test_a_job_of_several_controlnets_runs_alone(tenant, demo_models, settings):
    # Its call would take a list of maps per ControlNet, each unit's image its own field.
    settings.PICTOR_MAX_BATCH_IMAGES = 8
    unit = ControlNetUnit(model="demo-controlnet-tile", type="tile")
    several = replace(
        controlling(tenant, BASE, 0, sources=("init_image",)), controlnet_units=(unit,)
    )
    assert not batch.batchable(several)
    leader, twin = submit_all(
        tenant, demo_models["demo-sd15"], [several, replace(several, seed=9)], "controlnet"
    )
    assert claim_next_job().pk == leader.pk
    assert batching.claim_companions(Job.objects.get(pk=leader.pk)) == []
    assert Job.objects.get(pk=twin.pk).status == Job.Status.QUEUED


def test_controlnet_jobs_on_an_sdxl_inpainting_checkpoint_claim_no_companions(
    tenant, demo_models, sdxl_controlnet, settings
):
    # No test checkpoint proves their batch (batch.KIND_FAMILIES): their calls run one by one,
    # so companions would only wait. The row is never run, only claimed.
    settings.PICTOR_MAX_BATCH_IMAGES = 8
    model = AIModel.objects.create(
        model_id="sdxl-inpainting",
        name="sdxl-inpainting",
        family=AIModel.Family.INPAINT,
        base=AIModel.Base.SDXL,
        path="demo-sdxl",
    )
    leader = replace(
        inpainting(tenant, replace(BASE, model_id="sdxl-inpainting"), 0),
        kind="controlnet-inpaint",
        controlnet_model=SDXL_CONTROLNET,
        controlnet_type="canny",
    )
    first, twin = submit_all(tenant, model, [leader, replace(leader, seed=9)], "controlnet-inpaint")
    assert batch.batchable(leader)
    assert claim_next_job().pk == first.pk
    assert batching.claim_companions(Job.objects.get(pk=first.pk)) == []
    assert Job.objects.get(pk=twin.pk).status == Job.Status.QUEUED


def test_a_batch_is_bounded_by_its_image_count(tenant, demo_model, settings):
    settings.PICTOR_MAX_BATCH_IMAGES = 3
    queued = submit_all(tenant, demo_model, VARIED)  # 1 + 2 + 1 images
    leader = claim_next_job()
    companions = batching.claim_companions(leader)
    assert [job.pk for job in companions] == [queued[1].pk]
    assert Job.objects.get(pk=queued[2].pk).status == Job.Status.QUEUED


def test_batching_off_claims_no_companion(tenant, demo_model, settings):
    settings.PICTOR_MAX_BATCH_IMAGES = 1
    submit_all(tenant, demo_model, VARIED)
    assert batching.claim_companions(claim_next_job()) == []


def test_a_lone_job_pays_one_read_of_the_queue_for_batching(
    tenant, demo_model, settings, django_assert_num_queries
):
    # What batching costs a job with nobody to share its call: no transaction (its BEGIN is a
    # query here), no lookup of tenants or running jobs.
    settings.PICTOR_MAX_BATCH_IMAGES = 4
    submit_all(tenant, demo_model, [BASE])
    leader = claim_next_job()
    assert leader.model == demo_model  # read for the job's run in any case
    with django_assert_num_queries(1):
        assert batching.claim_companions(leader) == []


def test_only_jobs_that_share_the_call_join(tenant, demo_model, settings):
    settings.PICTOR_MAX_BATCH_IMAGES = 8
    leader_job, *others = submit_all(
        tenant,
        demo_model,
        [
            BASE,
            replace(BASE, width=128),  # another size
            replace(BASE, steps=31),
            replace(BASE, scheduler="EulerDiscreteScheduler"),
            replace(BASE, guidance_scale=5.0),
            replace(BASE, safety_checker=False),
            replace(BASE, tiling=True),
            replace(BASE, seed=99, prompt="another prompt", samples=2),  # joins
        ],
    )
    companions = batching.claim_companions(claim_next_job())
    assert [job.pk for job in companions] == [others[-1].pk]


def test_a_batch_never_passes_a_higher_priority_job_it_cannot_include(demo_model, settings):
    settings.PICTOR_MAX_BATCH_IMAGES = 8
    top = make_tenant("top", "enterprise")  # priority 3
    middle = make_tenant("middle", "premium")  # priority 2
    low = make_tenant("low", "basic")  # priority 1
    leader = service.submit(BASE, top.org, demo_model)
    same_level = service.submit(replace(BASE, width=128), top.org, demo_model)
    younger_same_level = service.submit(replace(BASE, seed=5), top.org, demo_model)
    blocker = service.submit(replace(BASE, width=128), middle.org, demo_model)
    below_blocker = service.submit(replace(BASE, seed=6), low.org, demo_model)
    assert claim_next_job().pk == leader.pk
    # Within the leader's priority a younger job may pass an older one it cannot include...
    assert [j.pk for j in batching.claim_companions(Job.objects.get(pk=leader.pk))] == [
        younger_same_level.pk
    ]
    # ...but nothing below a level that keeps a job out is taken past it.
    for job in (same_level, blocker, below_blocker):
        assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED


def test_a_batch_keeps_to_each_tenants_concurrent_jobs(demo_model, settings):
    settings.PICTOR_MAX_BATCH_IMAGES = 16
    Plan.objects.filter(slug="basic").update(concurrent_jobs=2)
    basic = make_tenant("b", "basic")
    queued = [service.submit(replace(BASE, seed=s), basic.org, demo_model) for s in range(4)]
    leader = claim_next_job()
    companions = batching.claim_companions(leader)
    assert [leader.pk] + [j.pk for j in companions] == [queued[0].pk, queued[1].pk]
    running = Job.objects.filter(organization=basic.org, status=Job.Status.PROCESSING).count()
    assert running == 2


def test_a_tenant_at_its_limit_neither_joins_nor_blocks(demo_model, settings):
    settings.PICTOR_MAX_BATCH_IMAGES = 16
    premium = make_tenant("p", "premium")  # priority 2
    free = make_tenant("f", "free")  # priority 0, one job at a time
    basic = make_tenant("b", "basic")  # priority 1
    busy = service.submit(replace(BASE, width=128), free.org, demo_model)
    assert claim_next_job().pk == busy.pk  # the free tenant's only slot is taken
    leader = service.submit(BASE, premium.org, demo_model)
    waiting = service.submit(replace(BASE, width=128), free.org, demo_model)
    joins = service.submit(replace(BASE, seed=3), basic.org, demo_model)
    assert claim_next_job().pk == leader.pk
    companions = batching.claim_companions(Job.objects.get(pk=leader.pk))
    assert [j.pk for j in companions] == [joins.pk]
    assert Job.objects.get(pk=waiting.pk).status == Job.Status.QUEUED


def refunded(job: Job) -> bool:
    return CreditEntry.objects.filter(job_id=job.pk, kind=CreditEntry.Kind.REFUND).exists()


def test_a_job_canceled_mid_batch_ends_alone(tenant, demo_model, settings, monkeypatch):
    import generation.tasks as tasks
    from generation.engine import runner

    settings.PICTOR_MAX_BATCH_IMAGES = 8
    monkeypatch.setattr(tasks, "PROGRESS_WRITE_INTERVAL", 0)
    first, canceled, last = submit_all(tenant, demo_model, VARIED)
    real = runner.generate_batch
    steps_after_cancel = []

    def cancel_at_step_5(items, model, **kw):
        victim = items[1]
        report = victim.progress

        def progress(step, total):
            if step == 5:
                jobs.cancel(Job.objects.get(pk=canceled.pk))
            if step > 5:
                steps_after_cancel.append(step)
            report(step, total)

        items[1] = replace(victim, progress=progress)
        assert len(items) == 3
        return real(items, model, **kw)

    monkeypatch.setattr(runner, "generate_batch", cancel_at_step_5)
    run_next_job()
    canceled.refresh_from_db()
    assert canceled.status == Job.Status.CANCELED
    assert canceled.outputs.count() == 0
    assert refunded(canceled)
    assert steps_after_cancel == []  # it left the call at its next progress write
    for job in (first, last):
        assert len(stored_pngs(job)) == job.params["samples"]
        assert not refunded(job)


def test_each_job_of_a_batch_keeps_its_own_progress_and_webhook_events(
    tenant, demo_model, settings, monkeypatch
):
    settings.PICTOR_MAX_BATCH_IMAGES = 8
    every_event = ["start", "progress", "completed"]
    queued = [
        service.submit(
            req,
            tenant.org,
            demo_model,
            webhook=f"https://hooks.example.com/pictor/{n}",
            webhook_events=every_event,
        )
        for n, req in enumerate(VARIED)
    ]
    alone_calls = []
    monkeypatch.setattr(runner, "generate", lambda *a, **k: alone_calls.append(a))
    run_next_job()
    assert alone_calls == []  # one shared call

    for n, job in enumerate(queued):
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCESS, job.error
        assert (job.progress_step, job.progress_total) == (21, 21)
        deliveries = WebhookDelivery.objects.filter(job=job).order_by("pk")
        assert [(d.event, d.progress) for d in deliveries] == [
            ("start", 0),
            ("progress", 25),
            ("progress", 50),
            ("progress", 75),
            ("completed", 0),
        ]
        assert {d.url for d in deliveries} == {f"https://hooks.example.com/pictor/{n}"}
        assert {d.payload["id"] for d in deliveries} == {job.pk}
        completed = deliveries.last().payload
        assert completed["status"] == "success"
        assert len(completed["output"]) == job.params["samples"]


def test_a_job_with_bad_input_fails_alone(tenant, demo_model, settings):
    settings.PICTOR_MAX_BATCH_IMAGES = 1
    alone = submit_all(tenant, demo_model, VARIED[:1])
    run_next_job()
    settings.PICTOR_MAX_BATCH_IMAGES = 8
    good, bad, also_good = submit_all(tenant, demo_model, VARIED)
    # A row the web tier would refuse today (a weight past the bounds), stored by an older
    # version or by hand: the engine refuses it when it runs.
    Job.objects.filter(pk=bad.pk).update(params={**bad.params, "prompt": "a (car:99)"})
    run_next_job()
    bad.refresh_from_db()
    assert bad.status == Job.Status.FAILED
    assert "weight" in bad.error
    assert refunded(bad)
    assert stored_pngs(good) == stored_pngs(alone[0])
    assert len(stored_pngs(also_good)) == 1
