"""Pictor settings: every value comes from the environment, with embedded-mode defaults."""

from __future__ import annotations

import ipaddress
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from sdplatform.env import envbool, envfloat, envint, envstr
from sdplatform.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(envstr("PICTOR_VAR_DIR", str(BASE_DIR / "var")))

DJANGO_ENV = envstr("DJANGO_ENV", "development")
PRODUCTION = DJANGO_ENV == "production"

SECRET_KEY = envstr("SECRET_KEY")
# Off unless asked for, in development too: the debug page shows settings (DATABASE_URL,
# REDIS_URL) to anyone who can make a request fail.
DEBUG = envbool("DEBUG", False)
if PRODUCTION:
    if not SECRET_KEY:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production")
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off when DJANGO_ENV=production")
elif not SECRET_KEY:
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"


def _base_url(value: str) -> str:
    """PICTOR_BASE_URL checked and as scheme://host[:port]: http(s), a host, no path."""
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or any(c.isspace() for c in value)
    ):
        raise ImproperlyConfigured(
            "PICTOR_BASE_URL must be an http(s) URL with a host and no path, "
            f"e.g. https://pictor.example.com (got {value!r})"
        )
    return f"{parts.scheme}://{parts.netloc}"


# Development answers any Host. Production names its hosts, so a forged Host header is refused
# before any view runs; absolute URLs (emails, links, redirects) come from PICTOR_BASE_URL.
ALLOWED_HOSTS = [
    h.strip() for h in envstr("ALLOWED_HOSTS", "" if PRODUCTION else "*").split(",") if h.strip()
]
PICTOR_BASE_URL = _base_url(envstr("PICTOR_BASE_URL").strip())
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS must be set when DJANGO_ENV=production: the host names this server "
        "answers, comma-separated"
    )
if PRODUCTION and not PICTOR_BASE_URL:
    raise ImproperlyConfigured(
        "PICTOR_BASE_URL must be set when DJANGO_ENV=production: the public URL that emails "
        "and API links point at, e.g. https://pictor.example.com"
    )
# A reverse proxy in front of Pictor sets X-Forwarded-For and X-Forwarded-Proto; only then are
# they believed (sdplatform/hosts.py). Off: a client reaching gunicorn directly could forge them.
PICTOR_TRUSTED_PROXY = envbool("PICTOR_TRUSTED_PROXY", False)

INSTALLED_APPS = [
    # django.contrib.admin, with a login page under the failed-login limits (sdplatform/apps.py).
    "sdplatform.apps.PictorAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "accounts",
    "billing",
    "generation",
]

MIDDLEWARE = [
    # Outermost: a HEAD answer leaves with its headers and without the body a view rendered.
    "sdplatform.middleware.HeadWithoutBodyMiddleware",
    # First, so every log line of the request carries its id and every response is counted.
    "sdplatform.logs.RequestIdMiddleware",
    "sdplatform.metrics.RequestMetricsMiddleware",
    # Chunked bodies read whole, NUL in URLs refused, JSON error pages on API routes.
    "generation.api.middleware.RequestInputMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the API docs' Swagger UI, the pages' CSS) from any web process, no proxy.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "sdplatform.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "sdplatform.urls"
WSGI_APPLICATION = "sdplatform.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context.navigation",
                "sdplatform.context.base_url",
            ]
        },
    }
]

# Database: an SQLite file by default. The web server and the worker write the same file, so
# WAL, a long busy timeout and IMMEDIATE transactions keep writers from failing with
# "database is locked".
DATABASE_URL = envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'pictor.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(
        # A kept connection is checked before a request reuses it (a restarted database).
        DATABASE_URL,
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's, with that check made without a round trip (sdplatform/postgres/base.py).
    DATABASES["default"]["ENGINE"] = "sdplatform.postgres"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

REDIS_URL = envstr("REDIS_URL")
# Seconds to wait for Redis to accept a connection or answer, before a request treats it as down
# (counters fall back to the database, submits answer 503, /readyz names it) instead of hanging.
PICTOR_REDIS_TIMEOUT = envfloat("PICTOR_REDIS_TIMEOUT", 1.0)
if REDIS_URL:
    from redis import ConnectionPool
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry

    # One immediate retry of a failed connection (a pooled one that a restarted Redis dropped),
    # not redis-py's default of several with growing sleeps; none after a timeout, which has
    # already waited its full length on a Redis that does not answer.
    REDIS_RETRY = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": PICTOR_REDIS_TIMEOUT,
                "SOCKET_TIMEOUT": PICTOR_REDIS_TIMEOUT,
                "CONNECTION_POOL_KWARGS": {"retry": REDIS_RETRY},
            },
        }
    }
else:
    # The database cache works across the web and worker processes, unlike locmem.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "pictor_cache",
        }
    }

# django-q2. `timeout` < `retry` so a task is never handed out twice while still running;
# `max_attempts` bounds redelivery (the default, 0, retries forever); failures are acked because
# the job row, not the broker, carries the outcome and the reaper requeues lost jobs.
PICTOR_JOB_TIMEOUT = envint("PICTOR_JOB_TIMEOUT", 600)
# Worker processes per host (one per GPU); CPU threads are shared out among them.
PICTOR_WORKERS = envint("PICTOR_WORKERS", 1)
Q_CLUSTER = {
    "name": "pictor",
    "workers": PICTOR_WORKERS,
    "recycle": 10_000,
    "timeout": PICTOR_JOB_TIMEOUT,
    "retry": PICTOR_JOB_TIMEOUT + 60,
    "max_attempts": 2,
    "ack_failures": True,
    "save_limit": 1000,
    "queue_limit": 4,
    "catch_up": False,
    "label": "Task queue",
    "sync": envbool("PICTOR_Q_SYNC", False),
}
if REDIS_URL:
    # django-q2 hands these to redis.Redis(): one pool per process (redis-py starts a fresh one
    # after a fork), with the same fast failure as the cache. The read timeout stays above the
    # 1 s that the worker's BLPOP blocks on an empty queue, or every idle poll would time out.
    # (django-q2 has no read timeout of its own; without one a hung Redis hangs every submit.)
    Q_CLUSTER["redis"] = {
        "connection_pool": ConnectionPool.from_url(
            REDIS_URL,
            socket_connect_timeout=PICTOR_REDIS_TIMEOUT,
            socket_timeout=PICTOR_REDIS_TIMEOUT + 1,
            retry=REDIS_RETRY,
        )
    }
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = envfloat("PICTOR_Q_POLL", 0.05)

# Storage: a local folder served by Django, or any S3-compatible bucket.
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(VAR_DIR / "media")))
# Never routed: storage.url() of a local file leads nowhere; links come from generation/media.py.
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(VAR_DIR / "static")))
# WhiteNoise serves STATIC_ROOT (filled by collectstatic in production) and warns if it is missing.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve straight from the apps' static folders, so no collectstatic step is needed to start.
WHITENOISE_USE_FINDERS = True
S3_BUCKET = envstr("S3_BUCKET")
# Image links (outputs and inputs) are signed and expire (generation/media.py): presigned URLs
# on S3, HMAC-signed links served by Django on local storage. `temp` requests' links last
# PICTOR_MEDIA_TEMP_URL_EXPIRE (ModelsLab's 24 h); that long after submission their images are
# deleted (generation/retention.py). SigV4 presigned URLs cannot outlive 7 days.
PICTOR_MEDIA_URL_EXPIRE = envint("PICTOR_MEDIA_URL_EXPIRE", 24 * 3600)
PICTOR_MEDIA_TEMP_URL_EXPIRE = envint("PICTOR_MEDIA_TEMP_URL_EXPIRE", 24 * 3600)
if not 1 <= PICTOR_MEDIA_TEMP_URL_EXPIRE <= PICTOR_MEDIA_URL_EXPIRE <= 7 * 24 * 3600:
    raise ImproperlyConfigured(
        "Need 1 <= PICTOR_MEDIA_TEMP_URL_EXPIRE <= PICTOR_MEDIA_URL_EXPIRE <= 604800 (seconds)"
    )
# Local storage: Django streams the file (""), or hands it to the proxy in front: "nginx"
# (X-Accel-Redirect to PICTOR_MEDIA_ACCEL_PREFIX, an `internal` location aliasing MEDIA_ROOT)
# or "apache" (X-Sendfile with the file's path).
PICTOR_MEDIA_SENDFILE = envstr("PICTOR_MEDIA_SENDFILE").strip().lower()
if PICTOR_MEDIA_SENDFILE not in ("", "nginx", "apache"):
    raise ImproperlyConfigured("PICTOR_MEDIA_SENDFILE must be empty, nginx or apache")
PICTOR_MEDIA_ACCEL_PREFIX = envstr("PICTOR_MEDIA_ACCEL_PREFIX", "/protected-media/")
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"allow_overwrite": True},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": envstr("S3_ENDPOINT_URL") or None,
            "access_key": envstr("S3_ACCESS_KEY_ID") or None,
            "secret_key": envstr("S3_SECRET_ACCESS_KEY") or None,
            "region_name": envstr("S3_REGION") or None,
            # Tenant images are private: always presigned (SigV4, so X-Amz-Expires), never a
            # public or custom-domain URL, which would be unsigned (generation/media.py).
            "querystring_auth": True,
            "querystring_expire": PICTOR_MEDIA_URL_EXPIRE,
            "signature_version": "s3v4",
            "file_overwrite": True,
            "default_acl": None,
        },
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Bounded nesting, no NaN/Infinity, no NUL or unpaired surrogates: a 400 before auth.
    "DEFAULT_PARSER_CLASSES": ["generation.api.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "generation.api.errors.modelslab_exception_handler",
    # Requests per minute per organization from its plan, counted across processes.
    "DEFAULT_THROTTLE_CLASSES": ["billing.throttles.PlanRateThrottle"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI schema at /api/schema/ and its Swagger UI at /api/docs/, served offline.
SPECTACULAR_SETTINGS = {
    "TITLE": "Pictor API",
    "DESCRIPTION": (
        "Stable Diffusion image generation in five wire formats: ModelsLab (key in the body), "
        "Synapse, Hyperbolic, Dan and AUTOMATIC1111. Each format keeps its own field names, "
        "defaults, authentication and error shape."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Statuses every route can answer (bad body, key, rate limit, outage) are added to each
    # operation there, in its format's error shape; decorators list a view's own ones.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "generation.api.schema.document_common_statuses",
        "generation.api.schema.document_submit_headers",
    ],
    "TAGS": [
        {"name": "ModelsLab", "description": "Key in the JSON body (or `key` header, Bearer)."},
        {"name": "Synapse", "description": "Bearer key; answers one base64 PNG."},
        {"name": "Hyperbolic", "description": "Bearer key; answers base64 images."},
        {"name": "Dan", "description": "Bearer key; answers a task to poll."},
        {"name": "AUTOMATIC1111", "description": "HTTP Basic (the key as password) or Bearer."},
        {"name": "OpenAI", "description": "Bearer key; OpenAI's Images API and model list."},
    ],
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Pictor itself.
PICTOR_MODELS_DIR = Path(envstr("PICTOR_MODELS_DIR", str(VAR_DIR / "models")))
# Models kept in the object store (tenants' uploads, operators' published ones) are fetched
# into this host's folder on first use and checked by SHA-256; past the byte cap the least
# recently used ones are removed (generation/model_store.py).
PICTOR_MODEL_CACHE_DIR = Path(envstr("PICTOR_MODEL_CACHE_DIR", str(VAR_DIR / "model-cache")))
PICTOR_MODEL_CACHE_BYTES = envint("PICTOR_MODEL_CACHE_BYTES", 50 * 1024**3)
# Seconds for fetching a tenant's model from a URL (POST /api/v1/models {"url": …}).
PICTOR_MODEL_FETCH_TIMEOUT = envfloat("PICTOR_MODEL_FETCH_TIMEOUT", 300.0)
PICTOR_NSFW_THRESHOLD = envfloat("PICTOR_NSFW_THRESHOLD", 0.5)
PICTOR_SYNC_WAIT = envfloat("PICTOR_SYNC_WAIT", 5.0)
# Reading a job's state (fetch, status, progress, the jobs API's GETs) is counted apart from
# the plan's requests per minute, so polling never costs a generation (billing/throttles.py).
PICTOR_POLL_RATE_PER_MINUTE = envint("PICTOR_POLL_RATE_PER_MINUTE", 600)
# Formats whose clients block for the image (Synapse, Hyperbolic, AUTOMATIC1111) wait this
# long; past it the job is canceled and refunded, and the client gets a timeout error.
PICTOR_BLOCKING_WAIT = envfloat("PICTOR_BLOCKING_WAIT", 300.0)
# Dan's public key ("sk-" and 48 zeros) maps to one shared anonymous organization on this
# plan; off unless enabled, because anyone may send it.
PICTOR_ANONYMOUS_KEY_ENABLED = envbool("PICTOR_ANONYMOUS_KEY_ENABLED", False)
PICTOR_ANONYMOUS_PLAN = envstr("PICTOR_ANONYMOUS_PLAN", "free")
PICTOR_JOB_LEASE = envint("PICTOR_JOB_LEASE", 60)
PICTOR_JOB_MAX_ATTEMPTS = envint("PICTOR_JOB_MAX_ATTEMPTS", 3)
PICTOR_WARM_WORKERS = envbool("PICTOR_WARM_WORKERS", True)
# `manage.py worker` gives queued jobs whose broker task was lost a new one this often (seconds).
PICTOR_SWEEP_INTERVAL = envfloat("PICTOR_SWEEP_INTERVAL", 15.0)
# A stopping worker lets its running job finish for this long, then hands it back to the queue.
PICTOR_WORKER_STOP_GRACE = envfloat("PICTOR_WORKER_STOP_GRACE", 60.0)
# Images one diffusers call may hold when a worker batches compatible queued jobs
# (generation/batching.py): "auto" sizes it by the device, 1 turns batching off.
_batch_images = envstr("PICTOR_MAX_BATCH_IMAGES", "auto").strip().lower()
if _batch_images != "auto" and not (
    _batch_images.isascii() and _batch_images.isdigit() and int(_batch_images) >= 1
):
    raise ImproperlyConfigured("PICTOR_MAX_BATCH_IMAGES must be auto or a positive integer")
PICTOR_MAX_BATCH_IMAGES: int | str = "auto" if _batch_images == "auto" else int(_batch_images)

# The engine's knobs: generation/apps.py hands them to it as an EngineConfig (the engine reads
# no environment itself). Unset threads or bytes mean "automatic": torch's own thread count, a
# share of the device's memory; `default=` by keyword, as the env example leaves them empty.
PICTOR_TORCH_THREADS = envint("PICTOR_TORCH_THREADS", default=None)
PICTOR_PIPELINE_CACHE_SIZE = envint("PICTOR_PIPELINE_CACHE_SIZE", 2)
PICTOR_PIPELINE_CACHE_BYTES = envint("PICTOR_PIPELINE_CACHE_BYTES", default=None)
if PICTOR_TORCH_THREADS is not None and PICTOR_TORCH_THREADS < 1:
    raise ImproperlyConfigured(
        f"PICTOR_TORCH_THREADS must be a positive integer, not {PICTOR_TORCH_THREADS}"
    )
if PICTOR_PIPELINE_CACHE_SIZE < 1:
    raise ImproperlyConfigured(
        f"PICTOR_PIPELINE_CACHE_SIZE must be at least 1, not {PICTOR_PIPELINE_CACHE_SIZE}"
    )
# Where and how the worker runs pipelines (generation/engine/device.py); "auto": CUDA with fp16,
# else Apple MPS with fp16, else the CPU with fp32. A device the host lacks stops the worker.
PICTOR_DEVICE = envstr("PICTOR_DEVICE", "auto").strip().lower()
PICTOR_DTYPE = envstr("PICTOR_DTYPE", "auto").strip().lower()
PICTOR_ATTENTION = envstr("PICTOR_ATTENTION", "sdpa").strip().lower()
PICTOR_CHANNELS_LAST = envbool("PICTOR_CHANNELS_LAST", False)
PICTOR_VAE_TILING_SIDE = envint("PICTOR_VAE_TILING_SIDE", 0)
PICTOR_VAE_SLICING = envbool("PICTOR_VAE_SLICING", False)
PICTOR_CPU_OFFLOAD = envstr("PICTOR_CPU_OFFLOAD", "off").strip().lower()
PICTOR_COMPILE = envbool("PICTOR_COMPILE", False)
_device_index = PICTOR_DEVICE.removeprefix("cuda:")
if PICTOR_DEVICE not in ("auto", "cpu", "cuda", "mps") and not (
    PICTOR_DEVICE.startswith("cuda:") and _device_index.isascii() and _device_index.isdigit()
):
    raise ImproperlyConfigured(
        f"PICTOR_DEVICE must be auto, cpu, cuda, cuda:N or mps, not {PICTOR_DEVICE!r}"
    )
for _name, _value, _choices in (
    ("PICTOR_DTYPE", PICTOR_DTYPE, ("auto", "fp16", "bf16", "fp32")),
    ("PICTOR_ATTENTION", PICTOR_ATTENTION, ("sdpa", "default")),
    ("PICTOR_CPU_OFFLOAD", PICTOR_CPU_OFFLOAD, ("off", "model")),
):
    if _value not in _choices:
        raise ImproperlyConfigured(f"{_name} must be one of {', '.join(_choices)}, not {_value!r}")
if PICTOR_VAE_TILING_SIDE < 0:
    raise ImproperlyConfigured(
        f"PICTOR_VAE_TILING_SIDE must be 0 (off) or a side in pixels, not {PICTOR_VAE_TILING_SIDE}"
    )
# Live previews (generation/previews.py): a small picture of a running job every this many
# steps (0: none), from the TAESD folder named here or, left empty, a linear approximation.
PICTOR_PREVIEW_EVERY = envint("PICTOR_PREVIEW_EVERY", 5)
PICTOR_PREVIEW_DECODER = envstr("PICTOR_PREVIEW_DECODER")
if PICTOR_PREVIEW_EVERY < 0:
    raise ImproperlyConfigured(
        f"PICTOR_PREVIEW_EVERY must be 0 (off) or more, not {PICTOR_PREVIEW_EVERY}"
    )

# Fetching user-supplied URLs (input images, webhooks): see generation/safe_http.py.
PICTOR_FETCH_ALLOWED_PORTS = tuple(
    int(p) for p in envstr("PICTOR_FETCH_ALLOWED_PORTS", "80,443").split(",") if p.strip()
)
# Non-public networks a URL may still point at, e.g. an internal MinIO; empty means none.
PICTOR_FETCH_ALLOWED_NETWORKS = tuple(
    n.strip() for n in envstr("PICTOR_FETCH_ALLOWED_NETWORKS").split(",") if n.strip()
)
for _network in PICTOR_FETCH_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network)
    except ValueError as _error:
        raise ImproperlyConfigured(f"PICTOR_FETCH_ALLOWED_NETWORKS: {_error}") from None
PICTOR_FETCH_MAX_BYTES = envint("PICTOR_FETCH_MAX_BYTES", 20 * 1024 * 1024)
PICTOR_FETCH_TIMEOUT = envfloat("PICTOR_FETCH_TIMEOUT", 10.0)
# Decoded input images above this many pixels are refused before they are allocated.
PICTOR_INPUT_MAX_PIXELS = envint("PICTOR_INPUT_MAX_PIXELS", 4096 * 4096)
# The largest API request body: room for base64 input images (4/3 of their bytes) and a mask.
PICTOR_MAX_BODY_BYTES = envint("PICTOR_MAX_BODY_BYTES", 64 * 1024 * 1024)
# Django refuses larger bodies with an HTML page before the API can answer in its own format.
DATA_UPLOAD_MAX_MEMORY_SIZE = PICTOR_MAX_BODY_BYTES
# Seconds before each webhook retry; a delivery gets at most one attempt more than listed.
PICTOR_WEBHOOK_RETRY_DELAYS = tuple(
    int(s)
    for s in envstr("PICTOR_WEBHOOK_RETRY_DELAYS", "5,30,120,600,1800").split(",")
    if s.strip()
)
# Abuse rules (accounts/abuse.py): prompt terms refused on top of the built-in list, and the
# strikes that suspend an organization.
PICTOR_BLOCKED_TERMS = tuple(
    t.strip() for t in envstr("PICTOR_BLOCKED_TERMS").split(",") if t.strip()
)
PICTOR_STRIKE_LIMIT = envint("PICTOR_STRIKE_LIMIT", 3)

# Stripe (billing/stripe_api.py, billing/stripe_events.py): online payment is on when the secret
# key is set; without it staff change plans and grant credits by hand.
STRIPE_SECRET_KEY = envstr("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = envstr("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = envstr("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/")
# Credit packs sold for one-off payments: "slug:credits:price_id,…" (a Stripe one-time price).
PICTOR_CREDIT_PACKS: tuple[tuple[str, int, str], ...] = ()
for _pack in envstr("PICTOR_CREDIT_PACKS").split(","):
    if _pack.strip():
        try:
            _slug, _credits, _price = (part.strip() for part in _pack.split(":"))
            if not _slug or not _price or int(_credits) <= 0:
                raise ValueError
            PICTOR_CREDIT_PACKS += ((_slug, int(_credits), _price),)
        except ValueError:
            raise ImproperlyConfigured(
                f"PICTOR_CREDIT_PACKS: {_pack.strip()!r} is not slug:credits:price_id"
            ) from None
# An optional money price per credit, shown beside credits on the pages ("≈ $1.20");
# unset shows none (billing/prices.py). Stripe's own prices decide what a payment costs.
PICTOR_CURRENCY = envstr("PICTOR_CURRENCY", "USD").strip().upper()
if not re.fullmatch("[A-Z]{3}", PICTOR_CURRENCY):
    raise ImproperlyConfigured(
        f"PICTOR_CURRENCY must be an ISO 4217 code such as USD or EUR, not {PICTOR_CURRENCY!r}"
    )
PICTOR_CREDIT_PRICE: Decimal | None = None
if envstr("PICTOR_CREDIT_PRICE").strip():
    try:
        PICTOR_CREDIT_PRICE = Decimal(envstr("PICTOR_CREDIT_PRICE").strip())
    except InvalidOperation:
        PICTOR_CREDIT_PRICE = Decimal("NaN")
    if not PICTOR_CREDIT_PRICE.is_finite() or PICTOR_CREDIT_PRICE <= 0:
        raise ImproperlyConfigured(
            "PICTOR_CREDIT_PRICE must be a positive decimal number such as 0.01 (unset: no prices)"
        )
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The account pages (accounts/urls.py).
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/app/"

# Mail (password reset, team invitations): printed on the console unless an SMTP host is set.
EMAIL_HOST = envstr("EMAIL_HOST")
EMAIL_BACKEND = envstr(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = envint("EMAIL_PORT", 587)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "Pictor <noreply@localhost>")
# Where django.core.mail.backends.filebased.EmailBackend writes each email as a file.
EMAIL_FILE_PATH = envstr("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))

# Sign-up (accounts/verification.py, accounts/challenge.py). The emailed verification link
# lives this many hours; keys and free credits wait for it.
PICTOR_EMAIL_VERIFICATION_HOURS = envint("PICTOR_EMAIL_VERIFICATION_HOURS", 48)
# Sign-ups allowed per client address per hour, and per /24 (IPv6: /64) per day; 0: no limit.
PICTOR_SIGNUPS_PER_ADDRESS = envint("PICTOR_SIGNUPS_PER_ADDRESS", 3)
PICTOR_SIGNUPS_PER_NETWORK = envint("PICTOR_SIGNUPS_PER_NETWORK", 10)
# Addresses that had free credits are kept as HMAC digests under this secret; changing it
# lets every address have free credits once more.
PICTOR_EMAIL_HMAC_SECRET = envstr("PICTOR_EMAIL_HMAC_SECRET", SECRET_KEY)
# An optional person-or-bot challenge on the sign-up form: "turnstile" (Cloudflare) or
# "hcaptcha"; empty: off. The verify URL defaults to the provider's siteverify endpoint.
PICTOR_CHALLENGE_PROVIDER = envstr("PICTOR_CHALLENGE_PROVIDER").strip().lower()
PICTOR_CHALLENGE_SITE_KEY = envstr("PICTOR_CHALLENGE_SITE_KEY")
PICTOR_CHALLENGE_SECRET_KEY = envstr("PICTOR_CHALLENGE_SECRET_KEY")
PICTOR_CHALLENGE_VERIFY_URL = envstr("PICTOR_CHALLENGE_VERIFY_URL")
if PICTOR_CHALLENGE_PROVIDER not in ("", "turnstile", "hcaptcha"):
    raise ImproperlyConfigured("PICTOR_CHALLENGE_PROVIDER must be turnstile, hcaptcha or empty")
if PICTOR_CHALLENGE_PROVIDER and not (PICTOR_CHALLENGE_SITE_KEY and PICTOR_CHALLENGE_SECRET_KEY):
    raise ImproperlyConfigured(
        "PICTOR_CHALLENGE_PROVIDER needs PICTOR_CHALLENGE_SITE_KEY and PICTOR_CHALLENGE_SECRET_KEY"
    )

# Security headers on every response (SecurityMiddleware, XFrameOptionsMiddleware).
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Logs (sdplatform/logs.py): "text" lines for people, or "json", one object per line, for a log
# collector. Either way each line carries the request and job ids, and API keys are redacted.
PICTOR_LOG_FORMAT = envstr("PICTOR_LOG_FORMAT", "text")
if PICTOR_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured("PICTOR_LOG_FORMAT must be text or json")
LOGGING = logging_config(PICTOR_LOG_FORMAT, envstr("LOG_LEVEL", "INFO"))

# Metrics (sdplatform/metrics.py). Web and worker processes each write their counts to files in
# this folder, which /metrics adds up. prometheus_client reads the variable when it creates a
# metric, so it is exported here, before any is; child processes inherit it.
PROMETHEUS_MULTIPROC_DIR = Path(envstr("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics")))
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)
# Scrapers send it as "Authorization: Bearer <token>"; empty: only staff sessions see /metrics.
PICTOR_METRICS_TOKEN = envstr("PICTOR_METRICS_TOKEN")
# Above 0: `manage.py worker` serves this host's metrics on that port (worker-only hosts).
PICTOR_METRICS_PORT = envint("PICTOR_METRICS_PORT", 0)
if PICTOR_METRICS_PORT and not PICTOR_METRICS_TOKEN:
    raise ImproperlyConfigured("PICTOR_METRICS_PORT needs PICTOR_METRICS_TOKEN")

# HTTPS in production: secure cookies, HSTS, and plain HTTP redirected to https, except the
# probes, which load balancers and Prometheus call over plain HTTP inside the network.
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = envbool("PICTOR_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = envint("PICTOR_HSTS_SECONDS", 365 * 24 * 3600 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("PICTOR_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = envbool("PICTOR_HSTS_PRELOAD", False)
# With TLS ended at a proxy, only X-Forwarded-Proto tells Django a request came over https. It
# is believed only from a trusted proxy: a client reaching gunicorn directly could forge it.
if PICTOR_TRUSTED_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# security.W021 asks for HSTS preload. That stays the operator's choice: the directive lets
# anyone submit the domain to the browsers' built-in lists, which takes months to leave.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# API keys are stored as HMAC digests under this secret; rotating it invalidates every key.
API_KEY_HMAC_SECRET = envstr("API_KEY_HMAC_SECRET", SECRET_KEY)
