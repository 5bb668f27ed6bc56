"""The optional person-or-bot challenge on the sign-up form: Cloudflare Turnstile or hCaptcha.

Off unless PICTOR_CHALLENGE_PROVIDER is set. When on, the form shows the provider's widget, the
browser puts a token in the form, and the server asks the provider's siteverify endpoint whether
the token is good before the account is made. A provider that cannot be reached refuses the
sign-up with a form error (never a 500), and the page's Content-Security-Policy lets in the
provider's script and frame only then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import requests
from django.conf import settings

log = logging.getLogger(__name__)

# The whole siteverify call, connect and answer; a slow provider must not hold a web thread.
VERIFY_TIMEOUT = 5


@dataclass(frozen=True)
class Provider:
    name: str
    script: str  # the widget's script, loaded by the sign-up page
    widget_class: str  # the element the script turns into the widget
    field: str  # the form field the widget fills with its token
    verify_url: str  # the default siteverify endpoint
    sources: tuple[str, ...]  # origins the page's CSP must allow
    directives: tuple[str, ...]  # the CSP directives that need them


PROVIDERS = {
    "turnstile": Provider(
        name="turnstile",
        script="https://challenges.cloudflare.com/turnstile/v0/api.js",
        widget_class="cf-turnstile",
        field="cf-turnstile-response",
        verify_url="https://challenges.cloudflare.com/turnstile/v0/siteverify",
        sources=("https://challenges.cloudflare.com",),
        directives=("script-src", "frame-src"),
    ),
    "hcaptcha": Provider(
        name="hcaptcha",
        script="https://js.hcaptcha.com/1/api.js",
        widget_class="h-captcha",
        field="h-captcha-response",
        verify_url="https://api.hcaptcha.com/siteverify",
        sources=("https://hcaptcha.com", "https://*.hcaptcha.com"),
        directives=("script-src", "frame-src", "style-src", "connect-src"),
    ),
}


class ChallengeFailed(Exception):
    """The token is missing or refused, or the provider could not be asked."""


def provider() -> Provider | None:
    """The configured provider, or None when the challenge is off."""
    return PROVIDERS.get(settings.PICTOR_CHALLENGE_PROVIDER)


def widget() -> dict[str, str] | None:
    """What the sign-up template needs to render the widget, or None when off."""
    chosen = provider()
    if chosen is None:
        return None
    return {
        "script": chosen.script,
        "widget_class": chosen.widget_class,
        "site_key": settings.PICTOR_CHALLENGE_SITE_KEY,
    }


def verify(data: Mapping[str, object], remote_ip: str) -> None:
    """Check the form's token with the provider; raises ChallengeFailed with a message to show."""
    chosen = provider()
    if chosen is None:
        return
    token = data.get(chosen.field)
    if not isinstance(token, str) or not token.strip() or len(token) > 4096:
        raise ChallengeFailed("Complete the check that you are a person, then sign up again.")
    body = {"secret": settings.PICTOR_CHALLENGE_SECRET_KEY, "response": token.strip()}
    if remote_ip and remote_ip != "unknown":
        body["remoteip"] = remote_ip
    try:
        response = requests.post(
            settings.PICTOR_CHALLENGE_VERIFY_URL or chosen.verify_url,
            data=body,
            timeout=VERIFY_TIMEOUT,
            allow_redirects=False,
        )
        response.raise_for_status()
        answer = response.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("the %s siteverify call failed: %s", chosen.name, exc)
        raise ChallengeFailed(
            "The check that you are a person could not be completed just now; try again."
        ) from None
    if not isinstance(answer, dict) or answer.get("success") is not True:
        raise ChallengeFailed("The check that you are a person failed; try it again.")


def content_security_policy(policy: str) -> str:
    """`policy` with the provider's origins allowed where its widget needs them (when on)."""
    chosen = provider()
    if chosen is None:
        return policy
    extra = " ".join(chosen.sources)
    directives = [part.strip() for part in policy.split(";") if part.strip()]
    names = [part.split()[0] for part in directives]
    for wanted in chosen.directives:
        if wanted in names:
            i = names.index(wanted)
            directives[i] = f"{directives[i]} {extra}"
        else:
            # Absent, it would fall back to default-src 'self'; keep that and add the provider.
            directives.append(f"{wanted} 'self' {extra}")
    return "; ".join(directives)
