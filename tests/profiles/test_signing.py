"""Signed profiles: CMS SignedData by a local CA's profile-signing certificate, checked by
the openssl CLI; the signer is made on first use, renewed near expiry, its key encrypted."""

import datetime
import subprocess

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.rewrap import secret_fields
from apps.pki import crypto
from apps.profiles.choices import PayloadKind
from apps.profiles.models import ProfileSigner
from apps.profiles.rendering import ProfileNotRenderable, mobileconfig
from apps.profiles.signing import ensure_profile_signer
from tests.core.test_no_key_in_clear import database_dump, forms_of
from tests.factories import force_ca
from tests.openssl import openssl
from tests.profiles.apple_schema import assert_valid_mobileconfig

pytestmark = pytest.mark.django_db
CHALLENGE = "0123456789abdynamic-challenge"


@pytest.fixture
def signed_profile(every_payload_profile, issuing_ca):
    every_payload_profile.signing_ca = issuing_ca
    every_payload_profile.full_clean()
    every_payload_profile.save()
    return every_payload_profile


def render(profile, device) -> bytes:
    scep = profile.payloads.get(kind=PayloadKind.SCEP)
    return mobileconfig(profile, device=device, challenges={scep.uuid: CHALLENGE})


def verify(signed: bytes, *, root_pem: str, tmp_path) -> subprocess.CompletedProcess:
    (tmp_path / "signed.mobileconfig").write_bytes(signed)
    (tmp_path / "root.pem").write_text(root_pem)
    # The signer's EKU is code signing; openssl checks the S/MIME purpose unless told.
    return openssl(
        "smime",
        "-verify",
        "-inform",
        "DER",
        "-in",
        str(tmp_path / "signed.mobileconfig"),
        "-CAfile",
        str(tmp_path / "root.pem"),
        "-purpose",
        "any",
    )


def test_a_signed_profile_verifies_with_openssl_and_holds_the_plist(
    signed_profile, device, root_ca, tmp_path
):
    signed = render(signed_profile, device)

    result = verify(signed, root_pem=root_ca.certificate_pem, tmp_path=tmp_path)

    assert result.returncode == 0, result.stderr.decode()
    assert b"Verification successful" in result.stderr
    assert result.stdout.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    document = assert_valid_mobileconfig(result.stdout)
    assert document["PayloadIdentifier"] == "com.zylker.wifi"


def test_openssl_cms_agrees_and_a_tampered_profile_fails(signed_profile, device, root_ca, tmp_path):
    signed = render(signed_profile, device)
    (tmp_path / "root.pem").write_text(root_ca.certificate_pem)
    (tmp_path / "good.der").write_bytes(signed)
    at = signed.index(b"ZylkerCorp")
    (tmp_path / "bad.der").write_bytes(signed[:at] + b"EvilCorpXX" + signed[at + 10 :])

    def cms_verify(name: str):
        return openssl(
            "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / name),
            "-CAfile", str(tmp_path / "root.pem"), "-purpose", "any",
        )  # fmt: skip

    assert cms_verify("good.der").returncode == 0
    assert cms_verify("bad.der").returncode != 0


def test_the_signature_does_not_verify_against_another_root(signed_profile, device, tmp_path):
    stranger = force_ca()

    result = verify(
        render(signed_profile, device), root_pem=stranger.certificate_pem, tmp_path=tmp_path
    )

    assert result.returncode != 0


def test_the_signer_is_a_code_signing_leaf_of_the_ca(issuing_ca):
    signer = ensure_profile_signer(issuing_ca)
    cert = signer.certificate

    cert.verify_directly_issued_by(issuing_ca.certificate)
    assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 2048
    extensions = {ext.oid: ext for ext in cert.extensions}
    basic = extensions[x509.oid.ExtensionOID.BASIC_CONSTRAINTS]
    usage = extensions[x509.oid.ExtensionOID.KEY_USAGE]
    eku = extensions[x509.oid.ExtensionOID.EXTENDED_KEY_USAGE]
    assert (basic.critical, basic.value.ca) == (True, False)
    assert usage.critical and usage.value == crypto.key_usage(digital_signature=True)
    assert list(eku.value) == [x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]
    assert cert.subject.rfc4514_string() == f"CN={issuing_ca.name} profile signing,O=Zylker"
    assert signer.not_after <= issuing_ca.not_after


def test_the_signer_is_made_once_and_renewed_near_expiry(issuing_ca):
    first = ensure_profile_signer(issuing_ca)
    again = ensure_profile_signer(issuing_ca)
    assert (again.pk, again.fingerprint_sha256) == (first.pk, first.fingerprint_sha256)

    near_expiry = first.not_after - datetime.timedelta(days=29)
    with time_machine.travel(near_expiry, tick=False):
        renewed = ensure_profile_signer(issuing_ca)
        assert renewed.not_after > timezone.now() + datetime.timedelta(days=300)

    assert renewed.pk == first.pk
    assert renewed.fingerprint_sha256 != first.fingerprint_sha256
    assert ProfileSigner.objects.count() == 1
    events = AuditEvent.objects.filter(message="profile-signing certificate issued")
    assert [e.changes["profile_signer"] for e in events.order_by("id")] == [
        [None, first.fingerprint_sha256],
        [first.fingerprint_sha256, renewed.fingerprint_sha256],
    ]


def test_the_signer_key_is_never_in_clear_in_the_database(signed_profile, device):
    render(signed_profile, device)
    signer = ProfileSigner.objects.get()
    der = signer.load_private_key().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    dump = database_dump()

    assert b"PRIVATE KEY" not in dump
    for form in forms_of(der):
        assert form not in dump
    assert signer.private_key.startswith("mdmc1:")  # the check can fail: the key is there
    assert (ProfileSigner, "private_key") in secret_fields()  # rewrap_secrets covers it


def test_a_ca_that_cannot_sign_makes_the_profile_not_renderable(signed_profile, device):
    signed_profile.signing_ca.not_after = timezone.now() - datetime.timedelta(days=1)
    signed_profile.signing_ca.save()

    with pytest.raises(ProfileNotRenderable, match=r"cannot be signed: CA .* is not valid now"):
        render(signed_profile, device)


def test_the_editor_accepts_only_a_local_ca_with_its_key_as_signer(signed_profile):
    signed_profile.signing_ca.private_key = ""

    with pytest.raises(ValidationError, match="this CA cannot sign"):
        signed_profile.full_clean()
