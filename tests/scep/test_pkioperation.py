"""PKIOperation at /scep/<slug>/: the enrollment rules, through Django's test client.

Every refusal is a CertRep FAILURE with its failInfo and leaves nothing behind but an
"issuance failed" audit event with the reason and, for the rules that count, a failed
attempt: no certificate, no request row, the challenge still unused.
"""

import datetime
import re

import pytest
import time_machine
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import history_for
from apps.certificates.models import Certificate, CertificateRequest
from apps.certificates.services import revoke_certificate
from apps.enrollment.choices import ChallengeType, SubjectSource
from apps.enrollment.models import Challenge
from apps.scep.protocol import (
    ContentCipher,
    DigestAlgorithm,
    FailInfo,
    MessageType,
    PKIStatus,
    envelope,
)
from apps.scep.protocol import client as protocol_client
from apps.scep.protocol import cms as scep_cms
from tests.factories import force_ca
from tests.openssl import openssl
from tests.scep.client import (
    RAW,
    URLENCODED,
    Identity,
    get_query,
    make_csr,
    md5_signed_message,
    rsa_key,
    scep_attributes,
    signed_message,
    single_des_envelope,
)
from tests.scep.conftest import (
    DEVICE_SERIAL,
    DEVICE_UDID,
    STATIC_CHALLENGE,
    failures_of,
    nothing_issued,
    refusals,
)

pytestmark = pytest.mark.django_db
SOURCE = "192.0.2.10"  # the scep fixture's default client address
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
WRONG_CHALLENGE = "the challenge password is wrong, expired or used"
DECRYPT_FAILED = "the message could not be decrypted"


def tid(key) -> str:
    return protocol_client.transaction_id_for(key.public_key())


def challenge_row(value: str) -> Challenge:
    return Challenge.objects.get(public_id=value[:12])


def is_unused(value: str) -> bool:
    return challenge_row(value).used_at is None


def public_key_der(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def san_values(certificate: x509.Certificate) -> list[str]:
    """The SANs' values in order (a UPN decoded)."""
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [
        core.UTF8String.load(name.value).native if isinstance(name, x509.OtherName) else name.value
        for name in sans
    ]


def reply_cipher(der: bytes) -> ContentCipher:
    enveloped = envelope.load_envelope(scep_cms.load_signed_message(der).content)
    return envelope.content_cipher(enveloped, allow_single_des=True)


def reply_digest(der: bytes) -> DigestAlgorithm:
    return scep_cms.signer_digest(scep_cms.load_signed_message(der))


def failure(result) -> tuple:
    return result.status, result.fail_info, result.fail_info_text


def enroll(scep, template, *, challenge=None, key=None, remote_addr=SOURCE, **options):
    """PKCSReq for a fresh key (or ``key``); returns (key, result)."""
    key = key or rsa_key()
    client = scep(template, remote_addr=remote_addr)
    return key, client.pkcs_req(make_csr(key, challenge=challenge), key, **options)


# --- issuing ------------------------------------------------------------------------


def test_it_issues_without_a_challenge_when_the_template_asks_for_none(scep, template_none, ca):
    key = rsa_key()
    client = scep(template_none)

    result = client.pkcs_req(make_csr(key), key)

    assert result.status is PKIStatus.SUCCESS
    (issued,) = result.certificates
    assert issued.public_key() == key.public_key()
    issued.verify_directly_issued_by(ca.certificate)
    row = Certificate.objects.get()
    assert (row.fingerprint_sha256, row.status, row.source) == (
        issued.fingerprint(hashes.SHA256()).hex(),
        "active",
        "scep",
    )
    assert (row.template, row.ca, row.device, row.user) == (template_none, ca, None, None)
    request = CertificateRequest.objects.get()
    assert (request.transaction_id, request.status, request.certificate) == (
        tid(key),
        "issued",
        row,
    )
    assert request.source_ip == SOURCE
    (event,) = history_for(row)
    assert (event.action, event.message) == (
        "issue",
        f"issued by {ca} from template {template_none}",
    )
    assert event.source_ip == SOURCE
    assert refusals() == []


def test_it_issues_with_the_templates_static_challenge(scep, template_static):
    key, result = enroll(scep, template_static, challenge=STATIC_CHALLENGE)

    assert result.status is PKIStatus.SUCCESS
    assert result.certificates[0].public_key() == key.public_key()
    assert result.certificates[0].subject == x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mdmcerts tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, "static enrollment"),
        ]
    )
    assert Certificate.objects.get().certificate == result.certificates[0]


def test_a_dynamic_challenge_links_the_certificate_to_its_device_and_owner(
    scep, template_dynamic, challenge_for, device, dana
):
    challenge = challenge_for(template_dynamic)

    key, result = enroll(scep, template_dynamic, challenge=challenge)

    assert result.status is PKIStatus.SUCCESS
    (issued,) = result.certificates
    assert issued.public_key() == key.public_key()
    assert issued.subject == x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Zylker"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "dana"),
            x509.NameAttribute(NameOID.COMMON_NAME, DEVICE_SERIAL),
        ]
    )
    assert san_values(issued) == [
        "dana@zylker.com",
        "dana@corp.zylker.com",
        f"urn:udid:{DEVICE_UDID}",
    ]
    row = Certificate.objects.get()
    assert (row.device, row.user) == (device, dana)
    request = CertificateRequest.objects.get()
    assert (request.device, request.user, request.certificate) == (device, dana, row)
    assert challenge_row(challenge).used_at is not None


@pytest.mark.parametrize(
    "cipher", [ContentCipher.AES_128_CBC, ContentCipher.AES_256_CBC, ContentCipher.DES_EDE3_CBC]
)
def test_it_accepts_aes_and_3des_envelopes_and_answers_in_kind(scep, template_none, cipher):
    client = scep(template_none)
    key = rsa_key()
    result = client.pkcs_req(make_csr(key), key, cipher=cipher)

    assert result.status is PKIStatus.SUCCESS
    assert result.certificates[0].public_key() == key.public_key()
    assert reply_cipher(client.last_reply.body) is cipher


@pytest.mark.parametrize("digest", [DigestAlgorithm.SHA256, DigestAlgorithm.SHA512])
def test_it_accepts_sha256_and_sha512_and_signs_the_reply_alike(scep, template_none, digest):
    client = scep(template_none)
    key = rsa_key()

    result = client.pkcs_req(make_csr(key), key, digest=digest)

    assert result.status is PKIStatus.SUCCESS
    assert reply_digest(client.last_reply.body) is digest


@pytest.mark.parametrize(
    ("get_style", "base64_marks"), [(URLENCODED, ("%2B", "%2F")), (RAW, ("+", "/"))]
)
def test_it_enrolls_by_get_with_the_message_urlencoded_or_raw(
    scep, template_none, get_style, base64_marks
):
    client = scep(template_none, method="GET", get_style=get_style)
    key = rsa_key()

    result = client.pkcs_req(make_csr(key), key)

    assert result.status is PKIStatus.SUCCESS
    assert result.certificates[0].public_key() == key.public_key()
    assert Certificate.objects.count() == 1
    sent = get_query(client.last_message, get_style)
    assert all(mark in sent for mark in base64_marks)


def test_the_template_decides_subject_sans_and_usages_not_the_csr(
    scep, template_dynamic, challenge_for
):
    key = rsa_key()
    asked = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")])
    csr = make_csr(
        key,
        subject=asked,
        challenge=challenge_for(template_dynamic),
        extensions=[
            (x509.SubjectAlternativeName([x509.RFC822Name("dana@zylker.com")]), False),
            (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
        ],
    )

    result = scep(template_dynamic).pkcs_req(csr, key)

    assert result.status is PKIStatus.SUCCESS
    (issued,) = result.certificates
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEVICE_SERIAL
    assert san_values(issued) == [
        "dana@zylker.com",
        "dana@corp.zylker.com",
        f"urn:udid:{DEVICE_UDID}",
    ]
    usage = issued.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.digital_signature, usage.key_encipherment, usage.key_cert_sign) == (
        True,
        True,
        False,
    )
    assert list(issued.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        CLIENT_AUTH
    ]
    assert issued.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_a_subject_from_request_template_copies_only_the_allowed_san_types(scep, make_template):
    template = make_template(
        ChallengeType.NONE,
        subject_source=SubjectSource.REQUEST,
        allowed_request_san_types=["dns"],
    )
    key = rsa_key()
    asked = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "printer-7.zylker.com")])
    sans = x509.SubjectAlternativeName(
        [x509.DNSName("printer-7.zylker.com"), x509.RFC822Name("someone@zylker.com")]
    )
    csr = make_csr(key, subject=asked, extensions=[(sans, False)])

    result = scep(template).pkcs_req(csr, key)

    assert result.status is PKIStatus.SUCCESS
    (issued,) = result.certificates
    assert issued.subject == asked
    assert san_values(issued) == ["printer-7.zylker.com"]


# --- what a CSR may not ask for -----------------------------------------------------


@pytest.mark.parametrize(
    ("extension", "critical", "reason"),
    [
        (
            x509.SubjectAlternativeName([x509.DNSName("evil.example")]),
            False,
            "the request asks for the SAN dns:evil.example, which the template does not give",
        ),
        (
            x509.BasicConstraints(ca=True, path_length=None),
            True,
            "the request asks for a CA certificate",
        ),
        (
            x509.KeyUsage(True, False, False, False, False, True, False, False, False),
            True,
            "the request asks for key usage key_cert_sign, which the template does not give",
        ),
        (
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]),
            False,
            "the request asks for extended key usage 2.5.29.37.0, which the template does not give",
        ),
    ],
    ids=["extra-san", "ca-true", "key-cert-sign", "any-eku"],
)
def test_it_refuses_a_csr_asking_for_more_than_the_template_gives(
    scep, template_dynamic, challenge_for, device, extension, critical, reason
):
    challenge = challenge_for(template_dynamic)
    key = rsa_key()
    csr = make_csr(key, challenge=challenge, extensions=[(extension, critical)])

    result = scep(template_dynamic).pkcs_req(csr, key)

    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, reason)
    assert (result.certificates, result.crl_der) == ([], None)
    assert nothing_issued()
    assert is_unused(challenge)
    assert refusals() == [f"SCEP PKCS_REQ {tid(key)}: {reason}"]
    assert failures_of(template_dynamic) == {("source", SOURCE): 1, ("device", str(device.pk)): 1}


def test_it_refuses_a_weak_key(scep, template_static):
    key = rsa_key(1024)

    _, result = enroll(scep, template_static, challenge=STATIC_CHALLENGE, key=key)

    reason = "the key must be RSA 2048 or stronger (got RSA 1024)"
    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, reason)
    assert nothing_issued()
    assert refusals() == [f"SCEP PKCS_REQ {tid(key)}: {reason}"]
    assert failures_of(template_static) == {("source", SOURCE): 1}


def test_it_refuses_a_csr_that_fails_proof_of_possession(scep, template_none):
    key = rsa_key()
    der = make_csr(key).public_bytes(serialization.Encoding.DER)
    tampered = der[:-1] + bytes([der[-1] ^ 0x01])  # the CSR's own signature
    client = scep(template_none)

    result = client.exchange(
        message_type=MessageType.PKCS_REQ,
        payload=tampered,
        signer=Identity.self_signed(key),
        transaction_id="pop-1",
    )

    reason = "the request's signature does not verify (proof of possession)"
    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, reason)
    assert nothing_issued()
    assert refusals() == [f"SCEP PKCS_REQ pop-1: {reason}"]


def edited_csr(key, old: bytes, new: bytes) -> bytes:
    der = make_csr(key).public_bytes(serialization.Encoding.DER)
    assert der.count(old) == 1
    return der.replace(old, new)


def unknown_key_type_csr(key) -> bytes:
    """A CSR whose key algorithm is one nobody knows (rsaEncryption's arc, .99)."""
    return edited_csr(
        key, bytes.fromhex("06092a864886f70d010101"), bytes.fromhex("06092a864886f70d010163")
    )


def invalid_utf8_subject_csr(key) -> bytes:
    """A CSR whose subject CN is a UTF8String holding bytes that are not UTF-8."""
    return edited_csr(key, b"\x0c\x06device", b"\x0c\x06dev\xff\xfee")


@pytest.mark.parametrize("payload_for", [unknown_key_type_csr, invalid_utf8_subject_csr])
def test_a_csr_it_cannot_read_is_a_failure_not_an_error_page(scep, template_none, payload_for):
    key = rsa_key()
    payload = payload_for(key)
    client = scep(template_none)

    result = client.exchange(
        message_type=MessageType.PKCS_REQ,
        payload=payload,
        signer=Identity.self_signed(key),
        transaction_id="unreadable-1",
    )

    reason = "the CSR cannot be read or uses an algorithm mdmcerts does not support"
    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, reason)
    assert nothing_issued()
    assert refusals() == [f"SCEP PKCS_REQ unreadable-1: {reason}"]


def test_a_transaction_id_longer_than_a_request_row_holds_is_refused(scep, template_none):
    # 255 PrintableString characters pass the protocol package; the row keeps 128.
    key = rsa_key()

    _, result = enroll(scep, template_none, key=key, transaction_id="T" * 129)

    reason = "the transactionID is longer than 128 characters"
    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, reason)
    assert nothing_issued()
    assert refusals() == [f"SCEP PKCS_REQ {'T' * 129}: {reason}"]


def test_a_subject_longer_than_a_request_row_holds_is_refused(scep, template_none):
    key = rsa_key()
    long_subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit {n:02} " + "x" * 50)
            for n in range(20)
        ]
    )

    result = scep(template_none).pkcs_req(make_csr(key, subject=long_subject), key)

    reason = "the CSR's subject is longer than 1000 characters"
    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, reason)
    assert nothing_issued()


# --- challenges -----------------------------------------------------------------------


def test_it_refuses_a_wrong_static_challenge(scep, template_static):
    key, result = enroll(scep, template_static, challenge="static-Challenge-7f3K")

    reason = "the challenge password is wrong"
    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, reason)
    assert nothing_issued()
    assert refusals() == [f"SCEP PKCS_REQ {tid(key)}: {reason}"]
    assert failures_of(template_static) == {("source", SOURCE): 1}


@pytest.mark.parametrize("presented", [None, "", "0123456789ab" + "0" * 32])
def test_it_refuses_a_missing_or_wrong_dynamic_challenge(
    scep, template_dynamic, challenge_for, presented
):
    minted = challenge_for(template_dynamic)

    key, result = enroll(scep, template_dynamic, challenge=presented)

    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, WRONG_CHALLENGE)
    assert nothing_issued()
    assert is_unused(minted)
    assert refusals() == [f"SCEP PKCS_REQ {tid(key)}: {WRONG_CHALLENGE}"]
    assert failures_of(template_dynamic) == {("source", SOURCE): 1}


def test_it_refuses_an_expired_dynamic_challenge(scep, template_dynamic, challenge_for):
    minted = challenge_for(template_dynamic)
    client = scep(template_dynamic)
    client.ca_certs  # noqa: B018 -- GetCACert before time moves

    with time_machine.travel(timezone.now() + datetime.timedelta(minutes=61), tick=False):
        key = rsa_key()
        result = client.pkcs_req(make_csr(key, challenge=minted), key)

    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, WRONG_CHALLENGE)
    assert nothing_issued()
    assert is_unused(minted)


def test_it_refuses_a_reused_dynamic_challenge(scep, template_dynamic, challenge_for):
    minted = challenge_for(template_dynamic)
    _, first = enroll(scep, template_dynamic, challenge=minted)
    used_at = challenge_row(minted).used_at

    key, second = enroll(scep, template_dynamic, challenge=minted)

    assert first.status is PKIStatus.SUCCESS
    assert failure(second) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, WRONG_CHALLENGE)
    assert Certificate.objects.count() == 1
    assert CertificateRequest.objects.count() == 1
    assert challenge_row(minted).used_at == used_at
    assert refusals() == [f"SCEP PKCS_REQ {tid(key)}: {WRONG_CHALLENGE}"]


def test_a_challenge_minted_for_one_template_fails_on_another(
    scep, make_template, template_dynamic, challenge_for
):
    other = make_template(ChallengeType.DYNAMIC)
    minted = challenge_for(template_dynamic)

    _, result = enroll(scep, other, challenge=minted)

    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, WRONG_CHALLENGE)
    assert nothing_issued()
    assert is_unused(minted)


def test_fail_info_text_never_holds_the_challenge_a_trace_or_sql(
    scep, template_dynamic, template_static, challenge_for
):
    minted = challenge_for(template_dynamic)
    texts = []
    scenarios = [
        (template_dynamic, minted + "x", []),
        (template_dynamic, minted[:12] + "f" * 32, []),
        (template_static, minted, []),
        (template_static, STATIC_CHALLENGE + " ", []),
        (template_dynamic, minted, [(x509.BasicConstraints(ca=True, path_length=None), True)]),
        (template_dynamic, "' OR 1=1; --", []),
        (template_dynamic, "x" * 5000, []),
    ]
    for template, challenge, extensions in scenarios:
        key = rsa_key()
        csr = make_csr(key, challenge=challenge, extensions=extensions)
        result = scep(template).pkcs_req(csr, key)
        assert result.status is PKIStatus.FAILURE
        texts.append(result.fail_info_text)

    assert texts == [
        WRONG_CHALLENGE,
        WRONG_CHALLENGE,
        "the challenge password is wrong",
        "the challenge password is wrong",
        "the request asks for a CA certificate",
        WRONG_CHALLENGE,
        WRONG_CHALLENGE,
    ]
    stored = "\n".join(AuditEvent.objects.values_list("message", flat=True))
    for secret in (minted, minted[12:], STATIC_CHALLENGE):
        assert secret not in stored
    assert not re.search(r"Traceback|File \"|SELECT|INSERT|sqlite|psycopg", stored)


# --- lockout ------------------------------------------------------------------------


def test_a_source_is_locked_out_after_the_maximum_failed_attempts_for_the_interval(
    scep, make_template, challenge_for
):
    template = make_template(
        ChallengeType.DYNAMIC,
        subject="O=Zylker,CN=$DEVICE_SN$",
        max_failed_attempts=3,
        retry_interval_seconds=120,
    )
    minted = challenge_for(template)
    client = scep(template)
    client.ca_certs  # noqa: B018 -- GetCACert before time stops

    with time_machine.travel(timezone.now(), tick=False) as traveller:
        wrong = [enroll(scep, template, challenge="wrong")[1] for _ in range(3)]
        key = rsa_key()
        locked = client.pkcs_req(make_csr(key, challenge=minted), key)
        other_source = enroll(scep, template, challenge=minted, remote_addr="192.0.2.99")[1]
        challenge_row(minted).refresh_from_db()
        second_minted = challenge_for(template)
        traveller.shift(datetime.timedelta(seconds=119))
        still_locked = client.pkcs_req(make_csr(key, challenge=second_minted), key)
        traveller.shift(datetime.timedelta(seconds=1))
        lifted = client.pkcs_req(make_csr(key, challenge=second_minted), key)

    assert [failure(r) for r in wrong] == [
        (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, WRONG_CHALLENGE)
    ] * 3
    assert failure(locked) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_REQUEST,
        "too many failed attempts; try again in 120 seconds",
    )
    assert other_source.status is PKIStatus.SUCCESS  # only the failing source is locked
    assert failure(still_locked) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_REQUEST,
        "too many failed attempts; try again in 1 seconds",
    )
    assert lifted.status is PKIStatus.SUCCESS
    assert Certificate.objects.count() == 2
    assert len(refusals()) == 5


def test_a_device_that_failed_too_often_is_locked_out_from_any_source(
    scep, make_template, challenge_for, device
):
    template = make_template(
        ChallengeType.DYNAMIC,
        subject="O=Zylker,CN=$DEVICE_SN$",
        max_failed_attempts=2,
        retry_interval_seconds=300,
    )
    extra_san = [(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), False)]
    minted = challenge_for(template)
    clients = [scep(template, remote_addr=f"192.0.2.{n}") for n in (21, 22, 23)]
    for client in clients:
        client.ca_certs  # noqa: B018 -- GetCACert before time stops

    with time_machine.travel(timezone.now(), tick=False):
        for client in clients[:2]:
            key = rsa_key()
            csr = make_csr(key, challenge=minted, extensions=extra_san)
            assert client.pkcs_req(csr, key).status is PKIStatus.FAILURE
        key = rsa_key()
        result = clients[2].pkcs_req(make_csr(key, challenge=minted), key)

    assert failure(result) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_REQUEST,
        "too many failed attempts; try again in 300 seconds",
    )
    assert failures_of(template) == {
        ("source", "192.0.2.21"): 1,
        ("source", "192.0.2.22"): 1,
        ("device", str(device.pk)): 0,  # reset when the lock was set
    }
    assert nothing_issued()
    assert is_unused(minted)  # redeeming it was rolled back with the refusal


# --- algorithms -----------------------------------------------------------------------


def single_des_request(client, key, *, transaction_id: str, challenge=None):
    signer = Identity.self_signed(key)
    nonce = bytes(range(16))
    payload = protocol_client.pkcs_req_payload(make_csr(key, challenge=challenge))
    der = signed_message(
        single_des_envelope(payload, client.recipient),
        attributes=scep_attributes(message_type=19, transaction_id=transaction_id, nonce=nonce),
        signer=signer,
    )
    return client.read(client.send(der), signer=signer, transaction_id=transaction_id, nonce=nonce)


def test_single_des_is_refused_with_bad_alg_unless_the_template_opts_in(scep, make_template):
    strict = make_template(ChallengeType.NONE)
    legacy = make_template(ChallengeType.NONE, allow_single_des=True)
    key = rsa_key()

    refused = single_des_request(scep(strict), key, transaction_id="des-1")
    client = scep(legacy)
    accepted = single_des_request(client, key, transaction_id="des-2")

    assert failure(refused) == (PKIStatus.FAILURE, FailInfo.BAD_ALG, "single DES is not accepted")
    assert accepted.status is PKIStatus.SUCCESS
    assert reply_cipher(client.last_reply.body) is ContentCipher.AES_128_CBC
    assert Certificate.objects.get().template == legacy
    assert refusals() == ["SCEP: single DES is not accepted"]
    assert failures_of(strict) == {}


def test_an_md5_signature_is_refused_with_bad_alg(scep, template_none):
    client = scep(template_none)
    key = rsa_key()
    signer = Identity.self_signed(key)
    nonce = bytes(range(16))
    content = envelope.encrypt(
        protocol_client.pkcs_req_payload(make_csr(key)), client.recipient, ContentCipher.AES_128_CBC
    )
    attributes = scep_attributes(message_type=19, transaction_id="md5-1", nonce=nonce)

    reply = client.send(md5_signed_message(content, attributes=attributes, signer=signer))
    result = client.read(reply, signer=signer, transaction_id="md5-1", nonce=nonce)

    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_ALG, "MD5 is not accepted")
    assert reply_digest(reply.body) is DigestAlgorithm.SHA256
    assert nothing_issued()
    assert refusals() == ["SCEP: MD5 is not accepted"]


# --- message checks ---------------------------------------------------------------------


def test_a_bad_signature_is_bad_message_check(scep, template_none):
    client = scep(template_none)
    key = rsa_key()
    signer = Identity.self_signed(key)
    der, nonce = client.message(
        message_type=MessageType.PKCS_REQ,
        payload=protocol_client.pkcs_req_payload(make_csr(key)),
        signer=signer,
        transaction_id="sig-1",
    )
    tampered = der[:-5] + bytes([der[-5] ^ 0x01]) + der[-4:]

    result = client.read(client.send(tampered), signer=signer, transaction_id="sig-1", nonce=nonce)

    assert failure(result) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_MESSAGE_CHECK,
        "the signature does not verify",
    )
    assert nothing_issued()
    assert refusals() == ["SCEP: the signature does not verify"]


def to_another_recipient(client, key, payload):
    stranger = Identity.self_signed(rsa_key()).certificate
    return envelope.encrypt(payload, stranger, ContentCipher.AES_256_CBC)


def with_a_corrupted_ciphertext(client, key, payload):
    content = envelope.encrypt(payload, client.recipient, ContentCipher.AES_128_CBC)
    return content[:-1] + bytes([content[-1] ^ 0xFF])


def holding_no_csr(client, key, payload):
    return envelope.encrypt(
        b"not a certification request", client.recipient, ContentCipher.AES_256_CBC
    )


def with_3des_to_another_recipient(client, key, payload):
    stranger = Identity.self_signed(rsa_key()).certificate
    return envelope.encrypt(payload, stranger, ContentCipher.DES_EDE3_CBC)


def test_every_decryption_failure_reads_the_same(scep, template_none):
    client = scep(template_none)
    key = rsa_key()
    signer = Identity.self_signed(key)
    payload = protocol_client.pkcs_req_payload(make_csr(key))
    answers = set()

    for number, make_envelope in enumerate(
        [
            to_another_recipient,
            with_a_corrupted_ciphertext,
            holding_no_csr,
            with_3des_to_another_recipient,
        ]
    ):
        nonce = bytes([number]) * 16
        attributes = scep_attributes(message_type=19, transaction_id=f"dec-{number}", nonce=nonce)
        der = signed_message(
            make_envelope(client, key, payload), attributes=attributes, signer=signer
        )
        result = client.read(
            client.send(der), signer=signer, transaction_id=f"dec-{number}", nonce=nonce
        )
        answers.add((client.last_reply.status, client.last_reply.content_type, failure(result)))

    assert answers == {
        (
            200,
            "application/x-pki-message",
            (PKIStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK, DECRYPT_FAILED),
        )
    }
    assert nothing_issued()
    assert refusals() == [f"SCEP: {DECRYPT_FAILED}"] * 4


def test_update_req_18_is_bad_request(scep, template_none):
    key = rsa_key()
    client = scep(template_none)

    result = client.exchange(
        message_type=MessageType.UPDATE_REQ,
        payload=protocol_client.pkcs_req_payload(make_csr(key)),
        signer=Identity.self_signed(key),
        transaction_id="update-1",
    )

    assert failure(result) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_REQUEST,
        "message type 18 is not accepted",
    )
    assert nothing_issued()
    assert refusals() == ["SCEP: message type 18 is not accepted"]


@pytest.mark.parametrize(
    "transaction_id",
    [
        core.UTF8String("tx-ünïcode"),
        core.PrintableString("tx_underscore"),
        core.IA5String("tx-ia5"),
    ],
    ids=["utf8string", "underscore", "ia5string"],
)
def test_a_transaction_id_that_is_not_a_printable_string_is_bad_request(
    scep, template_none, transaction_id
):
    client = scep(template_none)
    key = rsa_key()
    signer = Identity.self_signed(key)
    nonce = bytes(range(16))
    content = envelope.encrypt(
        protocol_client.pkcs_req_payload(make_csr(key)), client.recipient, ContentCipher.AES_128_CBC
    )
    attributes = scep_attributes(message_type=19, transaction_id=transaction_id, nonce=nonce)

    reply = client.send(signed_message(content, attributes=attributes, signer=signer))
    result = client.read(reply, signer=signer, transaction_id=None, nonce=nonce)

    assert failure(result) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_REQUEST,
        "the transactionID is not a PrintableString",
    )
    assert nothing_issued()


@pytest.mark.parametrize("offset", [-2, 2], ids=["two-days-ago", "in-two-days"])
def test_a_signing_time_far_from_the_clock_is_bad_time(scep, template_static, offset):
    client = scep(template_static)
    client.ca_certs  # noqa: B018 -- GetCACert at the server's time
    signed_at = (timezone.now() + datetime.timedelta(days=offset)).replace(microsecond=0)
    key = rsa_key()
    with time_machine.travel(signed_at, tick=False):
        signer = Identity.self_signed(key)
        der, nonce = client.message(
            message_type=MessageType.PKCS_REQ,
            payload=protocol_client.pkcs_req_payload(make_csr(key, challenge=STATIC_CHALLENGE)),
            signer=signer,
            transaction_id="time-1",
        )

    result = client.read(client.send(der), signer=signer, transaction_id="time-1", nonce=nonce)

    reason = (
        f"the message's signing time {signed_at:%Y-%m-%d %H:%M:%S} UTC is too far "
        "from the server's clock"
    )
    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_TIME, reason)
    assert nothing_issued()
    assert refusals() == [f"SCEP PKCS_REQ time-1: {reason}"]
    assert failures_of(template_static) == {}


# --- CertPoll, GetCert, GetCRL ------------------------------------------------------


def test_certpoll_of_an_unknown_transaction_is_bad_cert_id(scep, template_none):
    key = rsa_key()

    result = scep(template_none).cert_poll(key, subject=make_csr(key).subject)

    reason = "no request with this transactionID"
    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_CERT_ID, reason)
    assert refusals() == [f"SCEP CERT_POLL {tid(key)}: {reason}"]


def test_getcert_returns_the_certificate(scep, template_none):
    _, enrolled = enroll(scep, template_none)
    (issued,) = enrolled.certificates

    result = scep(template_none).get_cert(issued.serial_number, Identity.self_signed(rsa_key()))

    assert result.status is PKIStatus.SUCCESS
    assert result.certificates == [issued]


def test_getcert_of_an_unknown_serial_or_issuer_is_bad_cert_id(scep, template_none):
    _, enrolled = enroll(scep, template_none)
    client = scep(template_none)
    signer = Identity.self_signed(rsa_key())
    serial = enrolled.certificates[0].serial_number

    unknown_serial = client.get_cert(serial + 1, signer)
    other_issuer = client.get_cert(serial, signer, issuer=force_ca().certificate.subject)

    reason = "no certificate with this issuer and serial number"
    assert failure(unknown_serial) == (PKIStatus.FAILURE, FailInfo.BAD_CERT_ID, reason)
    assert failure(other_issuer) == (PKIStatus.FAILURE, FailInfo.BAD_CERT_ID, reason)


def crl_text(crl_der: bytes) -> str:
    run = openssl("crl", "-inform", "DER", "-noout", "-text", input=crl_der)
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout.decode()


def serial_as_openssl_prints(serial: int) -> str:
    digits = format(serial, "X")
    return digits.rjust(len(digits) + len(digits) % 2, "0")


def test_getcrl_returns_the_published_crl_and_a_revocation_publishes_the_next(
    scep, template_none, ca, django_capture_on_commit_callbacks
):
    revoked = enroll(scep, template_none)[1].certificates[0]
    active = enroll(scep, template_none)[1].certificates[0]
    revoke_certificate(
        certificate=Certificate.objects.get(serial=format(revoked.serial_number, "x")),
        reason="key_compromise",
    )
    client = scep(template_none)
    signer = Identity.self_signed(rsa_key())

    first = client.get_crl(revoked.serial_number, signer)
    second = client.get_crl(active.serial_number, signer)

    assert (first.status, first.certificates) == (PKIStatus.SUCCESS, [])
    crl = x509.load_der_x509_crl(first.crl_der)
    assert crl.is_signature_valid(ca.certificate.public_key())
    assert [entry.serial_number for entry in crl] == [revoked.serial_number]
    text = crl_text(first.crl_der)
    assert f"Serial Number: {serial_as_openssl_prints(revoked.serial_number)}" in text
    assert serial_as_openssl_prints(active.serial_number) not in text
    assert "Key Compromise" in text
    with django_capture_on_commit_callbacks(execute=True):
        revoke_certificate(
            certificate=Certificate.objects.get(serial=format(active.serial_number, "x")),
            reason="superseded",
        )
    third = client.get_crl(active.serial_number, signer)
    numbers = [
        int(re.search(r"X509v3 CRL Number: *\n\s*(\d+)", crl_text(reply.crl_der)).group(1))
        for reply in (first, second, third)
    ]
    assert numbers[1] == numbers[0] and numbers[2] > numbers[1]
    assert {e.serial_number for e in x509.load_der_x509_crl(third.crl_der)} == {
        revoked.serial_number,
        active.serial_number,
    }


def test_getcrl_for_another_issuer_is_bad_cert_id(scep, template_none):
    result = scep(template_none).get_crl(
        1, Identity.self_signed(rsa_key()), issuer=force_ca().certificate.subject
    )

    assert failure(result) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_CERT_ID,
        "this CA did not issue that certificate",
    )


# --- approval -------------------------------------------------------------------------

REQUESTS = "/admin/certificates/certificaterequest/"


@pytest.fixture
def approval_template(make_template):
    return make_template(
        ChallengeType.DYNAMIC, subject="O=Zylker,CN=$DEVICE_SN$", approval_required=True
    )


def test_approval_answers_pending_until_alice_approves_in_the_admin(
    scep, approval_template, challenge_for, device, dana, alice, client
):
    minted = challenge_for(approval_template)
    key = rsa_key()
    csr = make_csr(key, challenge=minted)
    device_client = scep(approval_template)

    pending = device_client.pkcs_req(csr, key)
    polled_early = device_client.cert_poll(key, subject=csr.subject)
    request = CertificateRequest.objects.get()
    client.force_login(alice)
    decided = client.post(
        REQUESTS, {"action": "approve_selected", "_selected_action": [request.pk]}
    )
    polled = device_client.cert_poll(key, subject=csr.subject)

    assert pending.status is PKIStatus.PENDING
    assert polled_early.status is PKIStatus.PENDING
    assert (request.status, request.device, request.user) == ("pending", device, dana)
    assert not is_unused(minted)
    assert decided.status_code == 302
    assert polled.status is PKIStatus.SUCCESS
    (issued,) = polled.certificates
    assert issued.public_key() == key.public_key()
    row = Certificate.objects.get()
    assert (row.certificate, row.device, row.user) == (issued, device, dana)
    request.refresh_from_db()
    assert (request.status, request.certificate, request.decided_by) == ("issued", row, alice)
    (event,) = history_for(row)
    assert (event.action, event.actor) == ("issue", alice)
    waiting = history_for(request).get()
    assert (waiting.action, waiting.message) == ("issue", "SCEP request waits for approval")


def test_a_rejected_request_polls_as_failure(scep, approval_template, challenge_for, alice, client):
    key = rsa_key()
    csr = make_csr(key, challenge=challenge_for(approval_template))
    device_client = scep(approval_template)
    assert device_client.pkcs_req(csr, key).status is PKIStatus.PENDING
    request = CertificateRequest.objects.get()
    client.force_login(alice)

    decided = client.post(REQUESTS, {"action": "reject_selected", "_selected_action": [request.pk]})
    polled = device_client.cert_poll(key, subject=csr.subject)

    assert decided.status_code == 302
    assert failure(polled) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_REQUEST,
        "rejected by an administrator",
    )
    assert not Certificate.objects.exists()
    request.refresh_from_db()
    assert (request.status, request.decided_by) == ("rejected", alice)
    assert history_for(request).get(action="issue_failed").message == "rejected by an administrator"


def test_bob_cannot_approve_a_request(scep, approval_template, challenge_for, bob, client):
    key = rsa_key()
    csr = make_csr(key, challenge=challenge_for(approval_template))
    assert scep(approval_template).pkcs_req(csr, key).status is PKIStatus.PENDING
    request = CertificateRequest.objects.get()
    client.force_login(bob)

    response = client.post(
        REQUESTS, {"action": "approve_selected", "_selected_action": [request.pk]}
    )

    assert (response.status_code, response.context["action_form"]) == (200, None)  # no actions
    request.refresh_from_db()
    assert request.status == "pending"
    assert not Certificate.objects.exists()


def test_a_certpoll_signed_by_another_key_is_bad_message_check(
    scep, approval_template, challenge_for
):
    key = rsa_key()
    csr = make_csr(key, challenge=challenge_for(approval_template))
    device_client = scep(approval_template)
    assert device_client.pkcs_req(csr, key).status is PKIStatus.PENDING

    result = device_client.cert_poll(
        key, subject=csr.subject, signer=Identity.self_signed(rsa_key(), csr.subject)
    )

    assert failure(result) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_MESSAGE_CHECK,
        "the poll is not signed with the key of the request",
    )


# --- RenewalReq -----------------------------------------------------------------------


@pytest.fixture
def current(scep, template_static) -> Identity:
    """A certificate issued over SCEP from the static template, with its key."""
    key, result = enroll(scep, template_static, challenge=STATIC_CHALLENGE)
    return Identity(key, result.certificates[0])


def in_renewal_window(certificate: x509.Certificate) -> datetime.datetime:
    # 365-day validity, renewal 30 days before expiry.
    return certificate.not_valid_after_utc - datetime.timedelta(days=29)


def test_a_renewal_inside_the_window_supersedes_the_current_certificate(
    scep, template_static, current
):
    client = scep(template_static)
    client.ca_certs  # noqa: B018 -- GetCACert before time moves
    old = Certificate.objects.get()

    with time_machine.travel(in_renewal_window(current.certificate), tick=False):
        new_key = rsa_key()
        renewed = client.renewal_req(make_csr(new_key), current)
        again = client.renewal_req(make_csr(rsa_key()), current)

    assert renewed.status is PKIStatus.SUCCESS
    (issued,) = renewed.certificates
    assert issued.public_key() == new_key.public_key()
    new = Certificate.objects.get(fingerprint_sha256=issued.fingerprint(hashes.SHA256()).hex())
    old.refresh_from_db()
    assert old.status == "superseded"
    assert new.replaces == old
    assert (new.status, new.template, new.device, new.user) == (
        "active",
        template_static,
        None,
        None,
    )
    request = CertificateRequest.objects.get(certificate=new)
    assert (request.renewal, request.renewal_of) == (True, old)
    # The superseded certificate cannot renew a second time.
    assert failure(again) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_MESSAGE_CHECK,
        "the signing certificate is superseded",
    )
    assert Certificate.objects.count() == 2


def foreign_signer(current, template, make_template, scep):
    return Identity.self_signed(current.key, current.certificate.subject)


def other_template_signer(current, template, make_template, scep):
    other = make_template(ChallengeType.NONE)
    key, result = enroll(scep, other)
    return Identity(key, result.certificates[0])


def revoked_signer(current, template, make_template, scep):
    revoke_certificate(certificate=Certificate.objects.get(template=template))
    return current


@pytest.mark.parametrize(
    ("make_signer", "reason"),
    [
        (foreign_signer, "the renewal is not signed by a certificate this CA issued"),
        (other_template_signer, "the signing certificate was issued from another template"),
        (revoked_signer, "the signing certificate is revoked"),
    ],
    ids=["foreign", "other-template", "revoked"],
)
def test_a_renewal_signed_by_a_certificate_that_may_not_renew_is_bad_message_check(
    scep, template_static, make_template, current, make_signer, reason
):
    signer = make_signer(current, template_static, make_template, scep)
    client = scep(template_static)
    client.ca_certs  # noqa: B018 -- GetCACert before time moves
    before = Certificate.objects.count()

    with time_machine.travel(in_renewal_window(current.certificate), tick=False):
        key = rsa_key()
        result = client.renewal_req(make_csr(key), signer)

    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK, reason)
    assert Certificate.objects.count() == before
    assert not CertificateRequest.objects.filter(renewal=True).exists()
    assert refusals()[-1] == f"SCEP RENEWAL_REQ {tid(key)}: {reason}"


def test_a_renewal_signed_by_an_expired_certificate_is_bad_message_check(
    scep, template_static, current
):
    client = scep(template_static)
    client.ca_certs  # noqa: B018 -- GetCACert before time moves
    expired_at = current.certificate.not_valid_after_utc + datetime.timedelta(minutes=5)

    with time_machine.travel(expired_at, tick=False):
        result = client.renewal_req(make_csr(rsa_key()), current)

    assert failure(result) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_MESSAGE_CHECK,
        "the signing certificate has expired",
    )
    assert Certificate.objects.get().status == "active"


def test_a_renewal_before_the_window_opens_is_bad_request(scep, template_static, current):
    opens = current.certificate.not_valid_after_utc - datetime.timedelta(days=30)

    result = scep(template_static).renewal_req(make_csr(rsa_key()), current)

    assert failure(result) == (
        PKIStatus.FAILURE,
        FailInfo.BAD_REQUEST,
        f"renewal opens on {opens:%Y-%m-%d %H:%M} UTC",
    )
    assert Certificate.objects.get().status == "active"
    assert CertificateRequest.objects.count() == 1
    assert failures_of(template_static) == {}


# --- exactly once -------------------------------------------------------------------------


def test_the_same_pkcsreq_sent_twice_gets_the_same_certificate_and_one_row(
    scep, template_dynamic, challenge_for
):
    key = rsa_key()
    csr = make_csr(key, challenge=challenge_for(template_dynamic))
    client = scep(template_dynamic)
    signer = Identity.self_signed(key, csr.subject)
    der, nonce = client.message(
        message_type=MessageType.PKCS_REQ,
        payload=protocol_client.pkcs_req_payload(csr),
        signer=signer,
        transaction_id=tid(key),
    )

    first = client.read(client.send(der), signer=signer, transaction_id=tid(key), nonce=nonce)
    again = client.read(client.send(der), signer=signer, transaction_id=tid(key), nonce=nonce)
    resent = client.pkcs_req(csr, key)  # a fresh message: new nonce, same transaction

    assert first.status is PKIStatus.SUCCESS
    assert again.certificates == first.certificates
    assert resent.certificates == first.certificates
    assert Certificate.objects.count() == 1
    assert CertificateRequest.objects.count() == 1
    assert AuditEvent.objects.filter(action="issue").count() == 1


def test_the_same_transaction_id_with_another_key_is_bad_request(scep, template_none):
    key = rsa_key()
    _, first = enroll(scep, template_none, key=key)
    other_key = rsa_key()

    result = scep(template_none).pkcs_req(make_csr(other_key), other_key, transaction_id=tid(key))

    reason = "this transactionID was used with another key"
    assert first.status is PKIStatus.SUCCESS
    assert failure(result) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, reason)
    assert Certificate.objects.count() == 1
    assert CertificateRequest.objects.get().public_key_der == public_key_der(key.public_key())
    assert refusals() == [f"SCEP PKCS_REQ {tid(key)}: {reason}"]
