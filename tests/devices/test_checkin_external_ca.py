"""Check-ins that deliver profiles of an external SCEP CA, through the device API:

- server-side: a device enrolled after its profile was assigned has no identity yet; its
  check-in asks the generation task for one at once (not at the hourly sweep), and the
  next check-in gets the PKCS#12 that micromdm's ``scepserver`` (the external CA, run by
  the test) issued;
- delegate with dynamic NDES challenges: the NDES double of ``tests/ndes_double.py``
  (NDES cannot run here) hands out the challenge the payload carries; a wrong password,
  a page without a challenge and a slow answer each fail the delivery with the reason,
  never the check-in.

Personas: dana owns the devices of the "Zylker laptops" group (``tests/devices/conftest``).
"""

import base64
import threading

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from apps.audit.models import AuditEvent
from apps.certificates.identities import generate_pending_identities, request_generation
from apps.enrollment.choices import ChallengeType, ExternalDelivery, KeyGeneration
from apps.enrollment.models import Challenge
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.profiles.choices import PayloadKind
from apps.profiles.models import Delivery, ProfilePayload
from apps.profiles.services import assign
from tests import ndes_double
from tests import scepserver as scepserver_fixtures
from tests.devices.conftest import SANS, SUBJECT, force_profile, scep_payload_of
from tests.factories import force_template
from tests.ndes_double import CHALLENGE, PASSWORD, USERNAME
from tests.scep.upstream import ndes_external_ca
from tests.scepserver import external_ca_for
from tests.subprocesses import free_port

pytestmark = pytest.mark.django_db
scepserver, start_scepserver = scepserver_fixtures.scepserver, scepserver_fixtures.start_scepserver
ndes = ndes_double.ndes  # fixture: the stand-in for NDES's mscep_admin page

EXTERNAL_URL = "https://ndes.zylker.com/certsrv/mscep/mscep.dll"


def external_template(ca, **fields):
    return force_template(
        ca=ca,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.NONE,
        subject=SUBJECT,
        sans=SANS,
        **fields,
    )


# --- server-side: the identity of a device enrolled after the assignment ------------------


def vpn_profile(template):
    profile = force_profile()
    ProfilePayload.objects.create(
        profile=profile, kind=PayloadKind.PKCS12, display_name="VPN identity", template=template
    )
    return profile


def test_a_device_enrolled_after_the_assignment_gets_its_external_identity_without_the_sweep(
    enroll, group, scepserver, eager_celery, django_capture_on_commit_callbacks
):
    # Given a server-side profile of the external CA assigned to the group...
    ca = external_ca_for(scepserver)
    template = external_template(
        ca, key_generation=KeyGeneration.SERVER, external_delivery=ExternalDelivery.SERVER_SIDE
    )
    profile = vpn_profile(template)
    assign(profile=profile, group=group)
    # ...and a laptop that joins the group afterwards.
    laptop = enroll("SN-DANA-9")

    # When it checks in before any identity was generated for it...
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        first = laptop.checkin()

    # ...then the profile waits, and the generation was asked for after the commit.
    assert first["install"] == []
    row = Delivery.objects.get(device=laptop.device, profile=profile)
    assert (row.status, row.error) == (
        "failed",
        f"PKCS#12 payload 'VPN identity': the identity is requested from external CA server "
        f"{ca} by the next generation",
    )
    assert request_generation in callbacks  # run just now, eagerly: scepserver issued
    assert scepserver.issued_count() == 1

    # The next check-in gets the PKCS#12 of the certificate scepserver issued.
    (item,) = laptop.checkin()["install"]
    (payload,) = item["profile"]["payloads"]
    bundle = payload["pkcs12"]
    key, certificate, _ = pkcs12.load_key_and_certificates(
        base64.b64decode(bundle["data"]), bundle["password"].encode()
    )
    assert certificate.issuer == scepserver.ca_certificate.subject
    certificate.verify_directly_issued_by(scepserver.ca_certificate)
    assert certificate.public_key() == key.public_key()
    assert bundle["subject"] == "O=Zylker,OU=dana,CN=SN-DANA-9"


def test_an_enrollment_that_failed_is_left_to_the_sweep_not_retried_at_each_checkin(
    enroll, group, scepserver, django_capture_on_commit_callbacks
):
    ca = external_ca_for(scepserver)
    down = f"http://127.0.0.1:{free_port()}/scep"
    CertificateAuthority.objects.filter(pk=ca.pk).update(scep_url=down)
    template = external_template(
        ca, key_generation=KeyGeneration.SERVER, external_delivery=ExternalDelivery.SERVER_SIDE
    )
    profile = vpn_profile(template)
    assign(profile=profile, group=group)
    laptop = enroll("SN-DANA-9")
    assert generate_pending_identities() == 0  # the CA is down: the enrollment failed

    with django_capture_on_commit_callbacks() as callbacks:
        assert laptop.checkin()["install"] == []

    assert request_generation not in callbacks
    row = Delivery.objects.get(device=laptop.device, profile=profile)
    assert row.error == (
        f"PKCS#12 payload 'VPN identity': enrollment with external CA server {ca} failed, "
        f"retried later: CA server {ca}: cannot reach {down}: Connection refused"
    )


def test_a_local_ca_failure_does_not_ask_for_a_generation(
    enroll, group, template, django_capture_on_commit_callbacks
):
    template.subject = "O=Zylker,CN=$USER_CUSTOM1$"  # a variable dana's laptop has no value for
    template.save()
    profile = force_profile(template=template)
    assign(profile=profile, group=group)
    laptop = enroll()

    with django_capture_on_commit_callbacks() as callbacks:
        assert laptop.checkin()["install"] == []

    assert Delivery.objects.get(device=laptop.device, profile=profile).status == "failed"
    assert request_generation not in callbacks


# --- delegate with dynamic challenges from NDES -------------------------------------------


def ndes_profile(group, url: str, *, password: str = PASSWORD, **fields):
    ca = ndes_external_ca(EXTERNAL_URL, challenge_url=url, password=password, **fields)
    profile = force_profile(
        template=external_template(ca, external_delivery=ExternalDelivery.DELEGATE)
    )
    assign(profile=profile, group=group)
    return ca, profile


def test_a_delegate_payload_carries_the_challenge_ndes_handed_out(enroll, group, ndes):
    ca, profile = ndes_profile(group, ndes.url)
    laptop = enroll()

    (item,) = laptop.checkin()["install"]

    scep = scep_payload_of(item)
    assert (scep["url"], scep["challenge"]) == (EXTERNAL_URL, CHALLENGE)
    assert scep["ca_fingerprint_sha256"] == ca.fingerprint_sha256
    expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert ndes.seen_authorizations == [f"Basic {expected}"]
    assert Delivery.objects.get(device=laptop.device, profile=profile).status == "delivered"
    assert Challenge.objects.count() == 0  # NDES checks its own challenge


def _failed_checkin(laptop, profile) -> Delivery:
    response = laptop.api.post("checkin")
    assert response.status_code == 200, response.content
    assert response.json()["install"] == []
    return Delivery.objects.get(device=laptop.device, profile=profile)


def test_a_wrong_ndes_password_fails_the_delivery_not_the_checkin(enroll, group, ndes):
    ca, profile = ndes_profile(group, ndes.url, password="not-the-password-4")
    laptop = enroll()

    row = _failed_checkin(laptop, profile)

    assert (row.status, row.error) == (
        "failed",
        f"SCEP payload 'Wi-Fi identity': CA server {ca} gave no challenge: CA server {ca}: "
        f"NDES refused the credentials of {USERNAME!r} at {ndes.url} (HTTP 401; Basic "
        "authentication must be enabled on mscep_admin)",
    )
    (event,) = AuditEvent.objects.filter(action="issue_failed", object_id=str(laptop.device.pk))
    assert event.message == f"profile {profile} not delivered: {row.error}"
    assert "not-the-password-4" not in event.message


def test_an_ndes_page_without_a_challenge_fails_the_delivery_with_the_reason(enroll, group, ndes):
    ndes.body = "<HTML><Body><P>IIS Windows Server</P></Body></HTML>".encode("utf-16")
    ca, profile = ndes_profile(group, ndes.url)
    laptop = enroll()

    row = _failed_checkin(laptop, profile)

    assert row.status == "failed"
    assert row.error == (
        f"SCEP payload 'Wi-Fi identity': CA server {ca} gave no challenge: CA server {ca}: the "
        "NDES page holds no enrollment challenge password; is the challenge URL the "
        "mscep_admin page (http(s)://host/certsrv/mscep_admin/)?"
    )


def test_a_slow_ndes_fails_the_delivery_at_the_ca_servers_timeout(enroll, group, ndes):
    ndes.stall = threading.Event()
    ca, profile = ndes_profile(group, ndes.url, scep_request_timeout_seconds=1)
    laptop = enroll()

    row = _failed_checkin(laptop, profile)

    assert row.status == "failed"
    assert row.error == (
        f"SCEP payload 'Wi-Fi identity': CA server {ca} gave no challenge: CA server {ca}: "
        f"NDES challenge page: {ndes.url} did not answer within 1 s"
    )
    # The next check-in, with NDES answering again, gets the profile.
    ndes.stall.set()
    ndes.stall = None
    (item,) = laptop.checkin()["install"]
    assert scep_payload_of(item)["challenge"] == CHALLENGE
