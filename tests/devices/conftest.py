"""Fixtures for devices, the device API and delivery: a local CA with its RA, a dynamic
template for RSA 2048 keys, profiles with a SCEP payload, enrollment codes, devices
enrolled through the device API, and a SCEP enrollment from a delivered payload.

Personas: dana owns the devices of the "Zylker laptops" group; erin owns another laptop
(alice, bob and charlie are in ``tests/conftest.py``).
"""

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from apps.devices import services
from apps.devices.models import Device, DeviceGroup
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.rendering import general_name
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.pki.services import ensure_ra
from apps.profiles.choices import PayloadKind, ProfilePlatform, WifiSecurity
from apps.profiles.models import Profile, ProfileAssignment, ProfilePayload
from apps.scep.protocol import MessageType
from apps.scep.protocol import client as scep_client
from tests.factories import force_ca, force_template

API = "/api/device/v1/"
SUBJECT = "O=Zylker,OU=$USERID$,CN=$DEVICE_SN$"
SANS = [("rfc822", "$EMAIL$"), ("dns", "$DEVICE_SN$.devices.zylker.com")]
SHORT_NAME_OIDS = {short: oid for oid, short in crypto.SHORT_NAMES.items()}


@pytest.fixture(autouse=True)
def _fresh_throttle():
    """The enrollment throttle counts in the cache; each test starts from zero."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def ca(db) -> CertificateAuthority:
    """A local CA (EC P-256: fast) with its SCEP RA."""
    return ensure_ra(force_ca())


@pytest.fixture
def template(ca) -> CertificateTemplate:
    """Dynamic challenges; subject and SANs from the device and its owner."""
    return force_template(
        ca=ca,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.DYNAMIC,
        subject=SUBJECT,
        sans=SANS,
    )


@pytest.fixture
def group(db) -> DeviceGroup:
    return DeviceGroup.objects.create(name="Zylker laptops")


def force_profile(
    *,
    template: CertificateTemplate | None = None,
    platform: str = ProfilePlatform.ANY,
    wifi: bool = False,
    ca: CertificateAuthority | None = None,
) -> Profile:
    """A profile with a SCEP payload on ``template`` (if given), then optionally the CA's
    chain and a Wi-Fi payload whose identity is the SCEP payload."""
    token = secrets.token_hex(3)
    profile = Profile.objects.create(
        name=f"Wi-Fi {token}", identifier=f"com.zylker.wifi{token}", platform=platform
    )
    scep = None
    if template is not None:
        scep = ProfilePayload.objects.create(
            profile=profile,
            position=0,
            kind=PayloadKind.SCEP,
            display_name="Wi-Fi identity",
            template=template,
        )
    if ca is not None:
        ProfilePayload.objects.create(
            profile=profile,
            position=1,
            kind=PayloadKind.TRUSTED_CERTIFICATE,
            display_name="Zylker CA chain",
            ca=ca,
        )
    if wifi:
        ProfilePayload.objects.create(
            profile=profile,
            position=2,
            kind=PayloadKind.WIFI,
            display_name="Corp Wi-Fi",
            ssid="ZylkerCorp",
            wifi_security=WifiSecurity.WPA2_ENTERPRISE,
            identity=scep,
            trusted_server_names="radius.zylker.com",
        )
    return profile


@pytest.fixture
def wifi_profile(template, ca, group) -> Profile:
    """SCEP + chain + Wi-Fi, assigned to the group."""
    profile = force_profile(template=template, ca=ca, wifi=True)
    ProfileAssignment.objects.create(profile=profile, group=group)
    return profile


class DeviceApi:
    """The device API through DRF's test client, as a device (with its token) or not."""

    def __init__(self, token: str | None = None, *, remote_addr: str = "192.0.2.20") -> None:
        self.client = APIClient(REMOTE_ADDR=remote_addr)
        if token:
            self.client.credentials(HTTP_AUTHORIZATION=f"Device {token}")

    def post(self, endpoint: str, body: dict | None = None, **extra):
        return self.client.post(f"{API}{endpoint}", body or {}, format="json", **extra)


@dataclass
class Enrolled:
    """A device enrolled through the device API, with its token."""

    device: Device
    token: str

    @property
    def api(self) -> DeviceApi:
        return DeviceApi(self.token)

    def checkin(self, body: dict | None = None) -> dict:
        response = self.api.post("checkin", body)
        assert response.status_code == 200, response.content
        return response.json()


@pytest.fixture
def enroll(dana, group) -> Callable[..., Enrolled]:
    """``enroll(serial, owner=dana, group=group, platform="linux")``: a device enrolled
    through ``POST enroll`` with a fresh one-time code."""

    def make(
        serial: str = "SN-DANA-1", *, owner=dana, group=group, platform: str = "linux"
    ) -> Enrolled:
        _, code = services.create_enrollment_code(name=f"code {serial}", owner=owner, group=group)
        facts = {"name": f"laptop {serial}", "platform": platform, "serial_number": serial}
        response = DeviceApi().post("enroll", {"code": code, **facts})
        assert response.status_code == 201, response.content
        answer = response.json()
        return Enrolled(Device.objects.get(pk=answer["device_id"]), answer["token"])

    return make


def scep_payload_of(item: dict) -> dict:
    """The first SCEP payload of a JSON ``install`` item."""
    return next(p["scep"] for p in item["profile"]["payloads"] if p["kind"] == "scep")


def scep_enroll(
    scep: dict, *, challenge: str | None = None, key: rsa.RSAPrivateKey | None = None
) -> scep_client.CertRepResult:
    """Enroll as a device does with a SCEP payload: a CSR with the payload's subject, SANs
    and challenge (or ``challenge``), a PKCSReq to its URL through Django's test client."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = urlsplit(scep["url"]).path
    client = Client(REMOTE_ADDR="192.0.2.30")
    ca_certs = scep_client.parse_ca_certs(client.get(path, {"operation": "GetCACert"}).content)
    recipient = scep_client.select_recipient(ca_certs)
    csr = device_csr(scep, challenge if challenge is not None else scep["challenge"], key)
    signer = scep_client.self_signed_signer(key, csr.subject)
    message, _ = scep_client.build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=scep_client.pkcs_req_payload(csr),
        transaction_id=scep_client.transaction_id_for(key.public_key()),
        signer_certificate=signer,
        signer_key=key,
        recipient_certificate=recipient,
    )
    response = client.generic(
        "POST", f"{path}?operation=PKIOperation", message, "application/x-pki-message"
    )
    assert response.status_code == 200, response.content
    return scep_client.parse_cert_rep(
        response.content,
        recipient_key=key,
        recipient_certificate=signer,
        ra_certificates=[recipient],
    )


def device_csr(scep: dict, challenge: str, key) -> x509.CertificateSigningRequest:
    subject = x509.Name(
        [x509.NameAttribute(SHORT_NAME_OIDS[name], value) for name, value in scep["subject"]]
    )
    sans = [general_name(san_type, value) for san_type, value in scep["subject_alt_names"]]
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if challenge:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(key, hashes.SHA256())
