"""The SCEP endpoint over HTTP: operations, paths, content types, limits and hostile input.

Content types are exactly RFC 8894's: GetCACaps ``text/plain``, GetCACert
``application/x-x509-ca-ra-cert`` (mdmcerts always has an RA), GetNextCACert
``application/x-x509-next-ca-cert``, PKIOperation ``application/x-pki-message``.
"""

import base64
import datetime
import random
import time

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from django.db import connection
from django.test import Client

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate
from apps.pki.models import CertificateAuthority
from apps.scep.protocol import MessageType, PKIStatus, constants
from apps.scep.protocol import client as protocol_client
from apps.scep.protocol import cms as scep_cms
from tests.factories import force_ca
from tests.scep.client import (
    PKI_MESSAGE,
    DjangoTransport,
    Identity,
    ScepClient,
    make_csr,
    rsa_key,
)
from tests.scep.conftest import endpoint_path

pytestmark = pytest.mark.django_db
KEY_USAGE_BITS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)
CAPS = "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\n"
MAX = constants.MAX_MESSAGE_SIZE


def http(template=None, suffix: str = "pkiclient.exe", *, slug: str | None = None):
    """(transport, path) for raw HTTP requests to a template's endpoint."""
    return DjangoTransport(Client()), f"/scep/{slug or template.slug}/{suffix}"


def fingerprint(certificate: x509.Certificate) -> bytes:
    return certificate.fingerprint(hashes.SHA256())


def a_pkcsreq(client: ScepClient) -> bytes:
    key = rsa_key()
    csr = make_csr(key)
    der, _ = client.message(
        message_type=MessageType.PKCS_REQ,
        payload=protocol_client.pkcs_req_payload(csr),
        signer=Identity.self_signed(key, csr.subject),
        transaction_id=protocol_client.transaction_id_for(key.public_key()),
    )
    return der


# --- GetCACaps ------------------------------------------------------------------------


def test_getcacaps_advertises_renewal_only_when_the_template_renews(make_template):
    renewing = make_template(auto_renew=True)
    not_renewing = make_template(auto_renew=False)

    answers = [
        transport.get(path, "operation=GetCACaps")
        for transport, path in (http(renewing), http(not_renewing))
    ]

    assert [(a.status, a.content_type, a.text) for a in answers] == [
        (200, "text/plain", CAPS + "Renewal\n"),
        (200, "text/plain", CAPS),
    ]


def test_getcacaps_advertises_getnextcacert_only_with_a_successor(make_template, ca):
    template = make_template(auto_renew=False)
    ca.successor = force_ca()
    ca.save()

    transport, path = http(template)
    reply = transport.get(path, "operation=GetCACaps")

    assert (reply.status, reply.content_type, reply.text) == (
        200,
        "text/plain",
        CAPS + "GetNextCACert\n",
    )


# --- GetCACert ----------------------------------------------------------------------------


def test_getcacert_holds_the_ra_certificate_and_the_ca(template_none, ca):
    transport, path = http(template_none)

    reply = transport.get(path, "operation=GetCACert")

    assert (reply.status, reply.content_type) == (200, "application/x-x509-ca-ra-cert")
    certificates = pkcs7.load_der_pkcs7_certificates(reply.body)
    # A DER SET OF is sorted, so clients find the RA by its key usage, not its position.
    assert sorted(certificates, key=fingerprint) == sorted(
        [ca.ra_certificate, ca.certificate], key=fingerprint
    )
    ra = protocol_client.select_recipient(certificates)
    assert ra == ca.ra_certificate
    ra.verify_directly_issued_by(ca.certificate)
    assert isinstance(ra.public_key(), rsa.RSAPublicKey)
    assert ra.public_key().key_size == 2048
    usage = ra.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert [name for name in KEY_USAGE_BITS if getattr(usage.value, name)] == [
        "digital_signature",
        "key_encipherment",
    ]
    assert ra.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_getcacert_of_an_intermediate_ca_holds_the_whole_chain(make_template):
    root = force_ca()
    intermediate = force_ca(parent=root, path_length=0)
    template = make_template(ca=intermediate)

    transport, path = http(template)
    certificates = pkcs7.load_der_pkcs7_certificates(
        transport.get(path, "operation=GetCACert").body
    )

    intermediate.refresh_from_db()
    assert sorted(certificates, key=fingerprint) == sorted(
        [intermediate.ra_certificate, intermediate.certificate, root.certificate], key=fingerprint
    )
    assert protocol_client.select_recipient(certificates) == intermediate.ra_certificate


def test_the_ra_is_made_on_first_use_and_its_key_is_encrypted_in_the_database(make_template):
    ca = force_ca()
    template = make_template(ca=ca)
    assert ca.ra_certificate_pem == ""

    transport, path = http(template)
    certificates = pkcs7.load_der_pkcs7_certificates(
        transport.get(path, "operation=GetCACert").body
    )
    ra = protocol_client.select_recipient(certificates)

    ca = CertificateAuthority.objects.get(pk=ca.pk)
    assert ra == ca.ra_certificate
    ra_key = ca.load_ra_key()
    assert ra_key.public_key() == ra.public_key()
    key_der = ra_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT ra_private_key FROM pki_certificateauthority WHERE id = %s", [ca.pk])
        (stored,) = cursor.fetchone()
    assert stored
    for form in (key_der.hex(), base64.b64encode(key_der).decode(), "PRIVATE KEY"):
        assert form not in stored
    assert base64.b64encode(key_der[-48:]).decode() not in stored
    event = AuditEvent.objects.get(object_id=str(ca.pk), message="SCEP RA certificate issued")
    assert event.changes["ra_certificate"][0] is None


# --- GetNextCACert ------------------------------------------------------------------------


def test_getnextcacert_returns_the_successors_certificates_signed_by_the_current_ra(
    make_template, ca
):
    successor = force_ca()
    ca.successor = successor
    ca.save()
    template = make_template()

    transport, path = http(template)
    reply = transport.get(path, "operation=GetNextCACert")

    assert (reply.status, reply.content_type) == (200, "application/x-x509-next-ca-cert")
    message = scep_cms.load_signed_message(reply.body)
    signer = scep_cms.find_signer(message, message.certificates)
    assert scep_cms.to_cryptography(signer) == ca.ra_certificate
    scep_cms.verify_signed_message(message, ca.ra_certificate, scep_cms.signer_digest(message))
    successor.refresh_from_db()
    assert sorted(pkcs7.load_der_pkcs7_certificates(message.content), key=fingerprint) == sorted(
        [successor.ra_certificate, successor.certificate], key=fingerprint
    )


def test_getnextcacert_is_404_without_a_successor(template_none):
    transport, path = http(template_none)

    reply = transport.get(path, "operation=GetNextCACert")

    assert (reply.status, reply.content_type, reply.text) == (
        404,
        "text/plain",
        "this CA has no successor configured",
    )


# --- paths and operations -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "pkiclient.exe", "cgi-bin/pkiclient.exe"])
def test_the_endpoint_answers_with_any_path_suffix(template_none, suffix):
    transport, path = http(template_none, suffix)
    client = ScepClient(transport, path)

    caps = client.get_ca_caps()
    key = rsa_key()
    result = client.pkcs_req(make_csr(key), key)

    assert caps == CAPS + "Renewal\n"
    assert result.status is PKIStatus.SUCCESS
    assert client.last_reply.content_type == PKI_MESSAGE


def test_an_unknown_slug_is_404(db):
    transport, path = http(slug="no-such-template")

    assert transport.get(path, "operation=GetCACaps").status == 404
    assert transport.post(path, "operation=PKIOperation", b"\x30\x00").status == 404


@pytest.mark.parametrize("query", ["", "operation=", "operation=GetCRL", "operation=getcacaps"])
def test_an_unknown_or_missing_operation_is_400(template_none, query):
    transport, path = http(template_none)

    reply = transport.get(path, query)

    assert (reply.status, reply.content_type, reply.text) == (
        400,
        "text/plain",
        "unknown or missing operation",
    )


def test_post_is_only_for_pkioperation(template_none):
    transport, path = http(template_none)

    reply = transport.post(path, "operation=GetCACert", b"")

    assert (reply.status, reply.content_type, reply.text) == (
        400,
        "text/plain",
        "POST is for operation=PKIOperation",
    )


def test_pkioperation_answers_are_pki_messages_for_success_and_failure(scep, template_static):
    client = scep(template_static)
    key = rsa_key()

    refused = client.pkcs_req(make_csr(key, challenge="wrong"), key)
    refused_reply = client.last_reply
    key = rsa_key()
    issued = client.pkcs_req(make_csr(key, challenge="static-Challenge-7f3k"), key)

    assert (refused.status, issued.status) == (PKIStatus.FAILURE, PKIStatus.SUCCESS)
    assert (refused_reply.status, refused_reply.content_type) == (200, PKI_MESSAGE)
    assert (client.last_reply.status, client.last_reply.content_type) == (200, PKI_MESSAGE)


# --- limits -----------------------------------------------------------------------------------


def test_a_body_over_64_kib_is_413_before_it_is_parsed(template_none):
    transport, path = http(template_none)
    client = Client()

    too_large = transport.post(path, "operation=PKIOperation", b"\x30" * (MAX + 1))
    # The declared length alone decides: the body is not even read.
    declared = client.generic(
        "POST",
        f"{path}?operation=PKIOperation",
        b"\x30\x00",
        content_type=PKI_MESSAGE,
        CONTENT_LENGTH=str(MAX + 1),
    )
    at_the_limit = transport.post(path, "operation=PKIOperation", b"\x30" * MAX)

    assert (too_large.status, too_large.content_type, too_large.text) == (
        413,
        "text/plain",
        "the message is too large",
    )
    assert (declared.status_code, declared.content) == (413, b"the message is too large")
    assert at_the_limit.status == 400  # parsed, and refused as malformed
    assert not AuditEvent.objects.filter(action="issue_failed").exists()


def test_an_unreadable_content_length_is_an_empty_body_not_an_error_page(template_none):
    response = Client().generic(
        "POST",
        f"{endpoint_path(template_none)}?operation=PKIOperation",
        b"\x30\x00",
        content_type=PKI_MESSAGE,
        CONTENT_LENGTH="twelve",
    )

    assert (response.status_code, response.content) == (400, b"the message is empty")


def test_an_oversized_get_message_is_414(template_none):
    transport, path = http(template_none)

    reply = transport.get(path, "operation=PKIOperation&message=" + "A" * (MAX * 4 // 3 + 1024))

    assert (reply.status, reply.content_type, reply.text) == (
        414,
        "text/plain",
        "the message is too large",
    )


# --- hostile input ----------------------------------------------------------------------------


def truncated_cms(client: ScepClient) -> bytes:
    der = a_pkcsreq(client)
    return der[: len(der) // 2]


def deep_nesting(client: ScepClient) -> bytes:
    return b"\x30\x80" * 10_000 + b"\x00\x00" * 10_000


def random_bytes(client: ScepClient) -> bytes:
    return random.Random(8894).randbytes(16_000)  # reproducible noise


def malformed_der(client: ScepClient) -> bytes:
    return b"\x30\x82\xff\xff\x02\x01\x00"


def a_certificate_not_a_message(client: ScepClient) -> bytes:
    return client.recipient.public_bytes(serialization.Encoding.DER)


def a_signed_data_without_signer(client: ScepClient) -> bytes:
    return scep_cms.degenerate_signed_data([client.recipient])


def zeros(client: ScepClient) -> bytes:
    return bytes(MAX)


HOSTILE = [
    (malformed_der, "a length overruns its container"),
    (truncated_cms, "a length overruns its container"),
    (deep_nesting, "the message is nested too deeply"),
    (random_bytes, "a length is too large"),
    (a_certificate_not_a_message, "the message is not a well-formed SCEP pkiMessage"),
    (a_signed_data_without_signer, "the message does not have exactly one signer"),
    (zeros, "unexpected end-of-contents"),
]


def test_hostile_bodies_get_400_and_the_worker_keeps_answering(scep, template_none, capsys):
    client = scep(template_none)
    answers, timings = [], {}

    for make_body, _ in HOSTILE:
        body = make_body(client)
        for method in ("POST", "GET"):
            started = time.perf_counter()
            reply = client.send(body, method=method)
            timings[f"{make_body.__name__} by {method}"] = time.perf_counter() - started
            answers.append(
                (make_body.__name__, method, reply.status, reply.content_type, reply.text)
            )
    key = rsa_key()
    after = client.pkcs_req(make_csr(key), key)

    assert answers == [
        (make_body.__name__, method, 400, "text/plain", reason)
        for make_body, reason in HOSTILE
        for method in ("POST", "GET")
    ]
    assert after.status is PKIStatus.SUCCESS
    assert client.get_ca_caps() == CAPS + "Renewal\n"
    assert Certificate.objects.count() == 1
    assert not AuditEvent.objects.filter(action="issue_failed").exists()
    slowest = max(timings, key=timings.get)
    with capsys.disabled():
        print(f"\nslowest hostile request: {slowest}, {timings[slowest] * 1000:.1f} ms")


@pytest.mark.parametrize("message", ["%%%", "not base64!", "QUJD" * 3 + "A", ""])
def test_a_get_message_that_is_not_base64_is_400(template_none, message):
    transport, path = http(template_none)

    reply = transport.get(path, f"operation=PKIOperation&message={message}")

    assert (reply.status, reply.content_type, reply.text) == (
        400,
        "text/plain",
        "the message parameter is not base64",
    )


def test_a_get_message_with_line_breaks_and_no_padding_is_read(scep, template_none):
    client = scep(template_none)
    der = a_pkcsreq(client)
    encoded = base64.encodebytes(der).decode().rstrip("=\n")
    query = "operation=PKIOperation&message=" + encoded.replace("\n", "%0A")

    reply = client.transport.get(client.path, query)

    assert (reply.status, reply.content_type) == (200, PKI_MESSAGE)
    assert Certificate.objects.count() == 1


def test_the_ra_stays_the_same_through_the_cas_last_month(scep, template_none, ca):
    with time_machine.travel(ca.not_after - datetime.timedelta(days=10), tick=False):
        client = scep(template_none)
        ra = client.recipient
        key = rsa_key()
        result = client.pkcs_req(make_csr(key), key)
        again = pkcs7.load_der_pkcs7_certificates(
            client.transport.get(client.path, "operation=GetCACert").body
        )

    assert result.status is PKIStatus.SUCCESS
    assert protocol_client.select_recipient(again) == ra
