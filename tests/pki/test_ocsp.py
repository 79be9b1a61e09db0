"""The OCSP responder: openssl as the client, the inventory as the truth."""

import base64
import datetime
import os
import re
import urllib.parse

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.db import connection

from apps.certificates.models import Certificate
from apps.certificates.services import revoke_certificate
from apps.pki import crypto
from apps.pki.models import CertificateAuthority
from apps.pki.revocation import OCSP_MAX_REQUEST_BYTES
from apps.pki.services import BACKDATE, OCSP_SIGNER_VALIDITY, ensure_ocsp_signer
from tests.factories import force_ca, force_certificate, force_template
from tests.openssl import openssl

OCSP_REQUEST = "application/ocsp-request"


@pytest.fixture
def template(db):
    return force_template()


def write_pems(tmp_path, ca: CertificateAuthority, certificate: Certificate) -> tuple[str, str]:
    (tmp_path / "ca.pem").write_text(ca.certificate_pem)
    (tmp_path / "leaf.pem").write_text(certificate.certificate_pem)
    return str(tmp_path / "ca.pem"), str(tmp_path / "leaf.pem")


def openssl_ocsp(tmp_path, url: str, certificate: Certificate, *extra: str) -> str:
    ca_pem, leaf_pem = write_pems(tmp_path, certificate.ca, certificate)
    run = openssl(
        "ocsp", *extra, "-issuer", ca_pem, "-cert", leaf_pem, "-url", url, "-CAfile", ca_pem,
        "-resp_text",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout.decode() + run.stderr.decode()


def ocsp_url(live_server, ca: CertificateAuthority) -> str:
    return f"{live_server.url}/pki/{ca.slug}/ocsp"


def request_for(certificate: Certificate, *, nonce: bytes | None = None, issuer=None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        certificate.certificate, issuer or certificate.ca.certificate, hashes.SHA256()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def post(client, ca: CertificateAuthority, body: bytes):
    return client.post(f"/pki/{ca.slug}/ocsp", data=body, content_type=OCSP_REQUEST)


def response_status(response) -> ocsp.OCSPResponseStatus:
    assert response.status_code == 200
    assert response["Content-Type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content).response_status


# --- openssl ocsp against the live server ----------------------------------------------


@pytest.mark.usefixtures("transactional_db")
def test_openssl_ocsp_says_good_for_an_active_certificate(live_server, tmp_path):
    certificate = force_certificate()

    text = openssl_ocsp(tmp_path, ocsp_url(live_server, certificate.ca), certificate)

    assert "Response verify OK" in text
    assert re.search(r"leaf\.pem: good", text)
    assert "OCSP Response Status: successful (0x0)" in text
    assert re.search(r"OCSP Nonce:\s*\n\s*0410", text)  # openssl's nonce, echoed


@pytest.mark.usefixtures("transactional_db")
def test_openssl_ocsp_says_revoked_with_the_reason_and_time_of_the_database(live_server, tmp_path):
    certificate = force_certificate()
    revoke_certificate(certificate=certificate, reason="key_compromise")
    row = Certificate.objects.get(pk=certificate.pk)

    text = openssl_ocsp(tmp_path, ocsp_url(live_server, certificate.ca), certificate, "-sha256")

    assert "Response verify OK" in text
    assert re.search(r"leaf\.pem: revoked", text)
    assert "Reason: keyCompromise" in text
    assert f"Revocation Time: {row.revoked_at:%b %e %H:%M:%S %Y} GMT" in text


@pytest.mark.usefixtures("transactional_db")
def test_openssl_ocsp_says_unknown_for_a_serial_the_inventory_does_not_hold(live_server, tmp_path):
    certificate = force_certificate()
    Certificate.objects.filter(pk=certificate.pk).delete()

    text = openssl_ocsp(tmp_path, ocsp_url(live_server, certificate.ca), certificate)

    assert "Response verify OK" in text
    assert re.search(r"leaf\.pem: unknown", text)


@pytest.mark.usefixtures("transactional_db")
def test_the_ocsp_url_is_the_one_issued_certificates_carry(live_server, settings, tmp_path):
    settings.PUBLIC_BASE_URL = live_server.url
    certificate = force_certificate()
    access = certificate.certificate.extensions.get_extension_for_class(
        x509.AuthorityInformationAccess
    ).value
    [url] = [d.access_location.value for d in access if d.access_method.dotted_string.endswith("1")]

    text = openssl_ocsp(tmp_path, url, certificate)

    assert url == certificate.ca.public_url("ocsp")
    assert re.search(r"leaf\.pem: good", text)


# --- the protocol through Django's client --------------------------------------------


def test_get_form_answers_with_the_nonce_and_caching_until_next_update(template, client):
    certificate = force_certificate(template=template)
    nonce = os.urandom(16)
    encoded = urllib.parse.quote(base64.b64encode(request_for(certificate, nonce=nonce)), safe="")

    with time_machine.travel(datetime.datetime.now(datetime.UTC), tick=False):
        response = client.get(f"/pki/{template.ca.slug}/ocsp/{encoded}")

    assert response_status(response) == ocsp.OCSPResponseStatus.SUCCESSFUL
    answer = ocsp.load_der_ocsp_response(response.content)
    signer = CertificateAuthority.objects.get(pk=template.ca.pk).ocsp_certificate
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == int(certificate.serial, 16)
    assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert answer.certificates == [signer]
    assert (
        answer.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(signer.public_key()).digest
    )
    signer.public_key().verify(
        answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm)
    )
    max_age = int((answer.next_update_utc - answer.produced_at_utc).total_seconds())
    assert response["Cache-Control"] == f"public, max-age={max_age}"


def test_post_of_a_revoked_certificate_carries_time_and_reason(
    template, client, django_capture_on_commit_callbacks
):
    certificate = force_certificate(template=template)
    with django_capture_on_commit_callbacks(execute=True):
        revoke_certificate(certificate=certificate, reason="superseded")
    row = Certificate.objects.get(pk=certificate.pk)

    response = post(client, template.ca, request_for(certificate))

    answer = ocsp.load_der_ocsp_response(response.content)
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.superseded
    assert answer.revocation_time_utc == row.revoked_at.replace(microsecond=0)
    assert "no-store" in response["Cache-Control"]


def test_a_request_about_another_issuer_is_unauthorized(template, client):
    other = force_certificate()  # from another CA

    response = post(client, template.ca, request_for(other))

    assert response_status(response) == ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"\x30\x00", b"\x30\x82\xff\xff" + b"\x00" * 50, os.urandom(300)],
    ids=["empty", "text", "empty-sequence", "short", "random"],
)
def test_a_malformed_post_is_malformed_request_never_a_500(template, client, body):
    response = post(client, template.ca, body)

    assert response_status(response) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_truncated_request_is_malformed_request(template, client):
    der = request_for(force_certificate(template=template))

    statuses = {response_status(post(client, template.ca, der[:cut])) for cut in range(len(der))}

    assert statuses == {ocsp.OCSPResponseStatus.MALFORMED_REQUEST}


@pytest.mark.parametrize("encoded", ["not-base64!!", "%ZZ", "AAAA", "MA%3D%3D"])
def test_a_malformed_get_is_malformed_request(template, client, encoded):
    response = client.get(f"/pki/{template.ca.slug}/ocsp/{encoded}")

    assert response_status(response) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_request_for_two_certificates_is_malformed_request(template, client, tmp_path):
    first, second = (force_certificate(template=template) for _ in range(2))
    ca_pem, first_pem = write_pems(tmp_path, template.ca, first)
    (tmp_path / "second.pem").write_text(second.certificate_pem)
    made = openssl(
        "ocsp", "-issuer", ca_pem, "-cert", first_pem, "-cert", str(tmp_path / "second.pem"),
        "-reqout", str(tmp_path / "req.der"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()

    response = post(client, template.ca, (tmp_path / "req.der").read_bytes())

    assert response_status(response) == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_an_oversized_request_is_413_and_makes_no_signer(template, client):
    response = post(client, template.ca, b"\x30" * (OCSP_MAX_REQUEST_BYTES + 1))

    assert response.status_code == 413
    assert CertificateAuthority.objects.get(pk=template.ca.pk).ocsp_certificate_pem == ""


def test_an_unknown_ca_is_404(client, db):
    assert post(client, CertificateAuthority(slug="no-such-ca"), b"x").status_code == 404
    assert client.get("/pki/no-such-ca/ocsp/MAA%3D").status_code == 404


def test_get_without_a_request_is_405(template, client):
    assert client.get(f"/pki/{template.ca.slug}/ocsp").status_code == 405


# --- the delegated signer --------------------------------------------------------------


def test_the_signer_is_a_delegated_ocsp_certificate_issued_by_the_ca(template):
    ca = ensure_ocsp_signer(template.ca)
    signer = ca.ocsp_certificate

    signer.verify_directly_issued_by(ca.certificate)
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert signer.extensions.get_extension_for_class(x509.OCSPNoCheck).value == x509.OCSPNoCheck()
    assert not signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert crypto.key_algorithm_of(signer.public_key()) == ca.key_algorithm
    assert (
        signer.not_valid_after_utc - signer.not_valid_before_utc == OCSP_SIGNER_VALIDITY + BACKDATE
    )


def test_an_rsa_ca_gets_an_rsa_2048_signer(db):
    ca = ensure_ocsp_signer(force_ca(key_algorithm="rsa3072"))

    assert ca.ocsp_certificate.public_key().key_size == 2048


def test_the_signer_key_is_never_stored_in_clear(template):
    ca = ensure_ocsp_signer(template.ca)
    key_der = crypto.private_key_der(ca.load_ocsp_key())
    clear = [
        key_der,
        key_der.hex().encode(),
        base64.b64encode(key_der),
        ca.load_ocsp_key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .split(b"\n")[1],
    ]

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM pki_certificateauthority WHERE id = %s", [ca.pk])
        row = cursor.fetchone()
    raw = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row)

    assert ca.ocsp_private_key.startswith("mdmc1:")
    assert all(form not in raw for form in clear)


def test_the_signer_is_kept_until_its_last_week_then_renewed(template):
    first = ensure_ocsp_signer(template.ca).ocsp_certificate
    expiry = first.not_valid_after_utc

    with time_machine.travel(expiry - datetime.timedelta(days=8), tick=False):
        kept = ensure_ocsp_signer(template.ca).ocsp_certificate
    with time_machine.travel(expiry - datetime.timedelta(days=6), tick=False):
        renewed = ensure_ocsp_signer(template.ca).ocsp_certificate

    assert kept == first
    assert renewed != first
    assert renewed.not_valid_after_utc > expiry
