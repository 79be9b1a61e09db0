"""A certificate issued over SCEP with a challenge minted for a delivery is linked to that
device, its owner and the profile; a renewal keeps the links; the inventory links it once
the device reports it."""

import datetime
from urllib.parse import urlsplit

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client

from apps.certificates.models import Certificate
from apps.enrollment.models import Challenge
from apps.pki import crypto
from apps.scep.protocol import MessageType, PKIStatus
from apps.scep.protocol import client as scep_client
from tests.devices.conftest import device_csr, scep_enroll, scep_payload_of

pytestmark = pytest.mark.django_db


def test_the_certificate_of_a_delivered_challenge_is_linked_to_device_owner_and_profile(
    enroll, wifi_profile, dana, template
):
    laptop = enroll("SN-DANA-1")
    payload = scep_payload_of(laptop.checkin()["install"][0])

    result = scep_enroll(payload)

    assert result.status == PKIStatus.SUCCESS
    [issued] = result.certificates
    certificate = Certificate.objects.get()
    assert certificate.fingerprint_sha256 == crypto.fingerprint_sha256(issued)
    assert (certificate.device, certificate.user, certificate.profile, certificate.template) == (
        laptop.device,
        dana,
        wifi_profile,
        template,
    )
    assert certificate.subject == "O=Zylker,OU=dana,CN=SN-DANA-1"
    assert (
        certificate.subject_alt_names == "email:dana@zylker.com\nDNS:SN-DANA-1.devices.zylker.com"
    )
    assert Challenge.objects.get().used_at is not None


def test_two_devices_get_their_own_certificates(enroll, wifi_profile, erin):
    dana_laptop, erin_laptop = enroll("SN-DANA-1"), enroll("SN-ERIN-1", owner=erin)
    payloads = [scep_payload_of(x.checkin()["install"][0]) for x in (dana_laptop, erin_laptop)]

    results = [scep_enroll(payload) for payload in payloads]

    assert [r.status for r in results] == [PKIStatus.SUCCESS, PKIStatus.SUCCESS]
    rows = {c.device: c for c in Certificate.objects.all()}
    assert rows[dana_laptop.device].subject == "O=Zylker,OU=dana,CN=SN-DANA-1"
    assert rows[erin_laptop.device].subject == "O=Zylker,OU=erin,CN=SN-ERIN-1"
    assert {c.profile for c in rows.values()} == {wifi_profile}


def test_the_reported_certificate_joins_the_inventory(enroll, wifi_profile):
    laptop = enroll()
    payload = scep_payload_of(laptop.checkin()["install"][0])
    [issued] = scep_enroll(payload).certificates

    laptop.checkin({"installed_certificates": [{"pem": crypto.cert_pem(issued)}]})

    [row] = laptop.device.installed_certificates.all()
    assert row.certificate == Certificate.objects.get()
    assert row.certificate.profile == wifi_profile


def test_a_renewal_keeps_the_device_owner_and_profile(enroll, wifi_profile, dana, template):
    laptop = enroll()
    payload = scep_payload_of(laptop.checkin()["install"][0])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    [current] = scep_enroll(payload, key=key).certificates
    renewal_opens = current.not_valid_after_utc - datetime.timedelta(days=29)

    with time_machine.travel(renewal_opens, tick=False):
        result = _renew(payload, current, key)

    assert result.status == PKIStatus.SUCCESS
    renewed = Certificate.objects.get(
        fingerprint_sha256=crypto.fingerprint_sha256(result.certificates[0])
    )
    assert (renewed.device, renewed.user, renewed.profile) == (laptop.device, dana, wifi_profile)
    assert renewed.replaces.status == "superseded"


def _renew(payload: dict, current, current_key) -> scep_client.CertRepResult:
    """A RenewalReq for a new key, signed with the current certificate and key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = urlsplit(payload["url"]).path
    client = Client()
    ca_certs = scep_client.parse_ca_certs(client.get(path, {"operation": "GetCACert"}).content)
    recipient = scep_client.select_recipient(ca_certs)
    message, _ = scep_client.build_pki_message(
        message_type=MessageType.RENEWAL_REQ,
        payload=scep_client.pkcs_req_payload(device_csr(payload, "", key)),
        transaction_id=scep_client.transaction_id_for(key.public_key()),
        signer_certificate=current,
        signer_key=current_key,
        recipient_certificate=recipient,
    )
    response = client.generic(
        "POST", f"{path}?operation=PKIOperation", message, "application/x-pki-message"
    )
    return scep_client.parse_cert_rep(
        response.content,
        recipient_key=current_key,
        recipient_certificate=current,
        ra_certificates=[recipient],
    )
