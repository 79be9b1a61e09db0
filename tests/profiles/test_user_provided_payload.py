"""User-provided and single-file payloads: what they need, and their delivery at check-in
as PKCS#12 payloads of the owner's upload (or the single-file CA's identity), opened here
by the ``openssl`` CLI with the delivered password; a clear failure when there is none.

Persona: dana owns the MacBook (``tests/profiles/conftest.py``)."""

import base64
import datetime

import pytest
import time_machine
from django.core.exceptions import ValidationError

from apps.certificates.choices import IdentityPurpose
from apps.certificates.single_file import store_single_file_identity
from apps.certificates.uploads import delete_user_identity, store_user_identity
from apps.devices.choices import Platform
from apps.pki import crypto
from apps.pki.models import CertificateAuthority
from apps.profiles.choices import PayloadKind, ProfilePlatform, WifiSecurity
from apps.profiles.models import Delivery
from tests.certificates.bundles import PASSWORD, bundle, issuer, user_certificate
from tests.factories import make_key
from tests.openssl import openssl
from tests.profiles.apple_schema import assert_valid_mobileconfig
from tests.profiles.factories import force_device, force_payload, force_profile
from tests.profiles.test_pkcs12 import Device, assigned, pkcs12_of

pytestmark = pytest.mark.django_db

SIGNING = IdentityPurpose.SMIME_SIGNING


def upload(user, *, days: int = 365, purpose: str = SIGNING, ca=None):
    key = make_key("rsa2048")
    cert = user_certificate(key, email=user.email, ca=ca, days=days)
    cas = [ca[1]] if ca else []
    identity = store_user_identity(
        user=user, purpose=purpose, data=bundle(key, cert, cas=cas), password=PASSWORD
    )
    return identity, cert


def single_file_ca(name: str = "Shared identity") -> CertificateAuthority:
    key = make_key("ec-p256")
    identity = store_single_file_identity(
        ca=CertificateAuthority(name=name, slug=name.lower().replace(" ", "-")),
        data=bundle(key, user_certificate(key, email="shared@zylker.com")),
        password=PASSWORD,
    )
    return identity.certificate.ca


def mail_profile(*, platform: str = ProfilePlatform.ANY):
    profile = force_profile(platform=platform)
    force_payload(profile, PayloadKind.USER_PROVIDED, user_identity_purpose=SIGNING)
    return profile


def openssl_certificates(data: bytes, password: str, tmp_path) -> str:
    (tmp_path / "in.p12").write_bytes(data)
    result = openssl(
        "pkcs12", "-in", str(tmp_path / "in.p12"), "-passin", f"pass:{password}", "-nokeys"
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


# --- what the payloads need ---------------------------------------------------------------


def test_a_user_provided_payload_needs_a_purpose():
    with pytest.raises(ValidationError) as caught:
        force_payload(force_profile(), PayloadKind.USER_PROVIDED)

    assert caught.value.message_dict == {
        "user_identity_purpose": ["Required for User-provided certificate payloads."]
    }


def test_a_single_file_payload_needs_a_single_file_ca_server(issuing_ca):
    with pytest.raises(ValidationError) as caught:
        force_payload(force_profile(), PayloadKind.SINGLE_FILE, ca=issuing_ca)

    assert caught.value.message_dict == {
        "ca": [f"CA server {issuing_ca} is not a single file identity; choose one that is."]
    }


def test_a_single_file_ca_server_is_no_trusted_certificate():
    ca = single_file_ca()

    with pytest.raises(ValidationError) as caught:
        force_payload(force_profile(), PayloadKind.TRUSTED_CERTIFICATE, ca=ca)

    assert caught.value.message_dict["ca"] == [
        f"CA server {ca} holds a single file identity, not a CA to trust; use a single file "
        "identity payload for it."
    ]


def test_wifi_may_authenticate_with_a_user_provided_identity():
    profile = mail_profile()
    identity = profile.payloads.get()

    wifi = force_payload(
        profile, PayloadKind.WIFI, ssid="Zylker", wifi_security=WifiSecurity.WPA2_ENTERPRISE,
        identity=identity,
    )  # fmt: skip

    assert wifi.identity == identity


# --- delivery -----------------------------------------------------------------------------


def test_a_linux_device_gets_its_owners_upload_with_its_chain_as_a_pkcs12(dana, tmp_path):
    laptop = force_device(owner=dana, platform=Platform.LINUX)
    ca = issuer()
    identity, cert = upload(dana, ca=ca)
    assigned(mail_profile(), laptop)

    (item,) = Device(laptop).checkin()

    body = pkcs12_of(item)
    assert (body["source"], body["fingerprint_sha256"]) == (
        "user_provided",
        identity.certificate.fingerprint_sha256,
    )
    assert body["file_name"].startswith("smime-signing-")
    pems = openssl_certificates(base64.b64decode(body["data"]), body["password"], tmp_path)
    assert pems.count("BEGIN CERTIFICATE") == 2  # the leaf and its issuer
    assert crypto.cert_pem(cert).strip() in pems
    assert list(Delivery.objects.get().identities.all()) == [identity]


def test_an_apple_device_gets_the_upload_as_a_schema_valid_pkcs12_payload(dana, device, tmp_path):
    _, cert = upload(dana)
    assigned(mail_profile(platform=ProfilePlatform.APPLE), device)

    (item,) = Device(device).checkin()

    document = assert_valid_mobileconfig(base64.b64decode(item["mobileconfig"]))
    (p12,) = [
        p for p in document["PayloadContent"] if p["PayloadType"] == "com.apple.security.pkcs12"
    ]
    pems = openssl_certificates(p12["PayloadContent"], p12["Password"], tmp_path)
    assert pems.count("BEGIN CERTIFICATE") == 1
    assert crypto.cert_pem(cert).strip() in pems


def test_each_device_gets_the_single_file_identity(dana, charlie, tmp_path):
    ca = single_file_ca()
    profile = force_profile(platform=ProfilePlatform.ANY)
    force_payload(profile, PayloadKind.SINGLE_FILE, ca=ca)
    laptops = [force_device(owner=owner, platform=Platform.LINUX) for owner in (dana, charlie)]
    for laptop in laptops:
        assigned(profile, laptop)

    bodies = [pkcs12_of(Device(laptop).checkin()[0]) for laptop in laptops]

    assert {body["fingerprint_sha256"] for body in bodies} == {ca.fingerprint_sha256}
    assert bodies[0]["password"] != bodies[1]["password"]
    assert bodies[0]["source"] == "single_file"


def test_a_device_whose_owner_has_no_upload_gets_a_failed_delivery_saying_what_to_do(dana):
    laptop = force_device(owner=dana, platform=Platform.LINUX)
    assigned(mail_profile(), laptop)

    assert Device(laptop).checkin() == []

    row = Delivery.objects.get()
    assert (row.status, row.error, list(row.identities.all())) == (
        "failed",
        "User-provided certificate payload "
        f"{row.profile.payloads.get().display_name!r}: Dana Scully has not uploaded an "
        "S/MIME signing certificate: ask them to upload one at /portal/upload/",
        [],
    )


def test_an_upload_after_a_failed_delivery_sends_the_profile_again(dana):
    laptop = force_device(owner=dana, platform=Platform.LINUX)
    assigned(mail_profile(), laptop)
    assert Device(laptop).checkin() == []

    identity, _ = upload(dana)
    (item,) = Device(laptop).checkin()

    assert pkcs12_of(item)["fingerprint_sha256"] == identity.certificate.fingerprint_sha256
    assert Delivery.objects.get().status == "delivered"


def test_replacing_or_deleting_the_upload_redelivers_the_profile(dana):
    laptop = force_device(owner=dana, platform=Platform.LINUX)
    assigned(mail_profile(), laptop)
    upload(dana)
    device = Device(laptop)
    device.ack(device.checkin()[0])

    key = make_key()
    new = store_user_identity(
        user=dana, purpose=SIGNING, data=bundle(key, user_certificate(key)), password=PASSWORD,
        replace=True,
    )  # fmt: skip
    (item,) = device.checkin()
    assert pkcs12_of(item)["fingerprint_sha256"] == new.certificate.fingerprint_sha256

    delete_user_identity(identity=new)
    assert device.checkin() == []
    assert Delivery.objects.get().status == "failed"


def test_a_device_without_owner_gets_a_failed_delivery():
    laptop = force_device(platform=Platform.LINUX)
    laptop.owner = None
    laptop.save()
    assigned(mail_profile(), laptop)

    assert Device(laptop).checkin() == []

    assert Delivery.objects.get().error.endswith(
        f"device {laptop} has no owner to take a user-provided S/MIME signing certificate "
        "from: assign the device to a user"
    )


def test_an_expired_upload_is_not_delivered(dana):
    laptop = force_device(owner=dana, platform=Platform.LINUX)
    identity, _ = upload(dana, days=10)
    assigned(mail_profile(), laptop)

    with time_machine.travel(identity.certificate.not_after + datetime.timedelta(days=1)):
        assert Device(laptop).checkin() == []

    assert Delivery.objects.get().error.endswith(
        f"Dana Scully's S/MIME signing certificate expired on "
        f"{identity.certificate.not_after:%Y-%m-%d}: ask them to upload a new one at "
        "/portal/upload/"
    )
