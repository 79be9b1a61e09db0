"""Fixtures of the lifecycle tests: a local CA with its RA, a dynamic template, a Wi-Fi
profile assigned to the "Zylker laptops" group, and laptops enrolled the way devices do
it (enrollment code, check-in, SCEP from the delivered payload). Import them with
``from tests.certificates.lifecycle_fixtures import *``.

Persona: dana owns the laptops (alice, bob and charlie are in ``tests/conftest.py``).
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from apps.certificates.models import Certificate
from apps.devices import services as devices
from apps.devices.models import Device, DeviceGroup
from apps.enrollment.choices import ChallengeType
from apps.enrollment.models import CertificateTemplate
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority, CertificateRevocationList
from apps.pki.services import ensure_ra
from apps.profiles.models import Delivery, Profile
from apps.profiles.services import assign
from tests.devices.conftest import force_profile, scep_enroll, scep_payload_of
from tests.factories import force_ca, force_template
from tests.openssl import openssl

__all__ = [
    "Laptop",
    "ca",
    "crl_serials",
    "delivery_of",
    "enroll_laptop",
    "group",
    "laptop",
    "profile",
    "template",
]

SUBJECT = "O=Zylker,OU=$USERID$,CN=$DEVICE_SN$"
SANS = [("rfc822", "$EMAIL$"), ("dns", "$DEVICE_SN$.devices.zylker.com")]


@pytest.fixture
def ca(db) -> CertificateAuthority:
    """A local CA (EC P-256: fast) with its SCEP RA."""
    return ensure_ra(force_ca())


@pytest.fixture
def template(ca) -> CertificateTemplate:
    """Dynamic challenges, one year of validity, renewal 30 days before expiry, the
    global grace period."""
    return force_template(
        ca=ca,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.DYNAMIC,
        subject=SUBJECT,
        sans=SANS,
        validity_days=365,
        renew_before_days=30,
    )


@pytest.fixture
def group(db) -> DeviceGroup:
    return DeviceGroup.objects.create(name="Zylker laptops")


@pytest.fixture
def profile(template, ca, group) -> Profile:
    """SCEP + chain + Wi-Fi, assigned to the group."""
    profile = force_profile(template=template, ca=ca, wifi=True)
    assign(profile=profile, group=group)
    return profile


@dataclass
class Laptop:
    """An enrolled laptop and the certificate it enrolled over SCEP from its profile."""

    device: Device
    token: str
    certificate: Certificate

    def checkin(self, **kwargs) -> devices.CheckinResult:
        return devices.checkin(device=self.device, **kwargs)

    def report(self, *certificates: Certificate) -> devices.CheckinResult:
        """A check-in with an inventory of exactly ``certificates``."""
        entries = [{"pem": cert.certificate_pem} for cert in certificates]
        return self.checkin(installed_certificates=entries)

    def enroll_from(self, result: devices.CheckinResult) -> Certificate:
        return enroll_from(result)


def enroll_from(result: devices.CheckinResult) -> Certificate:
    """Enroll over SCEP with the first SCEP payload a check-in delivered."""
    reply = scep_enroll(scep_payload_of(result.install[0]))
    assert reply.status.name == "SUCCESS", reply
    return Certificate.objects.get(
        fingerprint_sha256=crypto.fingerprint_sha256(reply.certificates[0])
    )


@pytest.fixture
def enroll_laptop(dana, group, profile) -> Callable[..., Laptop]:
    """``enroll_laptop(serial)``: a laptop of dana in the group, enrolled with a one-time
    code, checked in once and enrolled over SCEP with the challenge it was given."""

    def make(serial: str = "SN-DANA-1") -> Laptop:
        _, code = devices.create_enrollment_code(name=f"code {serial}", owner=dana, group=group)
        facts = {"name": f"laptop {serial}", "platform": "linux", "serial_number": serial}
        device, token = devices.enroll(code=code, facts=facts)
        certificate = enroll_from(devices.checkin(device=device))
        return Laptop(device=device, token=token, certificate=certificate)

    return make


@pytest.fixture
def laptop(enroll_laptop) -> Laptop:
    return enroll_laptop()


def delivery_of(laptop: Laptop, profile: Profile) -> Delivery:
    return Delivery.objects.get(device=laptop.device, profile=profile)


def crl_serials(ca: CertificateAuthority) -> dict[str, str]:
    """Serial (lowercase hex) -> reason of each entry of the CA's published CRL, as
    ``openssl crl`` reads it."""
    der = bytes(CertificateRevocationList.objects.get(ca=ca).der)
    run = openssl("crl", "-inform", "DER", "-noout", "-text", input=der)
    assert run.returncode == 0, run.stderr.decode()
    entries, serial = {}, None
    for line in run.stdout.decode().splitlines():
        line = line.strip()
        if line.startswith("Serial Number:"):
            serial = line.split(":", 1)[1].strip().lower().lstrip("0")
            entries[serial] = ""
        elif serial and line and not line.startswith(("Revocation Date", "CRL entry", "X509v3")):
            entries[serial] = line
            serial = None
    return entries
