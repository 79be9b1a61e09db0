"""Fixtures for the SCEP endpoint tests: a local CA with its RA, templates of each
challenge type, a device with an owner, and SCEP clients that speak to the endpoint.

Persona: dana owns the MacBook that enrolls (alice, bob and charlie are in
``tests/conftest.py``)."""

import contextlib
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from django.db import connections
from django.test import Client

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate, CertificateRequest
from apps.devices.models import Device, UserAttributes
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import AttemptCounter, CertificateTemplate
from apps.enrollment.services import mint_challenge
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.pki.services import ensure_ra
from tests.factories import force_ca, force_template, force_user
from tests.scep.client import DjangoTransport, ScepClient, UrlTransport

STATIC_CHALLENGE = "static-Challenge-7f3k"
DEVICE_SERIAL = "C02ZK1ABMD6T"
DEVICE_UDID = "00008103-001a2b3c4d5e6f70"
DYNAMIC_SUBJECT = "O=Zylker,OU=$USERID$,CN=$DEVICE_SN$"
DYNAMIC_SANS = [
    ("rfc822", "$EMAIL$"),
    ("upn", "$USER_UPN$"),
    ("uri", "urn:udid:$DEVICE_UDID$"),
]


def endpoint_path(template: CertificateTemplate, suffix: str = "pkiclient.exe") -> str:
    return f"/scep/{template.slug}/{suffix}"


@pytest.fixture
def ca(db) -> CertificateAuthority:
    """A local CA (EC P-256: fast) with its SCEP RA (always RSA 2048)."""
    return ensure_ra(force_ca())


@pytest.fixture
def make_template(ca) -> Callable[..., CertificateTemplate]:
    """``make_template(challenge_type, **fields)``: a template of ``ca`` for RSA 2048 keys."""

    def make(challenge_type: str = ChallengeType.NONE, **fields) -> CertificateTemplate:
        fields.setdefault("ca", ca)
        fields.setdefault("key_algorithm", KeyAlgorithm.RSA_2048)
        fields.setdefault("subject", "O=mdmcerts tests,CN=scep device")
        if challenge_type == ChallengeType.STATIC:
            fields.setdefault("static_challenge", STATIC_CHALLENGE)
        return force_template(challenge_type=challenge_type, **fields)

    return make


@pytest.fixture
def template_none(make_template) -> CertificateTemplate:
    return make_template(ChallengeType.NONE, subject="O=mdmcerts tests,CN=open enrollment")


@pytest.fixture
def template_static(make_template) -> CertificateTemplate:
    return make_template(ChallengeType.STATIC, subject="O=mdmcerts tests,CN=static enrollment")


@pytest.fixture
def template_dynamic(make_template) -> CertificateTemplate:
    """Subject and SANs from the device and its owner."""
    return make_template(ChallengeType.DYNAMIC, subject=DYNAMIC_SUBJECT, sans=DYNAMIC_SANS)


@pytest.fixture
def dana(db):
    user = force_user("dana", first_name="Dana", last_name="Scully", email="dana@zylker.com")
    UserAttributes.objects.create(user=user, upn="dana@corp.zylker.com")
    return user


@pytest.fixture
def device(dana) -> Device:
    return Device.objects.create(
        name="Dana's MacBook",
        platform="macos",
        serial_number=DEVICE_SERIAL,
        udid=DEVICE_UDID,
        owner=dana,
    )


@pytest.fixture
def challenge_for(device) -> Callable[..., str]:
    """``challenge_for(template)``: a fresh dynamic challenge bound to dana's MacBook."""

    def mint(template: CertificateTemplate, **kwargs) -> str:
        kwargs.setdefault("device", device)
        return mint_challenge(template=template, **kwargs)[1]

    return mint


@pytest.fixture
def scep(db) -> Callable[..., ScepClient]:
    """``scep(template, **options)``: a SCEP client of the template's endpoint through
    Django's test client; ``remote_addr`` picks the source address."""

    def connect(template: CertificateTemplate, *, remote_addr: str = "192.0.2.10", **options):
        transport = DjangoTransport(Client(), remote_addr=remote_addr)
        return ScepClient(transport, endpoint_path(template), **options)

    return connect


@dataclass
class LiveScep:
    """The live server: its URL and, in order, the (method, operation) of each request."""

    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0  # how many requests the server handled at the same time

    def client(self, template: CertificateTemplate, **options) -> ScepClient:
        return ScepClient(UrlTransport(self.url), endpoint_path(template), **options)


def shares_one_connection() -> bool:
    """SQLite's in-memory test database: the live server's threads all use the test's
    one connection (there is no other way to reach the database)."""
    return any(conn.vendor == "sqlite" and conn.is_in_memory_db() for conn in connections.all())


@pytest.fixture
def live_scep(live_server) -> Iterator[LiveScep]:
    """pytest-django's live server (threads in this process), logging each request.

    Where all threads share one SQLite connection, concurrent transactions would run
    inside each other's, so requests are then served one at a time; on PostgreSQL each
    thread has its own connection and requests really run in parallel.
    """
    live = LiveScep(live_server.url)
    httpd = live_server.thread.httpd
    app = httpd.get_app()
    serve = threading.Lock() if shares_one_connection() else contextlib.nullcontext()
    count = threading.Lock()

    def logged(environ, start_response):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        live.requests.append((environ["REQUEST_METHOD"], query.get("operation", [""])[0]))
        with serve:
            with count:
                live.in_flight += 1
                live.most_in_flight = max(live.most_in_flight, live.in_flight)
            try:
                response = app(environ, start_response)
                try:
                    return [b"".join(response)]
                finally:
                    response.close()
            finally:
                with count:
                    live.in_flight -= 1

    httpd.set_app(logged)
    yield live
    httpd.set_app(app)


def nothing_issued() -> bool:
    """No certificate and no request row exist."""
    return not Certificate.objects.exists() and not CertificateRequest.objects.exists()


def refusals() -> list[str]:
    """Messages of the "issuance failed" audit events, oldest first."""
    return list(
        AuditEvent.objects.filter(action="issue_failed")
        .order_by("created_at", "id")
        .values_list("message", flat=True)
    )


def failures_of(template: CertificateTemplate) -> dict[tuple[str, str], int]:
    """The template's failed-attempt counters: (scope, identifier) -> failures."""
    return {
        (counter.scope, counter.identifier): counter.failures
        for counter in AttemptCounter.objects.filter(template=template)
    }
