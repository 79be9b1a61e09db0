"""End to end: the reference agent (a real subprocess, no database) receives its owner's
uploaded identity and a single file identity from a live server, as PKCS#12 payloads,
installs them and reports them; before the owner uploads, the delivery fails saying what
is missing.

Persona: erin owns the laptop (``tests/e2e/conftest.py``)."""

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from apps.certificates.choices import IdentityPurpose
from apps.certificates.single_file import store_single_file_identity
from apps.certificates.uploads import store_user_identity
from apps.devices.models import Device, InstalledCertificate
from apps.pki import crypto
from apps.pki.models import CertificateAuthority
from apps.profiles.models import Delivery, Profile, ProfilePayload
from apps.profiles.services import assign
from tests.certificates.bundles import PASSWORD, bundle, issuer, user_certificate
from tests.e2e import conftest as e2e
from tests.e2e.conftest import enrollment_code, make_group
from tests.factories import make_key

pytestmark = pytest.mark.django_db(transaction=True)
server, make_agent, erin = e2e.server, e2e.make_agent, e2e.erin


def installed_pair(agent, profile: Profile, payload: ProfilePayload):
    directory = agent.profile_dir(profile.pk)
    stem = str(payload.uuid)
    key = serialization.load_pem_private_key(
        (directory / f"{stem}.key.pem").read_bytes(), password=None
    )
    certificate = x509.load_pem_x509_certificate((directory / f"{stem}.cert.pem").read_bytes())
    return key, certificate


def test_the_agent_installs_the_owners_upload_and_the_single_file_identity(
    server, make_agent, erin
):
    group = make_group()
    agent = make_agent("erin-laptop")
    answer = agent.enroll(enrollment_code(erin, group), name="erin-laptop", serial="SN-ERIN-7")
    device = Device.objects.get(pk=answer["device_id"])
    shared_key = make_key("rsa2048")
    shared_cert = user_certificate(shared_key, email="wifi@zylker.com", ca=issuer())
    single = store_single_file_identity(
        ca=CertificateAuthority(name="Zylker shared Wi-Fi", slug="zylker-wifi"),
        data=bundle(shared_key, shared_cert),
        password=PASSWORD,
    )
    profile = Profile.objects.create(name="Mail", identifier="com.zylker.mail", platform="any")
    mine = ProfilePayload.objects.create(
        profile=profile,
        position=0,
        kind="user_provided",
        display_name="Mail signing",
        user_identity_purpose=IdentityPurpose.SMIME_SIGNING,
    )
    shared = ProfilePayload.objects.create(
        profile=profile,
        position=1,
        kind="single_file",
        display_name="Shared Wi-Fi identity",
        ca=single.certificate.ca,
    )
    assign(profile=profile, group=group)

    # Before erin uploads: the delivery fails and says what is missing.
    assert agent.checkin()["profiles"] == []
    failed = Delivery.objects.get(device=device, profile=profile)
    assert (failed.status, failed.error) == (
        "failed",
        "User-provided certificate payload 'Mail signing': Erin Hale has not uploaded an "
        "S/MIME signing certificate: ask them to upload one at /portal/upload/",
    )

    own_key = make_key("ec-p256")
    own_cert = user_certificate(own_key, email="erin@zylker.com")
    uploaded = store_user_identity(
        user=erin,
        purpose=IdentityPurpose.SMIME_SIGNING,
        data=bundle(own_key, own_cert),
        password=PASSWORD,
    )
    result = agent.checkin()

    (outcome,) = result["profiles"]
    assert (outcome["action"], outcome["profile_id"]) == ("installed", profile.pk)
    key, certificate = installed_pair(agent, profile, mine)
    assert certificate == own_cert
    assert crypto.public_key_matches(key, certificate)
    key, certificate = installed_pair(agent, profile, shared)
    assert certificate == shared_cert
    assert crypto.public_key_matches(key, certificate)
    assert Delivery.objects.get(device=device, profile=profile).status == "installed"
    assert set(
        InstalledCertificate.objects.filter(device=device).values_list("certificate", flat=True)
    ) == {uploaded.certificate_id, single.certificate_id}
