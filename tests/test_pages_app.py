"""The organization's pages under /app/ and the ops dashboard, through Django's test client.

Three people: the owner and a member of acme, and the owner of globex. No page shows or
changes another organization's rows; owners and admins alone change the organization.
"""

from __future__ import annotations

import re

import pytest

from accounts.models import ApiKey, Membership, User
from billing import ledger
from generation import quotas
from generation.models import AIModel, Job, WebhookDelivery, WorkerHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def as_user(client, user):
    client.force_login(user)
    return client


def job(org, model, **params):
    made = Job.objects.create(
        organization=org,
        model=model,
        params={"prompt": "a lighthouse", "samples": 1, "width": 64, "height": 64, **params},
        cost=1,
    )
    quotas.count_images(made)  # as its submit would: the day's running total
    return made


def test_a_new_key_is_shown_once_and_works(client, people, demo_model, no_wait):
    as_user(client, people.member)
    response = client.post("/app/keys/", {"name": "laptop"}, follow=True)
    page = response.content.decode()
    key = re.search(r'data-testid="new-key">(pct_[^<]+)<', page).group(1)
    assert ApiKey.objects.for_raw_key(key).organization == people.acme
    # Gone after a reload: only the prefix is listed.
    again = client.get("/app/keys/").content.decode()
    assert key not in again
    assert key[:12] in again
    status = client.post(
        "/api/v3/text2img",
        {"key": key, "prompt": "a red fox", "width": 64, "height": 64},
        content_type="application/json",
    ).status_code
    assert status == 200


def test_keys_of_another_organization_cannot_be_revoked(client, people):
    theirs, _ = ApiKey.objects.issue(people.globex, name="theirs")
    mine, _ = ApiKey.objects.issue(people.acme, name="mine")
    as_user(client, people.owner)
    assert client.post(f"/app/keys/{theirs.pk}/revoke/").status_code == 404
    assert "theirs" not in client.get("/app/keys/").content.decode()
    assert client.post(f"/app/keys/{mine.pk}/revoke/").status_code == 302
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked_at is not None
    assert theirs.revoked_at is None


def test_a_member_revokes_only_the_keys_they_made(client, people):
    owners, _ = ApiKey.objects.issue(people.acme, name="owner's", created_by=people.owner)
    operators, _ = ApiKey.objects.issue(people.acme, name="from the command")
    as_user(client, people.member)
    client.post("/app/keys/", {"name": "laptop"})
    mine = ApiKey.objects.get(name="laptop")
    assert mine.created_by == people.member
    page = client.get("/app/keys/").content.decode()
    revoke = 'action="/app/keys/{}/revoke/"'
    assert revoke.format(mine.pk) in page
    assert revoke.format(owners.pk) not in page and revoke.format(operators.pk) not in page
    for theirs in (owners, operators):
        assert client.post(f"/app/keys/{theirs.pk}/revoke/").status_code == 403
        theirs.refresh_from_db()
        assert theirs.revoked_at is None
    assert client.post(f"/app/keys/{mine.pk}/revoke/").status_code == 302
    # Owners and admins revoke any key of the organization.
    as_user(client, people.owner)
    page = client.get("/app/keys/").content.decode()
    assert revoke.format(operators.pk) in page
    assert client.post(f"/app/keys/{operators.pk}/revoke/").status_code == 302
    mine.refresh_from_db()
    operators.refresh_from_db()
    assert mine.revoked_at is not None and operators.revoked_at is not None


def test_a_key_name_too_long_is_refused_not_cut(client, people):
    as_user(client, people.member)
    page = client.post("/app/keys/", {"name": "k" * 101}, follow=True).content.decode()
    assert "at most 100 characters" in page
    assert not ApiKey.objects.filter(name__startswith="k").exists()
    client.post("/app/keys/", {"name": "k" * 100})
    assert ApiKey.objects.get(name__startswith="k").name == "k" * 100


@pytest.mark.parametrize(
    "path", ["/app/", "/app/team/", "/app/playground/", "/app/history/", "/app/usage/"]
)
def test_pages_that_only_show_refuse_other_methods(client, people, path):
    as_user(client, people.owner)
    assert client.head(path).status_code == 200
    for method in (client.put, client.patch, client.delete, client.post):
        assert method(path).status_code == 405, method
    staff = User.objects.create_user("ops@example.com", "pw-123456789", is_staff=True)
    as_user(client, staff)
    assert client.put("/ops/").status_code == 405
    as_user(client, people.owner)
    assert client.put("/app/models/").status_code == 405


def test_the_overview_shows_plan_credits_and_images_today(client, people, demo_model):
    job(people.acme, demo_model, samples=3, prompt="acme's own prompt")
    job(people.globex, demo_model, prompt="globex secret prompt")
    page = as_user(client, people.member).get("/app/").content.decode()
    assert "Basic" in page
    assert f'data-testid="credits">{people.acme.credit_balance}<' in page
    assert 'data-testid="images-today">3 / 1000<' in page
    assert "acme&#x27;s own prompt" in page
    assert "globex secret prompt" not in page


def test_history_lists_filters_and_reruns_only_the_organizations_jobs(
    client, people, demo_model, no_wait
):
    done = job(people.acme, demo_model, prompt="a harbour", seed=7, steps=21)
    done.status = Job.Status.SUCCESS
    done.save()
    job(people.acme, demo_model, prompt="a meadow")
    theirs = job(people.globex, demo_model, prompt="globex secret prompt")
    as_user(client, people.member)
    page = client.get("/app/history/").content.decode()
    assert "a harbour" in page and "a meadow" in page
    assert "globex secret prompt" not in page
    filtered = client.get("/app/history/?status=success").content.decode()
    assert "a harbour" in filtered and "a meadow" not in filtered
    assert "a meadow" in client.get("/app/history/?q=MEADOW").content.decode()

    assert client.post(f"/app/history/{theirs.pk}/rerun/").status_code == 404
    from generation.engine.request import GenerationRequest

    done.params = GenerationRequest(prompt="a harbour", model_id="demo-sd15", seed=7).to_params()
    done.save()
    before = people.acme.credit_balance
    client.post(f"/app/history/{done.pk}/rerun/")
    rerun = Job.objects.for_org(people.acme).latest("pk")
    done.refresh_from_db()
    assert rerun.pk != done.pk
    assert rerun.params == done.params
    people.acme.refresh_from_db()
    assert people.acme.credit_balance == before - rerun.cost


def test_usage_shows_images_and_credits_per_day_and_the_ledger(client, people, demo_model):
    spent = job(people.acme, demo_model, samples=2)
    spent.cost = 2
    spent.save()
    ledger.debit_for_job(spent)
    job(people.globex, demo_model, samples=4)
    page = as_user(client, people.member).get("/app/usage/").content.decode()
    assert 'data-testid="images-total">2<' in page
    assert 'data-testid="credits-total">2<' in page
    assert 'data-value="2"' in page
    assert "−2" in page or "-2" in page


def test_settings_rotate_the_secret_for_managers_only(client, people):
    secret = people.acme.webhook_secret
    AIModel.objects.create(
        model_id="acme-private", name="acme-private", path="x", organization=people.acme
    )
    AIModel.objects.create(
        model_id="globex-private", name="globex-private", path="x", organization=people.globex
    )
    # What a deleted model that jobs still name is kept as: no longer one of its models.
    AIModel.objects.create(
        model_id="deleted-9-ab12cd34", name="x", path="", organization=people.acme, enabled=False
    )
    as_user(client, people.member)
    page = client.get("/app/settings/").content.decode()
    assert "acme-private" in page and "globex-private" not in page
    assert "deleted-9-ab12cd34" not in page
    assert secret not in page
    assert client.post("/app/settings/", {"action": "rotate"}).status_code == 403
    people.acme.refresh_from_db()
    assert people.acme.webhook_secret == secret

    as_user(client, people.owner)
    assert secret in client.get("/app/settings/").content.decode()
    client.post("/app/settings/", {"action": "rotate"})
    client.post("/app/settings/", {"action": "rename", "name": "Acme Corp"})
    people.acme.refresh_from_db()
    assert people.acme.webhook_secret != secret
    assert people.acme.name == "Acme Corp"


def test_the_playground_submits_through_the_api_path_and_is_charged(
    client, people, demo_model, sync_queue
):
    as_user(client, people.member)
    page = client.get("/app/playground/").content.decode()
    assert "demo-sd15" in page
    before = people.acme.credit_balance
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/app/playground/submit",
        {"prompt": "a kite", "width": 64, "height": 64, "seed": 3},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 200, response.content
    data = response.json()
    new = Job.objects.get(pk=data["id"])
    assert new.organization == people.acme
    assert new.api_key is None
    people.acme.refresh_from_db()
    assert people.acme.credit_balance == before - new.cost
    done = client.get(f"/app/playground/jobs/{new.pk}/").json()
    assert done["status"] == "success"
    assert f"/files/generations/{people.acme.pk}/{new.pk}/0.png?" in done["output"][0]

    theirs = job(people.globex, demo_model)
    assert client.get(f"/app/playground/jobs/{theirs.pk}/").status_code == 404


def test_the_playground_prefills_only_from_the_organizations_own_job(client, people, demo_model):
    ours = job(people.acme, demo_model, prompt="a harbour at dawn")
    theirs = job(people.globex, demo_model, prompt="a secret garden")
    as_user(client, people.member)

    def prompt_box(query):
        response = client.get(f"/app/playground/?from={query}")
        assert response.status_code == 200
        return re.search(r'<textarea id="prompt"[^>]*>([^<]*)<', response.content.decode())[1]

    assert prompt_box(ours.pk) == "a harbour at dawn"
    # "²" is a digit to str.isdigit(), not to int().
    for query in (theirs.pk, "x", "²", f"{ours.pk}²", "9" * 30):
        assert prompt_box(query) == ""


def test_the_playground_needs_the_csrf_token(people, demo_model):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(people.member)
    response = strict.post(
        "/app/playground/submit", {"prompt": "a kite"}, content_type="application/json"
    )
    assert response.status_code == 403
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/app/",
        "/app/keys/",
        "/app/playground/",
        "/app/history/",
        "/app/usage/",
        "/app/billing/",
        "/app/settings/",
        "/app/team/",
    ],
)
def test_pages_need_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("path", ["/app/", "/app/keys/", "/app/usage/", "/app/billing/"])
def test_a_user_without_an_organization_gets_the_same_answer_from_every_app_page(client, path):
    staff = User.objects.create_user("ops@example.com", "pw-123456789", is_staff=True)
    assert as_user(client, staff).get(path)["Location"] == "/ops/"
    loner = User.objects.create_user("loner@example.com", "pw-123456789")
    page = as_user(client, loner).get(path)
    assert page.status_code == 403
    assert "does not belong to any organization" in page.content.decode()


def test_ops_is_for_staff_only(client, people, demo_model):
    assert client.get("/ops/")["Location"].startswith("/accounts/login/")
    assert as_user(client, people.owner).get("/ops/").status_code == 403

    failed = job(people.acme, demo_model)
    Job.objects.filter(pk=failed.pk).update(
        status=Job.Status.FAILED, error="RuntimeError: out of memory", finished_at=failed.created_at
    )
    for seconds in (0.2, 0.4, 0.6, 0.8, 1.0):
        done = job(people.globex, demo_model, samples=2)
        Job.objects.filter(pk=done.pk).update(
            status=Job.Status.SUCCESS, generation_time=seconds, finished_at=done.created_at
        )
    job(people.acme, demo_model)
    WorkerHeartbeat.objects.create(name="gpu-1:42", models_loaded=["demo-sd15"], jobs_done=5)

    staff = User.objects.create_user("ops@example.com", "pw-123456789", is_staff=True)
    page = as_user(client, staff).get("/ops/").content.decode()
    assert 'data-testid="queue-depth">1 / 0<' in page
    assert 'data-testid="timings">0.60 s / 0.96 s<' in page
    assert 'data-testid="failure-rate">16.7 %<' in page
    assert "out of memory" in page
    assert "gpu-1:42" in page and "demo-sd15" in page and "alive" in page
    # globex asked for the most images today.
    top = page.split("Top organizations today")[1]
    assert top.index("<td>globex</td>") < top.index("<td>acme</td>")


def test_owners_invite_by_email_link_and_the_invited_person_joins(client, people):
    from django.core import mail

    as_user(client, people.member)
    assert client.post("/app/team/invite/", {"email": "new@example.com"}).status_code == 403
    as_user(client, people.owner)
    client.post("/app/team/invite/", {"email": "new@example.com", "role": "admin"})
    [message] = mail.outbox
    link = re.search(r"http://testserver(/accounts/invite/\S+/)", message.body).group(1)

    client.logout()
    assert "Sign up to accept" in client.get(link).content.decode()
    # Someone else logged in cannot use the link.
    as_user(client, people.outsider)
    client.post(link)
    assert not people.acme.memberships.filter(user=people.outsider).exists()

    newcomer = User.objects.create_user("new@example.com", "pw-123456789")
    as_user(client, newcomer)
    assert client.post(link).status_code == 302
    joined = people.acme.memberships.get(user=newcomer)
    assert joined.role == Membership.Role.ADMIN
    # Used once.
    assert client.get(link).status_code == 404


def test_members_are_removed_by_managers_and_the_last_owner_stays(client, people):
    member = people.acme.memberships.get(user=people.member)
    owner = people.acme.memberships.get(user=people.owner)
    theirs = people.globex.memberships.get(user=people.outsider)
    as_user(client, people.member)
    assert client.post(f"/app/team/{owner.pk}/", {"action": "remove"}).status_code == 403
    as_user(client, people.owner)
    assert client.post(f"/app/team/{theirs.pk}/", {"action": "remove"}).status_code == 404
    client.post(f"/app/team/{owner.pk}/", {"action": "remove"})
    client.post(f"/app/team/{owner.pk}/", {"action": "role", "role": "member"})
    owner.refresh_from_db()
    assert owner.role == Membership.Role.OWNER
    client.post(f"/app/team/{member.pk}/", {"action": "remove"})
    assert not Membership.objects.filter(pk=member.pk).exists()


def test_an_invitation_refuses_an_address_too_long_and_a_role_that_is_not_one(client, people):
    from django.core import mail

    as_user(client, people.owner)
    # validate_email takes 262 characters; the address column holds 254.
    long_address = "a" * 250 + "@example.com"
    page = client.post(
        "/app/team/invite/", {"email": long_address, "role": "member"}, follow=True
    ).content.decode()
    assert "at most 254 characters" in page
    for role in ("", "boss"):
        response = client.post("/app/team/invite/", {"email": "new@example.com", "role": role})
        assert response.status_code == 302
        page = client.get("/app/team/").content.decode()
        assert "Choose a role: owner, admin or member." in page
    assert not people.acme.invitations.exists()
    assert not mail.outbox


def test_an_invitation_no_mail_can_carry_is_not_kept(client, people):
    from django.core import mail

    as_user(client, people.owner)
    # Django's validator takes this address; no mail can name its domain (its ASCII form is too
    # long), so it is refused as not valid.
    page = client.post(
        "/app/team/invite/", {"email": "friend@" + "é" * 58 + ".com", "role": "member"}, follow=True
    ).content.decode()
    assert "Give a valid email address." in page
    # A name from before line breaks were refused: the subject keeps one line.
    people.acme.name = "Line One\r\nBcc: victim@example.com"
    people.acme.save(update_fields=["name"])
    client.post("/app/team/invite/", {"email": "friend@example.com", "role": "member"})
    [message] = mail.outbox
    assert message.subject == "Join Line One Bcc: victim@example.com on Pictor"
    assert message.recipients() == ["friend@example.com"]
    assert people.acme.invitations.count() == 1


def test_an_invitation_whose_mail_fails_is_not_kept(client, people, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    as_user(client, people.owner)
    page = client.post(
        "/app/team/invite/", {"email": "friend@example.com", "role": "member"}, follow=True
    ).content.decode()
    assert "could not be sent to friend@example.com" in page
    assert not people.acme.invitations.exists()


@pytest.mark.parametrize("name", ["Line One\nBcc: x@example.com", "Tab\there", "Nul\x00"])
def test_an_organization_name_with_control_characters_is_refused(client, people, name):
    as_user(client, people.owner)
    page = client.post(
        "/app/settings/", {"action": "rename", "name": name}, follow=True
    ).content.decode()
    assert "cannot hold line breaks" in page
    people.acme.refresh_from_db()
    assert people.acme.name == "acme"


def test_the_keys_of_a_removed_member_stop_working(client, people, api):
    member = people.acme.memberships.get(user=people.member)
    _key, theirs = ApiKey.objects.issue(people.acme, name="laptop", created_by=people.member)
    _key, owners = ApiKey.objects.issue(people.acme, name="server", created_by=people.owner)
    assert api.post("/api/v3/system_load", {"key": theirs})[0] == 200
    as_user(client, people.owner)
    page = client.post(
        f"/app/team/{member.pk}/", {"action": "remove"}, follow=True
    ).content.decode()
    assert "the 1 API key they made revoked" in page
    assert api.post("/api/v3/system_load", {"key": theirs})[0] == 401
    assert api.post("/api/v3/system_load", {"key": owners})[0] == 200


def test_the_keys_a_deleted_account_made_for_an_organization_that_stays_stop_working(
    client, people, api
):
    Membership.objects.filter(user=people.owner).update(role=Membership.Role.ADMIN)
    Membership.objects.filter(user=people.member).update(role=Membership.Role.OWNER)
    _key, theirs = ApiKey.objects.issue(people.acme, name="laptop", created_by=people.owner)
    as_user(client, people.owner)
    client.post("/accounts/", {"delete-password": "pw-123456789", "delete-confirm": "on"})
    assert not User.objects.filter(pk=people.owner.pk).exists()
    assert api.post("/api/v3/system_load", {"key": theirs})[0] == 401


def test_a_team_change_that_names_no_action_or_role_says_so(client, people):
    member = people.acme.memberships.get(user=people.member)
    as_user(client, people.owner)
    for fields in ({"action": "promote"}, {"action": "role", "role": "boss"}, {}):
        page = client.post(f"/app/team/{member.pk}/", fields, follow=True).content.decode()
        assert "Choose remove, or a role: owner, admin or member." in page
        member.refresh_from_db()
        assert member.role == Membership.Role.MEMBER


def test_history_pages_by_twenty(client, people, demo_model):
    for n in range(25):
        job(people.acme, demo_model, prompt=f"prompt number {n:02d}")
    as_user(client, people.member)
    first = client.get("/app/history/").content.decode()
    assert "prompt number 24" in first and "prompt number 04" not in first
    assert "Page 1 of 2" in first
    second = client.get("/app/history/?page=2").content.decode()
    assert "prompt number 04" in second and "prompt number 24" not in second
    # Ten match the filter: one page, no pager.
    filtered = client.get("/app/history/?q=number+0").content.decode()
    assert "prompt number 09" in filtered and "prompt number 10" not in filtered
    assert "Page 1 of" not in filtered


def png_data_url(size: tuple[int, int] = (64, 64), color: str = "gray", box: bool = False) -> str:
    """A PNG as a data: URL; `box` draws a white square in the middle (a mask, or an edge)."""
    import base64
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "black" if box else color)
    if box:
        w, h = size
        ImageDraw.Draw(image).rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def post_json(client, path, body):
    return client.post(
        path,
        body,
        content_type="application/json",
        headers={"X-CSRFToken": client.cookies["csrftoken"].value},
    )


def test_it_offers_only_schedulers_that_can_run_a1111_names_first(client, people, demo_model):
    from generation import pages

    names = pages.schedulers()
    for broken in ("KarrasVeScheduler", "ScoreSdeVeScheduler", "DDIMInverseScheduler"):
        assert broken not in names
    assert names[0] == "Euler"
    assert names.index("DPM++ 2M Karras") < names.index("EulerDiscreteScheduler")
    assert "UniPCMultistepScheduler" in names

    as_user(client, people.member)
    page = client.get("/app/playground/").content.decode()
    options = re.findall(r'<select id="scheduler"[^>]*>(.*?)</select>', page, re.S)[0]
    assert "KarrasVeScheduler" not in options and "DDIMInverseScheduler" not in options
    assert "<option>Euler a</option>" in options


def test_it_shows_only_the_models_the_organization_may_use(client, people, demo_models):
    from tests.helpers import private_copy

    theirs = private_copy("demo-lora-a", people.globex)
    ours = private_copy("demo-sd15", people.acme)
    as_user(client, people.member)
    page = client.get("/app/playground/").content.decode()
    assert f'data-lora="{theirs}"' not in page
    assert 'data-lora="demo-lora-a"' in page and 'data-lora="demo-lora-b"' in page
    assert 'data-embedding="demo-embedding"' in page
    assert f'value="{ours}"' in page
    assert 'value="demo-controlnet-canny"' in page
    assert 'value="demo-sd15-inpaint"' in page

    as_user(client, people.outsider)
    page = client.get("/app/playground/").content.decode()
    assert f'data-lora="{theirs}"' in page
    assert f'value="{ours}"' not in page


def test_the_playground_inpaints_with_a_drawn_mask_through_the_api_path(
    client, people, demo_models, sync_queue
):
    as_user(client, people.member)
    client.get("/app/playground/")
    response = post_json(
        client,
        "/app/playground/submit/inpaint",
        {
            "prompt": "a red door",
            "width": 64,
            "height": 64,
            "seed": 5,
            "init_image": png_data_url(),
            "mask_image": png_data_url(box=True),
            "strength": 0.8,
        },
    )
    assert response.status_code == 200, response.content
    new = Job.objects.get(pk=response.json()["id"])
    assert new.kind == "inpaint"
    done = client.get(f"/app/playground/jobs/{new.pk}/").json()
    assert done["status"] == "success", done
    assert done["state"] == "success"

    # The API's own checks answer the page too: no mask is a 400 naming the field.
    missing = post_json(
        client,
        "/app/playground/submit/inpaint",
        {"prompt": "a red door", "width": 64, "height": 64, "init_image": png_data_url()},
    )
    assert missing.status_code == 400
    assert "mask_image" in missing.json()["message"]


def test_the_preprocessor_preview_runs_canny_tile_shuffle_and_inpaint(client, people):
    import base64
    import io

    from PIL import Image

    as_user(client, people.member)
    client.get("/app/playground/")
    picture = png_data_url((48, 32), box=True)
    for module in ("canny", "tile", "shuffle", "inpaint"):
        body = {"module": module, "image": picture}
        if module == "inpaint":
            body["mask"] = png_data_url((48, 32), box=True)
        response = post_json(client, "/app/playground/preprocess", body)
        assert response.status_code == 200, (module, response.content)
        data = response.json()["image"]
        assert data.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1])))
        assert image.size == (48, 32)
        if module == "canny":
            # Edges of the white square, nothing inside it or outside.
            assert image.getpixel((24, 16)) == (0, 0, 0)
            assert max(image.convert("L").getdata()) == 255
        if module == "inpaint":
            # The masked square is black, the rest keeps the picture (black here too, so
            # the corner of the square that the mask covers is what changes from white).
            assert image.getpixel((24, 16)) == (0, 0, 0)

    bad_module = post_json(client, "/app/playground/preprocess", {"module": "depth", "image": ""})
    assert bad_module.status_code == 400
    not_image = post_json(
        client,
        "/app/playground/preprocess",
        {"module": "canny", "image": "data:image/png;base64,bm90IGFuIGltYWdl"},
    )
    assert not_image.status_code == 400
    assert "image" in str(not_image.json())

    client.logout()
    anonymous = client.post(
        "/app/playground/preprocess", {"module": "canny"}, content_type="application/json"
    )
    assert anonymous.status_code == 401


def test_the_page_polls_never_use_up_the_plans_requests_per_minute(client, people, demo_model):
    from billing.models import Plan

    Plan.objects.filter(slug="basic").update(requests_per_minute=3)
    as_user(client, people.member)
    client.get("/app/playground/")
    # No worker runs here: the job stays queued while the page polls it.
    submitted = post_json(client, "/app/playground/submit", {"prompt": "a kite", "width": 64})
    assert submitted.status_code == 200, submitted.content
    running = Job.objects.get(pk=submitted.json()["id"])
    for _ in range(20):
        response = client.get(f"/app/playground/jobs/{running.pk}/")
        assert response.status_code == 200
        assert response.json()["state"] == "queued"
        assert 1 <= int(response["Retry-After"]) <= 10
        states = client.get(f"/app/history/jobs.json?ids={running.pk}")
        assert states.status_code == 200
        assert states.json()["jobs"][0]["status"] == "queued"
        assert "Retry-After" in states
    # Twenty polls of each left the minute's other two requests.
    again = post_json(client, "/app/playground/submit", {"prompt": "a second kite", "width": 64})
    assert again.status_code == 200, again.content


def test_the_history_refresh_reads_only_the_organizations_jobs(client, people, demo_model):
    ours = job(people.acme, demo_model, steps=21)
    done = job(people.acme, demo_model, steps=21)
    Job.objects.filter(pk=done.pk).update(status=Job.Status.FAILED, error="out of memory")
    theirs = job(people.globex, demo_model)
    as_user(client, people.member)
    page = client.get("/app/history/").content.decode()
    assert "pictor/history_refresh.js" in page and 'data-states="/app/history/jobs.json"' in page

    # "²" is a digit to str.isdigit(), not to int(): skipped like any other junk.
    response = client.get(f"/app/history/jobs.json?ids={ours.pk},{done.pk},{theirs.pk},x,²")
    assert response.status_code == 200
    by_id = {row["id"]: row for row in response.json()["jobs"]}
    assert set(by_id) == {ours.pk, done.pk}
    assert by_id[done.pk]["status"] == "failed"
    assert by_id[done.pk]["error"] == "out of memory"
    many = ",".join(str(n) for n in range(1, 60))
    assert client.get(f"/app/history/jobs.json?ids={many}").status_code == 400


def test_names_and_urls_holding_nul_are_refused_and_nothing_is_stored(client, people):
    # PostgreSQL cannot store a NUL character (SQLite can): each is said on the page instead.
    as_user(client, people.owner)
    keys_before = ApiKey.objects.count()
    response = client.post("/app/keys/", {"name": "lap\x00top"}, follow=True)
    assert "holds a NUL character" in response.content.decode()
    assert ApiKey.objects.count() == keys_before

    response = client.post("/app/settings/", {"action": "rename", "name": "Ac\x00me"}, follow=True)
    assert "cannot hold line breaks, tabs or other control characters" in response.content.decode()
    people.acme.refresh_from_db()
    assert "\x00" not in people.acme.name

    url = "https://hooks.example.com/a\x00b"
    response = client.post("/app/settings/", {"action": "ping", "url": url}, follow=True)
    assert "Give an http:// or https:// URL" in response.content.decode()
    assert not WebhookDelivery.objects.exists()


def test_the_history_filters_up_to_the_last_day_a_date_can_name(client, people, demo_model):
    job(people.acme, demo_model, prompt="a lighthouse at the end of time")
    as_user(client, people.member)
    response = client.get("/app/history/?date_to=9999-12-31")
    assert response.status_code == 200
    assert "a lighthouse at the end of time" in response.content.decode()


def test_a_cookie_holding_nul_is_a_400_before_the_session_is_read(client, people):
    # A quoted \000 in a Cookie header is read as NUL; the session's lookup would get it.
    client.cookies["sessionid"] = "abc\x00def"
    assert client.get("/accounts/login/").status_code == 400
