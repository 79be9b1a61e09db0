"""End to end: the reference agent (a real subprocess, no database) receives a
server-generated identity from a live server. The profile is assigned after the agent
enrolled, so the identity is generated early (the generation task, run eagerly here, once
the assignment commits); the agent's check-in installs it, acknowledges it and reports it
in its inventory.

Persona: erin owns the laptop (``tests/e2e/conftest.py``)."""

import json
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from apps.certificates.models import Identity
from apps.devices.models import Device, InstalledCertificate
from apps.enrollment.choices import ChallengeType, KeyGeneration
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.profiles.models import Delivery, Profile, ProfilePayload
from apps.profiles.services import assign
from tests.e2e import conftest as e2e
from tests.e2e.conftest import SANS, SUBJECT, enrollment_code, make_ca, make_group
from tests.factories import force_template

pytestmark = pytest.mark.django_db(transaction=True)
# The live server and agents of the end-to-end tests, and their persona.
server, make_agent, erin = e2e.server, e2e.make_agent, e2e.erin


def vpn_profile(ca, template) -> Profile:
    """A PKCS#12 identity, the CA, and an IKEv2 VPN that authenticates with the identity."""
    profile = Profile.objects.create(name="Zylker VPN", identifier="com.zylker.vpn", platform="any")
    identity = ProfilePayload.objects.create(
        profile=profile, position=0, kind="pkcs12", display_name="VPN identity", template=template
    )
    ProfilePayload.objects.create(
        profile=profile, position=1, kind="trusted_certificate", display_name="Zylker CA", ca=ca
    )
    ProfilePayload.objects.create(
        profile=profile,
        position=2,
        kind="vpn",
        display_name="Zylker VPN",
        vpn_type="ikev2",
        server="vpn.zylker.com",
        account="$USERID$",
        identity=identity,
    )
    return profile


def test_the_agent_installs_the_identity_generated_when_its_profile_was_assigned(
    server,
    make_agent,
    erin,
    eager_celery,
):
    pytest.importorskip("apps.certificates.tasks")
    ca = make_ca()
    template = force_template(
        ca=ca,
        key_generation=KeyGeneration.SERVER,
        key_algorithm=KeyAlgorithm.RSA_2048,
        challenge_type=ChallengeType.NONE,
        subject=SUBJECT,
        sans=SANS,
    )
    group = make_group()
    agent = make_agent("erin-laptop")
    answer = agent.enroll(enrollment_code(erin, group), name="erin-laptop", serial="SN-ERIN-1")
    device = Device.objects.get(pk=answer["device_id"])
    profile = vpn_profile(ca, template)

    assign(profile=profile, group=group)
    early = Identity.objects.get(device=device)
    assert early.delivered_at is None

    result = agent.checkin()

    (outcome,) = result["profiles"]
    assert (outcome["action"], outcome["profile_id"]) == ("installed", profile.pk)
    stem = str(profile.payloads.get(kind="pkcs12").uuid)
    directory = agent.profile_dir(profile.pk)
    key_file, cert_file = directory / f"{stem}.key.pem", directory / f"{stem}.cert.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert crypto.fingerprint_sha256(certificate) == early.certificate.fingerprint_sha256
    assert crypto.public_key_matches(key, certificate)
    assert certificate.subject.rfc4514_string() == "CN=SN-ERIN-1,OU=erin,O=Zylker"
    # What the agent keeps of the profile holds neither the PKCS#12 nor its password.
    kept = json.loads((directory / "profile.json").read_text())
    (bundle,) = [p["pkcs12"] for p in kept["payloads"] if p["kind"] == "pkcs12"]
    assert (bundle["data"], bundle["password"]) == ("", "")
    # Acknowledged: the identity is delivered; reported: the inventory links it.
    early.refresh_from_db()
    assert early.delivered_at is not None
    assert Delivery.objects.get(device=device).status == "installed"
    assert result["inventory_sent"] == 2  # the identity and the CA
    installed = InstalledCertificate.objects.get(device=device, certificate=early.certificate)
    assert installed.fingerprint_sha256 == early.certificate.fingerprint_sha256
    assert Identity.objects.filter(device=device).count() == 1
    assert agent.checkin()["profiles"] == []  # installed once
