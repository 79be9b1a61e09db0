"""The SCEP client side, and round trips client -> server -> client."""

import datetime
import hashlib
import itertools
from pathlib import Path

import pytest
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from apps.scep.protocol import (
    ContentCipher,
    DigestAlgorithm,
    FailInfo,
    MalformedMessage,
    MessageType,
    PKIStatus,
    ProtocolError,
    client,
    server,
)
from tests.openssl import openssl
from tests.scep.test_protocol_server import Pki, issue, make_csr, make_pki, name

CIPHERS = [ContentCipher.AES_128_CBC, ContentCipher.AES_256_CBC, ContentCipher.DES_EDE3_CBC]
DIGESTS = [DigestAlgorithm.SHA256, DigestAlgorithm.SHA512]
SERIAL = 0x0ABC_DEF0_1234_5678


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def crl_der(pki) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    revoked = x509.RevokedCertificateBuilder().serial_number(SERIAL).revocation_date(now).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.ca.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(pki.ca_key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def payload_for(pki: Pki, message_type: MessageType) -> bytes:
    if message_type in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        return client.pkcs_req_payload(make_csr(pki.device_key))
    if message_type is MessageType.CERT_POLL:
        return client.cert_poll_payload(pki.ca.subject, name("device-1"))
    return client.issuer_and_serial_payload(pki.ca.subject, SERIAL)


ROUND_TRIPS = list(
    itertools.product(
        [
            MessageType.PKCS_REQ,
            MessageType.RENEWAL_REQ,
            MessageType.CERT_POLL,
            MessageType.GET_CERT,
            MessageType.GET_CRL,
        ],
        CIPHERS,
        DIGESTS,
    )
)


@pytest.mark.parametrize(("message_type", "cipher", "digest"), ROUND_TRIPS)
def test_a_round_trip_returns_what_the_server_answered(pki, crl_der, message_type, cipher, digest):
    signer = client.self_signed_signer(pki.device_key, name("transient"))
    transaction_id = client.transaction_id_for(pki.device_key.public_key())
    der, nonce = client.build_pki_message(
        message_type=message_type,
        payload=payload_for(pki, message_type),
        transaction_id=transaction_id,
        signer_certificate=signer,
        signer_key=pki.device_key,
        recipient_certificate=pki.ra,
        content_cipher=cipher,
        digest_algorithm=digest,
    )
    request = pki.parse(der)
    issued = issue(name("device-1"), pki.device_key.public_key(), pki.ca.subject, pki.ca_key)
    if message_type is MessageType.GET_CRL:
        answer = {"crl_der": crl_der}
    else:
        answer = {"certificates": [issued, pki.ca]}

    reply = pki.cert_rep(request, PKIStatus.SUCCESS, **answer)
    result = client.parse_cert_rep(
        reply, recipient_key=pki.device_key, recipient_certificate=signer, ra_certificates=[pki.ra]
    )

    assert result.status is PKIStatus.SUCCESS
    assert (result.fail_info, result.fail_info_text) == (None, None)
    assert result.transaction_id == transaction_id
    assert result.recipient_nonce == nonce
    assert len(result.sender_nonce) == 16
    assert result.sender_nonce != nonce
    if message_type is MessageType.GET_CRL:
        assert (result.certificates, result.crl_der) == ([], crl_der)
    else:
        assert (result.certificates, result.crl_der) == ([issued, pki.ca], None)


@pytest.mark.parametrize("fail_info", list(FailInfo))
def test_a_failure_carries_its_fail_info_and_text(pki, fail_info):
    signer = client.self_signed_signer(pki.device_key, name("transient"))
    der, nonce = client.build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=payload_for(pki, MessageType.PKCS_REQ),
        transaction_id="tx-fail",
        signer_certificate=signer,
        signer_key=pki.device_key,
        recipient_certificate=pki.ra,
    )

    reply = pki.cert_rep(
        pki.parse(der), PKIStatus.FAILURE, fail_info=fail_info, fail_info_text="refusé: why"
    )
    result = client.parse_cert_rep(
        reply, recipient_key=pki.device_key, recipient_certificate=signer, ra_certificates=[pki.ra]
    )

    assert (result.status, result.fail_info) == (PKIStatus.FAILURE, fail_info)
    assert result.fail_info_text == "refusé: why"
    assert (result.transaction_id, result.recipient_nonce) == ("tx-fail", nonce)
    assert (result.certificates, result.crl_der) == ([], None)


def test_a_failure_without_text_has_none(pki):
    der, _ = client.build_pki_message(
        message_type=MessageType.GET_CERT,
        payload=payload_for(pki, MessageType.GET_CERT),
        transaction_id="tx-fail",
        signer_certificate=client.self_signed_signer(pki.device_key, name("t")),
        signer_key=pki.device_key,
        recipient_certificate=pki.ra,
    )

    reply = pki.cert_rep(pki.parse(der), PKIStatus.FAILURE, fail_info=FailInfo.BAD_CERT_ID)
    result = client.parse_cert_rep(
        reply, recipient_key=pki.device_key, recipient_certificate=pki.ra
    )

    assert (result.fail_info, result.fail_info_text) == (FailInfo.BAD_CERT_ID, None)


def test_pending_echoes_the_request_and_carries_nothing(pki):
    signer = client.self_signed_signer(pki.device_key, name("transient"))
    der, nonce = client.build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=payload_for(pki, MessageType.PKCS_REQ),
        transaction_id="tx-pending",
        signer_certificate=signer,
        signer_key=pki.device_key,
        recipient_certificate=pki.ra,
    )

    reply = pki.cert_rep(pki.parse(der), PKIStatus.PENDING)
    result = client.parse_cert_rep(
        reply, recipient_key=pki.device_key, recipient_certificate=signer, ra_certificates=[pki.ra]
    )

    assert result.status is PKIStatus.PENDING
    assert (result.transaction_id, result.recipient_nonce) == ("tx-pending", nonce)
    assert (result.fail_info, result.certificates, result.crl_der) == (None, [], None)


def test_it_refuses_a_cert_rep_from_another_ra(pki):
    other = make_pki()
    der, _ = client.build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=payload_for(pki, MessageType.PKCS_REQ),
        transaction_id="tx",
        signer_certificate=client.self_signed_signer(pki.device_key, name("t")),
        signer_key=pki.device_key,
        recipient_certificate=pki.ra,
    )
    reply = other.cert_rep(pki.parse(der), PKIStatus.PENDING)

    with pytest.raises(ProtocolError) as caught:
        client.parse_cert_rep(
            reply, recipient_key=pki.device_key, recipient_certificate=pki.ra,
            ra_certificates=[pki.ra],
        )  # fmt: skip

    assert caught.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_it_refuses_a_tampered_cert_rep(pki):
    der, _ = client.build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=payload_for(pki, MessageType.PKCS_REQ),
        transaction_id="tx",
        signer_certificate=client.self_signed_signer(pki.device_key, name("t")),
        signer_key=pki.device_key,
        recipient_certificate=pki.ra,
    )
    reply = bytearray(pki.cert_rep(pki.parse(der), PKIStatus.PENDING))
    reply[-3] ^= 0x01

    with pytest.raises(ProtocolError) as caught:
        client.parse_cert_rep(
            bytes(reply), recipient_key=pki.device_key, recipient_certificate=pki.ra
        )

    assert caught.value.fail_info is FailInfo.BAD_MESSAGE_CHECK


@pytest.mark.parametrize("der", [b"", b"\x30\x80", bytes(64), b"junk" * 50])
def test_parse_cert_rep_raises_malformed_for_garbage(pki, der):
    with pytest.raises(MalformedMessage):
        client.parse_cert_rep(der, recipient_key=pki.device_key, recipient_certificate=pki.ra)


# --- what the client sends, checked by openssl ---------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_openssl_verifies_and_decrypts_a_client_message(pki, cipher, tmp_path: Path):
    csr = make_csr(pki.device_key)
    der, _ = client.build_pki_message(
        message_type=MessageType.PKCS_REQ,
        payload=client.pkcs_req_payload(csr),
        transaction_id="tx-openssl",
        signer_certificate=client.self_signed_signer(pki.device_key, name("t")),
        signer_key=pki.device_key,
        recipient_certificate=pki.ra,
        content_cipher=cipher,
        digest_algorithm=DigestAlgorithm.SHA512,
    )
    (tmp_path / "msg.der").write_bytes(der)
    (tmp_path / "ra.pem").write_bytes(pki.ra.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ra.key").write_bytes(
        pki.ra_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    verified = openssl(
        "cms", "-verify", "-noverify", "-binary", "-inform", "DER",
        "-in", str(tmp_path / "msg.der"), "-out", str(tmp_path / "env.der"),
    )  # fmt: skip
    decrypted = openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(tmp_path / "env.der"),
        "-recip", str(tmp_path / "ra.pem"), "-inkey", str(tmp_path / "ra.key"),
    )  # fmt: skip

    assert verified.returncode == 0, verified.stderr.decode()
    assert decrypted.returncode == 0, decrypted.stderr.decode()
    assert decrypted.stdout == csr.public_bytes(serialization.Encoding.DER)


# --- helpers ---------------------------------------------------------------------------


def test_build_pki_message_uses_the_given_nonce_or_a_fresh_one(pki):
    kwargs = {
        "message_type": MessageType.GET_CERT,
        "payload": payload_for(pki, MessageType.GET_CERT),
        "transaction_id": "tx",
        "signer_certificate": client.self_signed_signer(pki.device_key, name("t")),
        "signer_key": pki.device_key,
        "recipient_certificate": pki.ra,
    }

    _, given = client.build_pki_message(**kwargs, sender_nonce=b"0123456789abcdef")
    _, first = client.build_pki_message(**kwargs)
    _, second = client.build_pki_message(**kwargs)

    assert given == b"0123456789abcdef"
    assert len(first) == len(second) == 16
    assert first != second


def test_build_pki_message_never_encrypts_with_single_des(pki):
    with pytest.raises(ValueError):
        client.build_pki_message(
            message_type=MessageType.PKCS_REQ,
            payload=b"x",
            transaction_id="tx",
            signer_certificate=client.self_signed_signer(pki.device_key, name("t")),
            signer_key=pki.device_key,
            recipient_certificate=pki.ra,
            content_cipher=ContentCipher.DES_CBC,
        )


class NameSequence(core.SequenceOf):
    _child_spec = asn1_x509.Name


def test_payloads_are_the_asn1_structures_of_rfc_8894(pki):
    subject_payload = client.cert_poll_payload(pki.ca.subject, name("device-1"))
    serial_payload = client.issuer_and_serial_payload(pki.ca.subject, SERIAL)

    issuer, subject = NameSequence.load(subject_payload)
    serial_value = cms.IssuerAndSerialNumber.load(serial_payload)

    assert issuer.dump() == pki.ca.subject.public_bytes()
    assert subject.dump() == name("device-1").public_bytes()
    assert serial_value["issuer"].dump() == pki.ca.subject.public_bytes()
    assert serial_value["serial_number"].native == SERIAL


def test_transaction_id_is_the_hex_sha256_of_the_public_key(pki):
    spki = pki.device_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    transaction_id = client.transaction_id_for(pki.device_key.public_key())

    assert transaction_id == hashlib.sha256(spki).hexdigest()
    assert len(transaction_id) == 64


def test_self_signed_signer_is_a_short_lived_self_signed_certificate(pki):
    certificate = client.self_signed_signer(pki.device_key, name("transient"))

    assert certificate.subject == certificate.issuer == name("transient")
    assert certificate.public_key() == pki.device_key.public_key()
    certificate.verify_directly_issued_by(certificate)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=2)


def test_parse_ca_certs_reads_a_pkcs7_and_a_single_certificate(pki):
    assert client.parse_ca_certs(server.ca_certs_response(pki.ra, [pki.ca])) == [pki.ra, pki.ca]
    assert client.parse_ca_certs(pki.ca.public_bytes(serialization.Encoding.DER)) == [pki.ca]


@pytest.mark.parametrize("der", [b"", b"not a certificate", bytes(32)])
def test_parse_ca_certs_raises_malformed_for_garbage(der):
    with pytest.raises(MalformedMessage):
        client.parse_ca_certs(der)


def test_select_recipient_prefers_the_ra_over_the_ca(pki):
    assert client.select_recipient([pki.ca, pki.ra]) == pki.ra
    assert client.select_recipient([pki.ca]) == pki.ca


@pytest.mark.parametrize("transaction_id", ["", "tx_1", "tx@1", "tx\u00e9"])
def test_build_pki_message_refuses_a_transaction_id_that_is_not_printable(pki, transaction_id):
    with pytest.raises(ValueError):
        client.build_pki_message(
            message_type=MessageType.GET_CERT,
            payload=b"x",
            transaction_id=transaction_id,
            signer_certificate=client.self_signed_signer(pki.device_key, name("t")),
            signer_key=pki.device_key,
            recipient_certificate=pki.ra,
        )
