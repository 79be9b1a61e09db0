"""SCEP payloads of an external SCEP CA's templates: delegate (the device enrolls with the
CA at its own URL) and proxy (through its own /scep-proxy/ URL), with the CA's pinned
certificate and its challenge, in the neutral JSON and as an Apple profile; a CA that
gives no challenge fails the delivery with the reason, audited.

Personas: dana's MacBook gets the Apple profile (``tests/profiles/conftest.py``); her
Linux laptop gets the neutral one.
"""

import base64
import datetime
import hashlib

import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from django.core import signing

from apps.audit.models import AuditEvent
from apps.enrollment.choices import ChallengeType, ExternalDelivery
from apps.enrollment.models import Challenge
from apps.pki.choices import ExternalChallengeType, KeyAlgorithm
from apps.profiles import delivery
from apps.profiles.choices import PayloadKind
from apps.profiles.models import Delivery
from apps.profiles.services import assign
from apps.scep.proxy import SIGNING_SALT
from tests import ndes_double
from tests.factories import force_template
from tests.ndes_double import CHALLENGE, USERNAME
from tests.profiles.apple_schema import assert_valid_mobileconfig
from tests.profiles.conftest import SANS, SUBJECT
from tests.profiles.factories import force_device, force_payload, force_profile
from tests.scep.upstream import ndes_external_ca, offline_external_ca

pytestmark = pytest.mark.django_db
ndes = ndes_double.ndes  # fixture: the stand-in for NDES's mscep_admin page

NOW = datetime.datetime(2027, 5, 4, 9, 30, tzinfo=datetime.UTC)
EXTERNAL_URL = "https://ndes.zylker.com/certsrv/mscep/mscep.dll"


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def external_ca(db):
    """DigiCert-ONE-like: a static challenge ("counted-secret"), polls every 20 s, 5 times."""
    return offline_external_ca(EXTERNAL_URL, scep_retry_seconds=20, scep_max_pending_retries=5)


@pytest.fixture
def laptop(dana):
    return force_device(
        owner=dana,
        upn="dana@corp.zylker.com",
        name="dana-laptop",
        platform="linux",
        serial_number="SN-D-7",
    )


def external_template(ca, delivery_mode: str):
    return force_template(
        ca=ca,
        subject=SUBJECT,
        sans=SANS,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.DYNAMIC,  # mdmcerts' own: not used for an external CA
        external_delivery=delivery_mode,
    )


def profile_with(template, device, platform: str = "any"):
    profile = force_profile(platform=platform, name="Zylker Wi-Fi", identifier="com.zylker.w")
    force_payload(profile, PayloadKind.SCEP, display_name="Wi-Fi identity", template=template)
    assign(profile=profile, device=device)
    return profile


def deliver(device) -> dict | None:
    delivery.sync_deliveries(device)
    (row,) = delivery.deliveries_to_send(device)
    return delivery.render_delivery(row)


def scep_of(item: dict) -> dict:
    (payload,) = item["profile"]["payloads"]
    return payload["scep"]


def sha1(certificate) -> bytes:
    der = certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).digest()  # noqa: S324 (the fingerprint Apple devices compare)


def test_a_delegate_payload_sends_the_device_to_the_external_ca(external_ca, laptop):
    template = external_template(external_ca, ExternalDelivery.DELEGATE)
    profile_with(template, laptop)

    scep = scep_of(deliver(laptop))

    assert scep == {
        "url": EXTERNAL_URL,
        "name": external_ca.name,
        "challenge": "counted-secret",
        "subject": [["C", "US"], ["O", "Zylker"], ["OU", "dana"], ["CN", "SN-D-7"]],
        "subject_alt_names": [
            ["rfc822", "dana@zylker.com"],
            ["dns", "SN-D-7.devices.zylker.com"],
            ["uri", "urn:udid:00008103-001A2B3C4D5E6F70"],
            ["upn", "dana@corp.zylker.com"],
        ],
        "key_type": "rsa",
        "key_size": 2048,
        "key_usage": {"digital_signature": True, "key_encipherment": True},
        "retries": 5,
        "retry_delay": 20,
        "accept_single_des_replies": False,
        "ca_fingerprint_sha256": external_ca.fingerprint_sha256,
        "ca_fingerprint_sha1": sha1(external_ca.certificate).hex(),
    }
    assert Challenge.objects.count() == 0  # the external CA checks its own challenge


def test_a_proxy_payload_gives_the_device_its_own_signed_proxy_url(external_ca, laptop):
    template = external_template(external_ca, ExternalDelivery.PROXY)
    profile = profile_with(template, laptop)

    scep = scep_of(deliver(laptop))

    prefix, token, suffix = scep["url"].rsplit("/", 2)
    assert (prefix, suffix) == ("http://127.0.0.1:8000/scep-proxy", "pkiclient.exe")
    expires = int((NOW + datetime.timedelta(days=7)).timestamp())
    assert signing.loads(token, salt=SIGNING_SALT) == {
        "d": laptop.pk,
        "t": template.pk,
        "p": profile.pk,
        "e": expires,
    }
    assert scep["challenge"] == "counted-secret"
    assert scep["ca_fingerprint_sha256"] == external_ca.fingerprint_sha256
    assert Challenge.objects.count() == 0


def test_each_delivery_renders_a_fresh_proxy_token(external_ca, laptop):
    template = external_template(external_ca, ExternalDelivery.PROXY)
    profile_with(template, laptop)
    first = scep_of(deliver(laptop))["url"]

    delivery.redeliver(laptop)
    with time_machine.travel(NOW + datetime.timedelta(hours=1), tick=False):
        second = scep_of(deliver(laptop))["url"]

    assert first != second


def test_a_local_template_keeps_mdmcerts_own_endpoint_and_challenge(
    laptop, scep_template, issuing_ca
):
    profile_with(scep_template, laptop)

    scep = scep_of(deliver(laptop))

    assert scep["url"] == f"http://127.0.0.1:8000/scep/{scep_template.slug}/pkiclient.exe"
    assert scep["challenge"].startswith(Challenge.objects.get().public_id)
    assert "accept_single_des_replies" not in scep


@pytest.mark.parametrize("mode", [ExternalDelivery.DELEGATE, ExternalDelivery.PROXY])
def test_the_apple_profile_of_an_external_template_validates(external_ca, device, mode):
    template = external_template(external_ca, mode)
    profile_with(template, device, platform="apple")

    item = deliver(device)

    document = assert_valid_mobileconfig(base64.b64decode(item["mobileconfig"]))
    (scep,) = document["PayloadContent"]
    content = scep["PayloadContent"]
    assert scep["PayloadType"] == "com.apple.security.scep"
    assert content["URL"].startswith(
        EXTERNAL_URL if mode == ExternalDelivery.DELEGATE else "http://127.0.0.1:8000/scep-proxy/"
    )
    assert (content["Challenge"], content["Retries"], content["RetryDelay"]) == (
        "counted-secret",
        5,
        20,
    )
    assert content["CAFingerprint"] == sha1(external_ca.certificate)


def test_a_ca_without_challenge_sends_none(laptop):
    ca = offline_external_ca(EXTERNAL_URL, scep_challenge_type=ExternalChallengeType.NONE)
    profile_with(external_template(ca, ExternalDelivery.DELEGATE), laptop)

    assert scep_of(deliver(laptop))["challenge"] == ""


def test_a_single_des_ca_lets_the_device_read_its_answers(laptop):
    ca = offline_external_ca(EXTERNAL_URL, scep_allow_single_des=True)
    profile_with(external_template(ca, ExternalDelivery.PROXY), laptop)

    assert scep_of(deliver(laptop))["accept_single_des_replies"] is True


@pytest.mark.parametrize("mode", [ExternalDelivery.DELEGATE, ExternalDelivery.PROXY])
def test_the_payload_carries_a_challenge_fetched_from_ndes_at_delivery(ndes, laptop, mode):
    profile_with(
        external_template(ndes_external_ca(EXTERNAL_URL, challenge_url=ndes.url), mode), laptop
    )

    scep = scep_of(deliver(laptop))

    assert scep["challenge"] == CHALLENGE
    assert len(ndes.seen_authorizations) == 1
    assert Challenge.objects.count() == 0


def test_ndes_refusing_the_credentials_fails_the_delivery_and_is_audited(ndes, laptop):
    ca = ndes_external_ca(EXTERNAL_URL, challenge_url=ndes.url, password="not the password")
    profile = profile_with(external_template(ca, ExternalDelivery.DELEGATE), laptop)

    assert deliver(laptop) is None

    row = Delivery.objects.get(device=laptop, profile=profile)
    assert row.status == "failed"
    assert row.error == (
        f"SCEP payload 'Wi-Fi identity': CA server {ca} gave no challenge: CA server {ca}: "
        f"NDES refused the credentials of {USERNAME!r} at {ndes.url} (HTTP 401; Basic "
        "authentication must be enabled on mscep_admin)"
    )
    assert "not the password" not in row.error
    (event,) = AuditEvent.objects.filter(action="issue_failed")
    assert event.message == f"profile {profile} not delivered: {row.error}"


def test_an_ndes_that_cannot_be_reached_fails_the_delivery_with_the_reason(laptop):
    ca = ndes_external_ca(
        EXTERNAL_URL,
        challenge_url="http://127.0.0.1:9/certsrv/mscep_admin/",
        password="ndes-password-1",
    )
    profile = profile_with(external_template(ca, ExternalDelivery.DELEGATE), laptop)

    assert deliver(laptop) is None

    row = Delivery.objects.get(device=laptop, profile=profile)
    reason = f"SCEP payload 'Wi-Fi identity': CA server {ca} gave no challenge: CA server {ca}: "
    assert row.status == "failed"
    assert row.error.startswith(reason)
    assert "127.0.0.1:9" in row.error
    assert "ndes-password-1" not in row.error
    (event,) = AuditEvent.objects.filter(action="issue_failed")
    assert (event.object_id, event.message) == (
        str(laptop.pk),
        f"profile {profile} not delivered: {row.error}",
    )
    assert Challenge.objects.count() == 0
