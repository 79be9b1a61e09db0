"""Settings for mdmcerts, read from the environment (see .env.example for every variable)."""

import datetime
import sys
from pathlib import Path

import environ

from apps.core.devsecrets import MissingSetting, new_kek, new_secret_key, required_or_dev

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("MDMCERTS_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=True)

try:
    SECRET_KEY = required_or_dev(
        env.str("SECRET_KEY", default=""),
        debug=DEBUG,
        path=VAR_DIR / "secret_key",
        name="SECRET_KEY",
        factory=new_secret_key,
    )
    MDMCERTS_KEK = required_or_dev(
        env.str("MDMCERTS_KEK", default=""),
        debug=DEBUG,
        path=VAR_DIR / "kek",
        name="MDMCERTS_KEK",
        factory=new_kek,
    )
except MissingSetting as exc:
    sys.exit(f"mdmcerts: cannot start: {exc}")

PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[PUBLIC_BASE_URL])

INSTALLED_APPS = [
    "mdmcerts.apps.MdmcertsAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "axes",
    "apps.core",
    "apps.audit",
    "apps.pki",
    "apps.enrollment",
    "apps.devices",
    "apps.certificates",
    "apps.profiles",
    "apps.scep",
    "apps.portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: it turns a sign-in refused for a locked-out user into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# The lockout backend first: it refuses a locked-out username + address before any
# password is checked, for the portal's and the console's sign-in alike.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "mdmcerts.urls"
WSGI_APPLICATION = "mdmcerts.wsgi.application"

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
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The portal, the worker and beat share one SQLite file: WAL lets readers run beside
    # the single writer, IMMEDIATE takes the write lock up front instead of failing later.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
elif env.int("DATABASE_POOL_MAX_SIZE", default=0) > 0:
    # A pool per process (psycopg_pool, through Django): needed with gunicorn's gevent
    # workers, where every request runs in a greenlet of its own and a persistent
    # connection would be opened and closed per request. Django requires CONN_MAX_AGE 0.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DATABASE_POOL_MAX_SIZE"),
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["TEST"] = {"NAME": env.str("DATABASE_TEST_NAME", default="test_mdmcerts")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Security. Production runs behind a TLS proxy; these are the defaults `check --deploy`
# expects. SCEP and the CRL/OCSP URLs stay reachable over plain HTTP: devices and relying
# parties fetch them before they can trust TLS, and their payloads are signed.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if env.bool("TRUST_X_FORWARDED_PROTO", default=not DEBUG)
    else None
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^scep/", r"^pki/"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Joining the browsers' HSTS preload list is a one-way decision for the whole domain; it
# is the operator's (SECURE_HSTS_PRELOAD), so its reminder is not a deployment error.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

# Celery: Redis (or any broker URL) when set; otherwise a filesystem broker under var/
# that needs no server process.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = (
    env.str("CELERY_BROKER_URL", default="") or env.str("REDIS_URL", default="") or "filesystem://"
)
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.core.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.permissions.StaffModelPermissions"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "mdmcerts staff API",
    "DESCRIPTION": "CA servers, request templates and the certificate inventory.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "ENUM_NAME_OVERRIDES": {
        "RevocationReasonEnum": "apps.pki.choices.RevocationReason",
        "SanTypeEnum": "apps.enrollment.choices.SanType",
        "CertificateStatusEnum": "apps.certificates.choices.CertificateStatus",
        "DeviceStatusEnum": "apps.devices.choices.DeviceStatus",
        "DeliveryStatusEnum": "apps.profiles.choices.DeliveryStatus",
    },
}

# End users sign in to the self-service portal; the console has its own sign-in page.
LOGIN_URL = "portal:sign-in"
# Sessions end after a working day (seconds) rather than Django's two weeks: a forgotten
# browser should not keep access to certificate uploads for long.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=12 * 3600)
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# No script reads the CSRF cookie: every form carries the token in a hidden field.
CSRF_COOKIE_HTTPONLY = True
CSRF_FAILURE_VIEW = "apps.portal.views.csrf_failure"

# Sign-in throttling (django-axes, database handler, so every gunicorn process agrees):
# after MDMCERTS_LOGIN_FAILURE_LIMIT failed attempts for one username from one address,
# that pair is refused (even with the right password) for MDMCERTS_LOGIN_COOLOFF_MINUTES.
# Attempts while locked out are refused without extending the pause, so "wait 15 minutes"
# stays true for the person who mistyped; an attacker gets the same few tries per pause.
# `python manage.py axes_reset_username USERNAME` (or `axes_reset`) unlocks at once; the
# console lists attempts under "Axes".
AXES_FAILURE_LIMIT = env.int("MDMCERTS_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = datetime.timedelta(
    minutes=env.int("MDMCERTS_LOGIN_COOLOFF_MINUTES", default=15)
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "apps.core.net.client_ip"
AXES_VERBOSE = False  # no start-up banner on every manage.py command
AXES_LOCKOUT_CALLABLE = "apps.portal.views.locked_out"
# Masked in the attempts axes records (the password always is).
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "csrfmiddlewaretoken"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# How far a SCEP message's signing time may be from the server's clock (seconds); beyond
# it the request gets failInfo badTime.
MDMCERTS_SCEP_MAX_CLOCK_SKEW = env.int("MDMCERTS_SCEP_MAX_CLOCK_SKEW", default=24 * 3600)

# On PostgreSQL a successful PKCSReq (no approval, no dynamic challenge) is written in one
# statement instead of a dozen ORM round trips (apps/scep/commit.py); false turns that off.
MDMCERTS_SCEP_ONE_STATEMENT = env.bool("MDMCERTS_SCEP_ONE_STATEMENT", default=True)

# Device enrollment attempts allowed per client address (DRF throttle rate).
MDMCERTS_DEVICE_ENROLL_RATE = env.str("MDMCERTS_DEVICE_ENROLL_RATE", default="30/minute")

# Certificate Revocation Grace Period default (hours): the lifecycle settings start with it;
# templates may override it.
MDMCERTS_REVOCATION_GRACE_HOURS = env.int("MDMCERTS_REVOCATION_GRACE_HOURS", default=24)

# A local CA's CRL is republished this long before its nextUpdate (the beat sweep).
PKI_CRL_REPUBLISH_MARGIN = datetime.timedelta(hours=env.int("PKI_CRL_REPUBLISH_MARGIN", default=48))

# Outgoing email (the daily expiry digest): EMAIL_URL (smtp+tls://user:password@host:587)
# when set, else EMAIL_BACKEND; by default messages are printed on the console.
if env.str("EMAIL_URL", default=""):
    globals().update(env.email_url("EMAIL_URL"))
else:
    EMAIL_BACKEND = env.str(
        "EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
    )
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="mdmcerts <mdmcerts@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
