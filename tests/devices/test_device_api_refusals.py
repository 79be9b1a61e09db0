"""Device API refusals: bad or revoked token, used, expired or unknown enrollment code,
another device's challenge, acks and inventories that do not fit. Each answers 4xx with
``{"detail": …}`` (SCEP: a CertRep FAILURE) and changes nothing."""

import datetime

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate, CertificateRequest
from apps.devices import services
from apps.devices.models import Device, DeviceToken, EnrollmentCode, InstalledCertificate
from apps.enrollment.models import Challenge
from apps.profiles.models import Delivery
from apps.scep.protocol import FailInfo, PKIStatus
from tests.api.helpers import token_client
from tests.devices.conftest import API, DeviceApi, scep_enroll, scep_payload_of
from tests.factories import force_template

pytestmark = pytest.mark.django_db
FACTS = {"name": "erin-laptop", "platform": "linux", "serial_number": "SN-ERIN-1"}
TRACKED = [
    Device,
    DeviceToken,
    EnrollmentCode,
    Delivery,
    Challenge,
    InstalledCertificate,
    Certificate,
    CertificateRequest,
    AuditEvent,
]


def database_state(*models) -> dict[str, list]:
    """Every row of the tracked models, as values."""
    return {
        model.__name__: list(model.objects.order_by("pk").values()) for model in models or TRACKED
    }


@pytest.fixture
def laptop(enroll, wifi_profile):
    """Dana's laptop, enrolled and given the Wi-Fi profile once."""
    laptop = enroll()
    laptop.checkin()
    return laptop


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Device not-a-token",
        "Device",
        "Device two parts",
        "Token whatever",
        "Bearer whatever",
    ],
)
def test_a_missing_or_bad_token_is_401(laptop, authorization):
    before = database_state()
    api = DeviceApi()
    extra = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    responses = [api.post(endpoint, {}, **extra) for endpoint in ("checkin", "ack", "unenroll")]

    assert [r.status_code for r in responses] == [401, 401, 401]
    assert all(sorted(r.json()) == ["detail"] for r in responses)
    assert responses[0]["WWW-Authenticate"] == "Device"
    assert database_state() == before


def test_a_revoked_token_is_401(laptop):
    DeviceToken.objects.update(revoked_at=timezone.now())
    before = database_state()

    response = laptop.api.post("checkin", {"facts": {"name": "renamed"}})

    assert response.status_code == 401
    assert response.json() == {
        "detail": "Invalid or revoked device token; enroll the device again."
    }
    assert database_state() == before


def test_the_token_of_an_unenrolled_device_is_401(laptop):
    assert laptop.api.post("unenroll").json() == {"status": "unenrolled"}
    before = database_state()

    responses = [laptop.api.post(e) for e in ("checkin", "unenroll")]

    assert [r.status_code for r in responses] == [401, 401]
    assert database_state() == before


def test_a_staff_session_or_api_token_is_no_device_credential(laptop, alice):
    session = Client(enforce_csrf_checks=True)
    session.force_login(alice)
    staff = token_client(alice)
    before = database_state()

    by_session = session.post(f"{API}checkin", {}, content_type="application/json")
    by_token = staff.post(f"{API}checkin", {}, format="json")

    assert (by_session.status_code, by_token.status_code) == (401, 401)
    assert database_state() == before


def test_a_used_one_time_code_is_refused(dana):
    _, code = services.create_enrollment_code(name="once", owner=dana)
    assert DeviceApi().post("enroll", {"code": code, **FACTS}).status_code == 201
    before = database_state()

    response = DeviceApi().post("enroll", {"code": code, **FACTS, "serial_number": "SN-2"})

    assert response.status_code == 400
    assert response.json() == {
        "detail": "this enrollment code was used already; ask your administrator for a new one"
    }
    assert database_state() == before


def test_an_expired_code_is_refused(dana):
    services.create_enrollment_code(name="old", owner=dana)
    _, code = services.create_enrollment_code(
        name="expired", owner=dana, expires_at=timezone.now() - datetime.timedelta(minutes=1)
    )
    before = database_state()

    response = DeviceApi().post("enroll", {"code": code, **FACTS})

    assert response.status_code == 400
    assert response.json() == {
        "detail": "this enrollment code has expired; ask your administrator for a new one"
    }
    assert database_state() == before


def test_a_revoked_or_unknown_code_is_refused(dana):
    row, code = services.create_enrollment_code(name="revoked", owner=dana)
    services.revoke_enrollment_code(code=row)
    before = database_state()

    revoked = DeviceApi().post("enroll", {"code": code, **FACTS})
    unknown = DeviceApi().post("enroll", {"code": "x" + code, **FACTS})
    missing = DeviceApi().post("enroll", FACTS)

    assert [r.status_code for r in (revoked, unknown, missing)] == [400, 400, 400]
    assert "was revoked" in revoked.json()["detail"]
    assert unknown.json() == {
        "detail": "unknown enrollment code; check it or ask your administrator"
    }
    assert missing.json() == {"detail": "code: This field is required."}
    assert database_state() == before


def test_another_devices_challenge_is_refused_and_changes_nothing(enroll, wifi_profile, erin):
    """Erin's laptop builds its request from its own payload but presents the challenge
    minted for dana's laptop: the template renders dana's names for that challenge, so
    the request asks for names it would not get. Refused; dana's challenge still works."""
    dana_laptop, erin_laptop = enroll("SN-DANA-1"), enroll("SN-ERIN-1", owner=erin)
    danas_payload = scep_payload_of(dana_laptop.checkin()["install"][0])
    erins_payload = scep_payload_of(erin_laptop.checkin()["install"][0])
    before = database_state(*[m for m in TRACKED if m is not AuditEvent])

    refused = scep_enroll(erins_payload, challenge=danas_payload["challenge"])

    assert (refused.status, refused.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert "which the template does not give" in refused.fail_info_text
    assert database_state(*[m for m in TRACKED if m is not AuditEvent]) == before
    assert AuditEvent.objects.filter(action="issue_failed").count() == 1
    issued = scep_enroll(danas_payload)
    assert issued.status == PKIStatus.SUCCESS
    assert Certificate.objects.get().device == dana_laptop.device


def test_a_challenge_of_another_template_is_refused(enroll, wifi_profile, template, ca):
    laptop = enroll()
    payload = scep_payload_of(laptop.checkin()["install"][0])
    other = force_template(ca=ca, key_algorithm="rsa2048", challenge_type="dynamic")
    before = database_state(Certificate, CertificateRequest, Challenge)

    refused = scep_enroll({**payload, "url": payload["url"].replace(template.slug, other.slug)})

    assert refused.status == PKIStatus.FAILURE
    assert database_state(Certificate, CertificateRequest, Challenge) == before


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            lambda pk: {"profile_id": pk + 1, "status": "installed", "version": 1, "generation": 1},
            "was never given to this device",
        ),
        (
            lambda pk: {"profile_id": pk, "status": "installed", "version": 2, "generation": 1},
            "version 2 generation 1 is not what this device was given last "
            "(version 1, generation 1)",
        ),
        (
            lambda pk: {"profile_id": pk, "status": "removed"},
            "it was not asked to remove it",
        ),
        (
            lambda pk: {"profile_id": pk, "status": "installed"},
            "version and generation (as delivered) are required",
        ),
        (
            lambda pk: {"profile_id": pk, "status": "deleted"},
            'status: "deleted" is not a valid choice.',
        ),
    ],
    ids=["not-given", "other-version", "removal-not-asked", "no-version", "unknown-status"],
)
def test_an_ack_that_does_not_fit_is_400(laptop, wifi_profile, body, detail):
    before = database_state()

    response = laptop.api.post("ack", body(wifi_profile.pk))

    assert response.status_code == 400
    assert sorted(response.json()) == ["detail"] and detail in response.json()["detail"]
    assert database_state() == before


def test_an_ack_for_a_profile_given_to_another_device_is_400(enroll, wifi_profile, erin):
    dana_laptop, erin_laptop = enroll("SN-DANA-1"), enroll("SN-ERIN-1", owner=erin, group=None)
    dana_laptop.checkin()
    before = database_state()

    response = erin_laptop.api.post(
        "ack", {"profile_id": wifi_profile.pk, "status": "installed", "version": 1, "generation": 1}
    )

    assert response.status_code == 400
    assert database_state() == before


def test_an_unreadable_inventory_is_400_and_changes_nothing(laptop):
    laptop.device.refresh_from_db()
    before = database_state()

    bad_pem = laptop.api.post(
        "checkin",
        {
            "facts": {"name": "renamed"},
            "installed_certificates": [
                {"fingerprint_sha256": "ab" * 32},
                {"pem": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----"},
            ],
        },
    )
    bad_fingerprint = laptop.api.post(
        "checkin", {"installed_certificates": [{"fingerprint_sha256": "xyz"}]}
    )
    empty_entry = laptop.api.post("checkin", {"installed_certificates": [{}]})

    assert bad_pem.status_code == 400
    assert bad_pem.json() == {
        "detail": "installed_certificates[1]: pem is not a PEM-encoded X.509 certificate"
    }
    assert bad_fingerprint.json() == {
        "detail": "installed_certificates[0]: fingerprint_sha256 is not 64 hexadecimal digits"
    }
    assert empty_entry.json() == {
        "detail": "installed_certificates[0]: give pem or fingerprint_sha256"
    }
    assert database_state() == before


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"facts": "nope"}', "application/json"),
        (b'{"facts": {"platform": "amiga"}}', "application/json"),
        (b'{"installed_certificates": {"pem": "x"}}', "application/json"),
        (b"facts=1", "application/x-www-form-urlencoded"),
    ],
)
def test_a_malformed_checkin_is_4xx_with_a_detail(laptop, body, content_type):
    before = database_state()

    response = laptop.api.client.generic("POST", f"{API}checkin", body, content_type)

    assert 400 <= response.status_code < 500
    assert sorted(response.json()) == ["detail"] and response.json()["detail"]
    assert database_state() == before
