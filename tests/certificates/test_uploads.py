"""Validating and storing user-provided PKCS#12 identities (``apps.certificates.uploads``)."""

import datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from apps.audit.models import AuditEvent
from apps.certificates.choices import CertificateSource, CertificateStatus, IdentityPurpose
from apps.certificates.identities import load_key
from apps.certificates.models import Certificate, Identity
from apps.certificates.pkcs12_inspection import MAX_ITERATIONS
from apps.certificates.uploads import (
    MAX_UPLOAD_BYTES,
    ReplaceConfirmationNeeded,
    UploadRejected,
    delete_user_identity,
    store_user_identity,
    user_identities,
    validate_pkcs12,
)
from apps.pki import crypto
from tests.certificates.bundles import (
    PASSWORD,
    bundle,
    issuer,
    openssl_bundle,
    user_certificate,
    with_hidden_key,
    with_iterations,
    with_second_key,
)
from tests.factories import make_key

SIGNING = IdentityPurpose.SMIME_SIGNING


def rejection(data: bytes, password: str = PASSWORD, **kwargs) -> str:
    with pytest.raises(UploadRejected) as caught:
        validate_pkcs12(data=data, password=password, **kwargs)
    return caught.value.message


# --- the validation matrix ------------------------------------------------------------------


def test_it_accepts_an_ec_bundle_made_with_cryptography_and_returns_key_leaf_and_chain():
    ca = issuer()
    key = make_key("ec-p256")
    cert = user_certificate(key, ca=ca)

    validated = validate_pkcs12(data=bundle(key, cert, cas=[ca[1]]), password=PASSWORD)

    assert validated.certificate == cert
    assert crypto.public_key_matches(validated.key, cert)
    assert validated.chain == [ca[1]]


def test_it_accepts_an_rsa_bundle_exported_by_openssl(tmp_path):
    key = make_key("rsa2048")
    cert = user_certificate(key)

    validated = validate_pkcs12(data=openssl_bundle(key, cert, tmp_path), password=PASSWORD)

    assert validated.certificate == cert
    assert validated.chain == []


def test_it_accepts_an_openssl_legacy_export_with_rc2_40_certificates(tmp_path):
    key = make_key("rsa2048")
    cert = user_certificate(key)
    data = openssl_bundle(key, cert, tmp_path, legacy=True)

    validated = validate_pkcs12(data=data, password=PASSWORD)

    assert validated.certificate == cert


def test_it_accepts_an_ec_bundle_exported_by_openssl(tmp_path):
    key = make_key("ec-p256")
    cert = user_certificate(key)

    validated = validate_pkcs12(data=openssl_bundle(key, cert, tmp_path), password=PASSWORD)

    assert validated.certificate == cert


def test_it_accepts_the_3des_sha1_scheme_of_older_exporters():
    key = make_key("ec-p256")
    cert = user_certificate(key)

    validated = validate_pkcs12(data=bundle(key, cert, legacy=True), password=PASSWORD)

    assert validated.certificate == cert


def test_it_refuses_a_file_over_100_kb_before_reading_it():
    message = rejection(b"\x30" * (MAX_UPLOAD_BYTES + 1))

    assert message.startswith("The file is 100 KB; at most 100 KB is accepted.")


def test_it_refuses_an_empty_file():
    assert rejection(b"").startswith("The file is empty.")


def test_it_refuses_a_pem_file_and_says_to_export_pkcs12():
    pem = user_certificate(make_key()).public_bytes(serialization.Encoding.PEM)

    assert rejection(pem).startswith("This is a PEM (text) file, not a PKCS#12 file.")


@pytest.mark.parametrize("data", [b"not a certificate at all", b"\x30\x03\x02\x01\x03", b"%PDF"])
def test_it_refuses_anything_that_is_not_pkcs12(data):
    assert rejection(data).startswith("This is not a PKCS#12 (.p12 or .pfx) file.")


@pytest.mark.parametrize("legacy", [False, True])
def test_it_refuses_a_wrong_password(legacy):
    data = bundle(legacy=legacy)

    assert rejection(data, password="wrong").startswith("The password is not right for this file.")


def test_it_refuses_a_wrong_password_on_an_openssl_legacy_export(tmp_path):
    key = make_key("rsa2048")
    data = openssl_bundle(key, user_certificate(key), tmp_path, legacy=True)

    assert rejection(data, password="wrong").startswith("The password is not right")


def test_it_refuses_a_file_with_certificates_and_no_key():
    cert = user_certificate(make_key())
    data = pkcs12.serialize_key_and_certificates(
        None, None, None, [cert], serialization.BestAvailableEncryption(PASSWORD.encode())
    )

    assert rejection(data).startswith("The file holds no private key, only certificates.")


def test_it_refuses_a_file_with_two_private_keys():
    assert rejection(with_second_key(bundle())).startswith(
        "The file holds 2 private keys; exactly one is accepted."
    )


def test_it_refuses_a_key_that_matches_no_certificate_of_the_file():
    other = user_certificate(make_key())
    data = pkcs12.serialize_key_and_certificates(
        b"x", make_key(), None, [other], serialization.BestAvailableEncryption(PASSWORD.encode())
    )

    assert rejection(data) == (
        "The private key in the file does not belong to its certificate. Export the "
        "certificate together with its own private key."
    )


def test_it_refuses_an_expired_certificate():
    key = make_key()
    cert = user_certificate(key, starts_in_days=-400, days=365)

    assert rejection(bundle(key, cert)).startswith(
        f"The certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}."
    )


def test_it_refuses_a_certificate_not_yet_valid():
    key = make_key()
    cert = user_certificate(key, starts_in_days=3)

    assert rejection(bundle(key, cert)).startswith(
        f"The certificate is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC."
    )


def test_validity_is_judged_at_the_time_given():
    key = make_key()
    cert = user_certificate(key, starts_in_days=-1, days=10)
    later = cert.not_valid_after_utc + datetime.timedelta(seconds=1)

    assert rejection(bundle(key, cert), now=later).startswith("The certificate expired on")


def test_it_refuses_an_rsa_key_under_2048_bits(tmp_path):
    key = make_key("rsa1024")
    data = openssl_bundle(key, user_certificate(key), tmp_path)

    assert rejection(data).startswith("The private key is RSA 1024 bits; at least 2048 bits")


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("mac", "The file's integrity check (MAC) asks for 2,000,000,000 key-derivation"),
        ("key", "The file's private key encryption asks for 2,000,000,000 key-derivation"),
        ("certs", "The file's certificate encryption asks for 2,000,000,000 key-derivation"),
    ],
)
def test_it_refuses_a_huge_iteration_count_before_deriving_any_key(where, expected):
    # Deriving a key with two billion iterations would take hours: the refusal proves
    # the count was read first.
    data = with_iterations(bundle(), **{where: 2_000_000_000})

    assert rejection(data).startswith(expected)


@pytest.mark.parametrize("legacy", [False, True])
def test_it_refuses_a_count_just_over_the_cap_in_either_scheme(legacy):
    data = with_iterations(bundle(legacy=legacy), key=MAX_ITERATIONS + 1)

    assert "asks for 200,001 key-derivation iterations; at most 200,000" in rejection(data)


def test_it_refuses_a_huge_count_on_a_key_hidden_inside_an_encrypted_container():
    data = with_hidden_key(bundle(), key_iterations=2_000_000_000)

    assert rejection(data).startswith(
        "The file's private key encryption asks for 2,000,000,000 key-derivation iterations"
    )


def test_it_refuses_a_file_whose_counts_add_up_past_the_total_cap():
    data = with_iterations(bundle(), mac=200_000, key=200_000, certs=200_000)
    data = with_hidden_key(data, key_iterations=200_000)

    assert rejection(data).startswith(
        "The file asks for more than 600,000 key-derivation iterations in all."
    )


# --- storing --------------------------------------------------------------------------------


@pytest.fixture
def dave(db):
    from tests.factories import force_user

    return force_user("dave", first_name="Dave", last_name="Doe")


def test_an_upload_stores_the_certificate_and_the_key_encrypted_without_the_password(dave):
    key = make_key()
    cert = user_certificate(key)

    identity = store_user_identity(
        user=dave, purpose=SIGNING, data=bundle(key, cert), password=PASSWORD, actor=dave
    )

    identity.refresh_from_db()
    certificate = identity.certificate
    assert (certificate.source, certificate.user, certificate.ca) == (
        CertificateSource.USER_PROVIDED,
        dave,
        None,
    )
    assert certificate.fingerprint_sha256 == crypto.fingerprint_sha256(cert)
    assert (identity.user, identity.purpose, identity.current) == (dave, SIGNING, True)
    assert identity.private_key.startswith("mdmc1:")
    assert crypto.public_key_matches(load_key(identity), cert)
    assert list(user_identities(dave)) == [identity]
    event = AuditEvent.objects.get(object_id=str(certificate.pk), action="create")
    assert event.message == "user-provided S/MIME signing certificate of dave uploaded"
    assert PASSWORD not in str(event.__dict__)


def test_a_refused_upload_stores_nothing(dave):
    with pytest.raises(UploadRejected):
        store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password="wrong")

    assert (Certificate.objects.count(), Identity.objects.count(), AuditEvent.objects.count()) == (
        0,
        0,
        0,
    )


def test_an_unknown_purpose_is_refused(dave):
    with pytest.raises(UploadRejected) as caught:
        store_user_identity(user=dave, purpose="wifi", data=bundle(), password=PASSWORD)

    assert caught.value.message == (
        "Choose what the certificate is for: S/MIME signing, S/MIME encryption, "
        "Identity (Wi-Fi, VPN, authentication)."
    )
    assert Identity.objects.count() == 0


def test_a_second_upload_for_the_purpose_needs_confirmation_and_changes_nothing(dave):
    first = store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD)

    with pytest.raises(ReplaceConfirmationNeeded) as caught:
        store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD)

    assert caught.value.existing == first
    assert caught.value.message.startswith("You already have an S/MIME signing certificate (")
    assert list(user_identities(dave)) == [first]
    assert Certificate.objects.count() == 1


def test_a_confirmed_replacement_retires_the_old_identity_and_deletes_its_key(dave):
    first = store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD)

    second = store_user_identity(
        user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD, replace=True
    )

    first.refresh_from_db()
    first.certificate.refresh_from_db()
    assert (first.current, first.private_key) == (False, "")
    assert first.certificate.status == CertificateStatus.REMOVED
    assert second.certificate.replaces == first.certificate
    assert list(user_identities(dave)) == [second]


def test_purposes_are_independent(dave):
    signing = store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD)
    encryption = store_user_identity(
        user=dave, purpose=IdentityPurpose.SMIME_ENCRYPTION, data=bundle(), password=PASSWORD
    )

    assert set(user_identities(dave)) == {signing, encryption}


def test_delete_retires_the_identity_deletes_its_key_and_marks_the_certificate_removed(dave):
    identity = store_user_identity(user=dave, purpose=SIGNING, data=bundle(), password=PASSWORD)

    delete_user_identity(identity=identity, actor=dave)

    identity.refresh_from_db()
    identity.certificate.refresh_from_db()
    assert (identity.current, identity.private_key) == (False, "")
    assert identity.certificate.status == CertificateStatus.REMOVED
    assert list(user_identities(dave)) == []
    event = AuditEvent.objects.get(object_id=str(identity.certificate.pk), action="delete")
    assert event.message == "user-provided S/MIME signing certificate deleted; key deleted"


def test_the_same_certificate_can_be_uploaded_again_after_deleting_it(dave):
    key = make_key()
    data = bundle(key, user_certificate(key))
    identity = store_user_identity(user=dave, purpose=SIGNING, data=data, password=PASSWORD)
    delete_user_identity(identity=identity)

    again = store_user_identity(user=dave, purpose=SIGNING, data=data, password=PASSWORD)

    assert again.pk == identity.pk
    again.certificate.refresh_from_db()
    assert again.certificate.status == CertificateStatus.ACTIVE
    assert crypto.public_key_matches(load_key(again), again.certificate.certificate)
    assert list(user_identities(dave)) == [again]


def test_the_current_certificate_uploaded_again_is_refused_with_nothing_to_change(dave):
    data = bundle()
    store_user_identity(user=dave, purpose=SIGNING, data=data, password=PASSWORD)

    with pytest.raises(UploadRejected) as caught:
        store_user_identity(user=dave, purpose=SIGNING, data=data, password=PASSWORD)

    assert caught.value.message == (
        "This certificate is already your S/MIME signing certificate; there is nothing to change."
    )


def test_someone_elses_certificate_is_refused(dave, charlie):
    data = bundle()
    store_user_identity(user=dave, purpose=SIGNING, data=data, password=PASSWORD)

    with pytest.raises(UploadRejected) as caught:
        store_user_identity(user=charlie, purpose=SIGNING, data=data, password=PASSWORD)

    assert caught.value.message.startswith("This certificate is already in mdmcerts")
    assert list(user_identities(charlie)) == []
