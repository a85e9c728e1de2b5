"""Every setting comes from the environment, here and nowhere else.

`.env.example` documents each variable. Development works with no variables at all
(`DEBUG=true` is written to `.env` by `make demo`); production values that are missing
are reported by the system checks in `portal.checks` (ids `portal.E001`...), so a
misconfigured deployment refuses to start instead of running with insecure defaults.
"""

import os
import warnings
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# `.env` first, so that every variable below may come from it; a variable set in the
# environment wins over the file. PORTAL_ENV_FILE (from the environment only) names
# another file, which must then exist.
env = environ.Env()
if _env_file := os.environ.get("PORTAL_ENV_FILE", ""):
    if not Path(_env_file).is_file():
        raise ImproperlyConfigured(f"PORTAL_ENV_FILE names {_env_file}, which is not a file.")
environ.Env.read_env(_env_file or BASE_DIR / ".env", overwrite=False)


def _path(name, default):
    """A folder from `name`; empty (as `.env.example` leaves it) means `default`."""
    return Path(env.str(name, default="") or default)


DATA_DIR = _path("PORTAL_DATA_DIR", BASE_DIR / "data")

DEBUG = env.bool("DEBUG", default=False)

# Settings a production deployment must set; see portal.checks.
MISSING_PRODUCTION_SETTINGS = [
    name
    for name in ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "ALLOWED_HOSTS")
    if not env.str(name, "")
]

SECRET_KEY = (
    env.str("SECRET_KEY", default="") or "insecure-development-key-do-not-use-in-production"
)
# A Fernet key (32 url-safe base64 bytes). Without one, development derives a key from
# SECRET_KEY so the demo works; production must set its own (portal.E002).
FIELD_ENCRYPTION_KEY = env.str("FIELD_ENCRYPTION_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Public base URL of the portal, used in pay links and webhooks registered in Halo.
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
# Seconds a customer's account-page link stays valid (billing.accounts.links).
ACCOUNT_LINK_MAX_AGE = env.int("ACCOUNT_LINK_MAX_AGE", default=30 * 24 * 3600)
# "Email me a link" to the account page: per address typed at a tenant, per client address.
ACCOUNT_LINK_EMAIL_RATE = env.str("ACCOUNT_LINK_EMAIL_RATE", default="3/hour")
ACCOUNT_LINK_IP_RATE = env.str("ACCOUNT_LINK_IP_RATE", default="20/hour")
# Sign in with Halo (billing.accounts.halo_signin): sign-ins started per client address.
HALO_SIGNIN_RATE = env.str("HALO_SIGNIN_RATE", default="60/hour")

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Redoc served from static files, not a CDN
    "csp",
    "django_q",
    "portal",
    "integrations",
    "integrations.billing_sync",
    "billing",
    "billing.invoicing",
    "integrations.invoice_sync",
    "billing.payments",
    "billing.accounts",
    "billing.reminders",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, pay pages) from the app itself, so `migrate` then start is a
    # whole deployment: no collectstatic, no web server in front required.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.security.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.access.ActiveTenantMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused by axes' backend into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
                "portal.access.tenant_context",
                "portal.admin_site.site_names",
            ],
        },
    },
]

DATABASES = {
    # Empty (as `.env.example` leaves it): the SQLite file in DATA_DIR.
    "default": env.db_url_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{DATA_DIR / 'portal.sqlite3'}"
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, simulator-driven syncs) share the file: wait for
    # locks instead of failing, and let readers run beside the writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that does not answer fails a request (and /healthz) in seconds, not minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )
# Keep connections between requests (a new connection per request halves API throughput).
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
# Seconds to connect to Redis and for each answer: a Redis that hangs fails the request (and
# /healthz reports the broker down) instead of holding a web worker.
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=5.0)


def redis_url_with_timeouts(url, seconds):
    """`url` with `socket_timeout` and `socket_connect_timeout` (unless it sets them): how
    django-q2's Redis broker takes connection options."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {name for name, _ in query}
    query += [
        (n, f"{seconds:g}") for n in ("socket_timeout", "socket_connect_timeout") if n not in given
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


# The cache is shared by every web and worker process: Halo tokens and rate budgets live there.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_timeout": REDIS_SOCKET_TIMEOUT,
                "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "portal_cache",
        }
    }

Q_CLUSTER = {
    "name": env.str("Q_CLUSTER_NAME", default="portal"),
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": env.int("Q_TIMEOUT", default=900),
    "retry": env.int("Q_RETRY", default=1200),
    "max_attempts": 1,
    "catch_up": False,  # after downtime a missed schedule runs once, not once per slot
    "save_limit": 500,
    "label": "Background tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = redis_url_with_timeouts(REDIS_URL, REDIS_SOCKET_TIMEOUT)
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = env.float("Q_POLL", default=0.5)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Login and password-reset limits (portal.login_limits) ---------------------------------
# django-axes' backend first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "admin:login"
# Wrong passwords for one username from one client address before that pair is locked out,
# and for how long (a failure while locked out starts the wait again). Locking the pair,
# not the username, means an attacker cannot lock a user out from everywhere.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The login forms' field (axes' default is a lazy object, which DEBUG error pages choke on).
AXES_USERNAME_FORM_FIELD = "username"
AXES_RESET_ON_SUCCESS = True
# The client address as pay-link throttling sees it: X-Forwarded-For only behind
# PAYMENTS_PROXIES trusted proxies.
AXES_CLIENT_IP_CALLABLE = "portal.login_limits.client_address"
AXES_LOCKOUT_CALLABLE = "portal.login_limits.lockout_response"
# Attempts are not tenant data: no admin for them (unlock with `manage.py axes_reset_username`
# or wait for the cool-off), and no log of every successful login.
AXES_ENABLE_ADMIN = False
AXES_DISABLE_ACCESS_LOG = True
# Password-reset mails (DRF rate syntax; empty: unlimited): per address typed, and requests
# per client address. Over a limit nothing is sent and the page says what it always says.
PASSWORD_RESET_EMAIL_RATE = env.str("PASSWORD_RESET_EMAIL_RATE", default="3/hour")
PASSWORD_RESET_IP_RATE = env.str("PASSWORD_RESET_IP_RATE", default="20/hour")
# Days an emailed invitation to join a tenant stays valid (portal.invitations).
INVITATION_DAYS = env.int("INVITATION_DAYS", default=7)
# --- end login limits ------------------------------------------------------------------------

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# WhiteNoise serves the apps' static files where they are (found at start, cached for a
# day); `collectstatic` into STATIC_ROOT is optional, for a CDN or a web server in front.
WHITENOISE_USE_FINDERS = True
# Without collectstatic there is no STATIC_ROOT to index: that is expected, not a warning.
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")
WHITENOISE_MAX_AGE = 86_400
STATIC_ROOT = _path("STATIC_ROOT", BASE_DIR / "staticfiles")
MEDIA_ROOT = _path("MEDIA_ROOT", DATA_DIR / "media")
MEDIA_URL = "/media/"

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Halo Partner Portal <portal@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# HTTPS only in production: plain HTTP is redirected (except /healthz, which load
# balancers probe over HTTP) and browsers are told to use HTTPS for a year (HSTS).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
# Behind a proxy that terminates TLS: the header it sets to "https" (e.g. X-Forwarded-Proto;
# the proxy must overwrite what clients send). Unset: no header is trusted, since a client
# could send it to pass plain HTTP off as HTTPS.
if _proxy_ssl_header := env.str("SECURE_PROXY_SSL_HEADER", default=""):
    _meta_name = _proxy_ssl_header.strip().upper().replace("-", "_").removeprefix("HTTP_")
    SECURE_PROXY_SSL_HEADER = (f"HTTP_{_meta_name}", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp, portal.security.CSPMiddleware) on every page but PDFs:
# scripts only from the portal's static files (no inline script, no other site). Styles may
# be inline: the admin's templates and list columns use style attributes. Pay pages send
# their own stricter policy (billing.payments.views), which this one leaves in place.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    # Deny by default: with no authentication classes nobody is authenticated, so a view
    # is open only when it declares its own permission_classes (public ones say AllowAny).
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
    # JSON no database stores (NULs, lone surrogates, deep nesting) is a 400, in every API.
    "DEFAULT_PARSER_CLASSES": [
        "portal.input_checks.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Halo Partner Portal API",
    "DESCRIPTION": "Usage input, invoice PDFs for Halo, and Halo webhook deliveries.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs describe the public APIs and hold no tenant data.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "REDOC_DIST": "SIDECAR",
    "PREPROCESSING_HOOKS": ["portal.api.api_paths_only"],
}

# Seconds since the last worker heartbeat after which /healthz reports the worker down.
HEALTHZ_MAX_HEARTBEAT_AGE = env.int("HEALTHZ_MAX_HEARTBEAT_AGE", default=180)
# A running run (billing sync, invoice sync, a ledger slot) beats every RUN_HEARTBEAT_SECONDS
# from a thread; one silent for RUN_STALE_SECONDS died with its worker and is taken back.
RUN_HEARTBEAT_SECONDS = env.int("RUN_HEARTBEAT_SECONDS", default=20)
RUN_STALE_SECONDS = env.int("RUN_STALE_SECONDS", default=120)
# A due ledger run sent to an idle broker this long ago and still unclaimed was lost (a
# worker prefetched it and died): it is sent again.
LEDGER_REQUEUE_IDLE_SECONDS = env.int("LEDGER_REQUEUE_IDLE_SECONDS", default=120)
# /metrics (portal.metrics): a bearer token, or client addresses/networks allowed without
# one (loopback by default); a tenant label on run metrics only when switched on.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1/32", "::1/128"])
METRICS_PER_TENANT = env.bool("METRICS_PER_TENANT", default=False)

DEFAULT_EXCEPTION_REPORTER_FILTER = "portal.crypto.SecretSafeReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django-q": {"level": env.str("Q_LOG_LEVEL", default="WARNING")}},
}

# --- Halo API client (integrations.halo) ------------------------------------------------
# Seconds to open a connection to Halo / to wait for an answer.
HALO_CONNECT_TIMEOUT = env.float("HALO_CONNECT_TIMEOUT", default=5.0)
HALO_READ_TIMEOUT = env.float("HALO_READ_TIMEOUT", default=30.0)
# Most seconds one Halo call may spend retrying (backoff, Retry-After, rate budget waits).
HALO_RETRY_BUDGET_SECONDS = env.float("HALO_RETRY_BUDGET_SECONDS", default=120.0)
# Most seconds a web request (an admin action, a pay page's PDF) spends on Halo in all:
# retries, timeouts and rate-budget waits included. Keep it under the web server's worker
# timeout; longer work runs on the worker.
HALO_WEB_BUDGET_SECONDS = env.float("HALO_WEB_BUDGET_SECONDS", default=8.0)
# Backoff without Retry-After: full jitter up to BASE doubling per retry, at most CAP seconds.
HALO_BACKOFF_BASE = env.float("HALO_BACKOFF_BASE", default=5.0)
HALO_BACKOFF_CAP = env.float("HALO_BACKOFF_CAP", default=60.0)
# Requests per seconds each connection may make, across all processes (Halo allows 300/300).
HALO_RATE_LIMIT = env.str("HALO_RATE_LIMIT", default="280/300")
# Records per POST, and rows per page when listing.
HALO_BATCH_SIZE = env.int("HALO_BATCH_SIZE", default=100)
HALO_PAGE_SIZE = env.int("HALO_PAGE_SIZE", default=100)
# Page size of the one read that looks records up by natural key after many writes
# (creates Halo saved without echoing them, or whose answer was lost).
HALO_LOOKUP_PAGE_SIZE = env.int("HALO_LOOKUP_PAGE_SIZE", default=1000)
# Seconds to wait for <site>/api/authinfo when deriving a connection's URLs.
HALO_DISCOVERY_TIMEOUT = env.float("HALO_DISCOVERY_TIMEOUT", default=3.0)
# Let Halo URLs lead to private or loopback addresses (development and the simulator; a
# self-hosted Halo on the portal's own network). Off in production: tenant admins type them.
HALO_ALLOW_PRIVATE_ADDRESSES = env.bool("HALO_ALLOW_PRIVATE_ADDRESSES", default=DEBUG)
# --- end Halo API client ------------------------------------------------------------------

# --- Billing sync CSV import (integrations.billing_sync.csv_import) --------------------------
# Largest CSV file the usage import takes (bytes), and minutes an uploaded file is kept on
# the server between its preview and the confirmation.
CSV_IMPORT_MAX_BYTES = env.int("CSV_IMPORT_MAX_BYTES", default=20 * 1024 * 1024)
CSV_IMPORT_KEEP_MINUTES = env.int("CSV_IMPORT_KEEP_MINUTES", default=120)

# --- Payments (billing.payments) -----------------------------------------------------------
# The built-in test processor (demo cards, no real money) takes payments only where this is
# true: off in production by default, so a tenant left on it cannot mark invoices paid.
PAYMENTS_TEST_PROCESSOR = env.bool("PAYMENTS_TEST_PROCESSOR", default=DEBUG)
# Pay-link lookups (/pay/<tenant>/<ref>) per client address, as a DRF rate; empty: no limit.
PAYMENTS_LINK_RATE = env.str("PAYMENTS_LINK_RATE", default="60/min")
# Reverse proxies in front of the portal that append to X-Forwarded-For (0: none, so the
# header, which clients can forge, is ignored when counting pay-link lookups per address).
PAYMENTS_PROXIES = env.int("PAYMENTS_PROXIES", default=0)
# Pay-link misses (lookups finding no invoice, wrong answers to the pay-link question)
# that raise a pay-link alert (billing.payments.enumeration): per client address and across a
# tenant within a window of PAYMENTS_ALERT_WINDOW seconds (0: never). The tenant's owners are
# emailed once per incident; it ends after PAYMENTS_ALERT_QUIET seconds without another.
PAYMENTS_ALERT_WINDOW = env.int("PAYMENTS_ALERT_WINDOW", default=600)
PAYMENTS_ALERT_ADDRESS_MISSES = env.int("PAYMENTS_ALERT_ADDRESS_MISSES", default=20)
PAYMENTS_ALERT_TENANT_MISSES = env.int("PAYMENTS_ALERT_TENANT_MISSES", default=100)
PAYMENTS_ALERT_QUIET = env.int("PAYMENTS_ALERT_QUIET", default=3600)
# Answers to the pay-link question per invoice (DRF rate), whoever sends them: stops many
# addresses together guessing one invoice's total or billing email.
PAYMENTS_LINK_CHECK_RATE = env.str("PAYMENTS_LINK_CHECK_RATE", default="10/hour")
# Minutes a Stripe Checkout Session stays open (Stripe allows 30 to 1440).
PAYMENTS_STRIPE_SESSION_MINUTES = env.int("PAYMENTS_STRIPE_SESSION_MINUTES", default=60)
# Longest wait in seconds between retries of a write to Halo (payments, pay links).
PAYMENTS_OUTBOX_MAX_BACKOFF = env.int("PAYMENTS_OUTBOX_MAX_BACKOFF", default=3600)
# --- end Payments ---------------------------------------------------------------------------

# --- Invoice PDFs (billing.invoicing) -------------------------------------------------------
# Requests each PDF secret may make to GET /api/v1/invoices/<ref>/pdf (DRF rate syntax).
INVOICE_PDF_RATE = env.str("INVOICE_PDF_RATE", default="600/min")
# Seconds a PDF fetched from Halo (the "halo" source) is served before Halo is asked again.
INVOICE_PDF_HALO_TTL = env.int("INVOICE_PDF_HALO_TTL", default=600)
# Most seconds one PDF request spends on Halo (retries and timeouts included) before using
# another source; at most HALO_WEB_BUDGET_SECONDS, as a page waits on it.
INVOICE_PDF_HALO_BUDGET = env.float("INVOICE_PDF_HALO_BUDGET", default=8.0)
# --- end Invoice PDFs -----------------------------------------------------------------------
