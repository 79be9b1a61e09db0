"""The SCEP server side: parse_pki_message refusals and captures, CertRep, GetCACaps,
GetCACert and GET decoding. The test PKI helpers here are shared by the other
``test_protocol_*`` modules."""

import base64
import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from apps.scep.protocol import (
    ContentCipher,
    DigestAlgorithm,
    FailInfo,
    IssuerAndSerial,
    IssuerAndSubject,
    MalformedMessage,
    MessageType,
    PKIStatus,
    ProtocolError,
    client,
    constants,
    envelope,
    server,
)
from apps.scep.protocol import cms as scep_cms
from apps.scep.protocol.der import der_set_of
from tests.openssl import openssl

TESTDATA = Path(__file__).parent / "testdata"
CHALLENGE_OID = x509.ObjectIdentifier("1.2.840.113549.1.9.7")
DECRYPT_ERROR = (FailInfo.BAD_MESSAGE_CHECK, "the message could not be decrypted")


# --- a small test PKI, shared by the protocol tests ---------------------------------


def name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Zylker"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issue(subject, public_key, issuer, issuer_key, *, ca=False, days=30, serial=None):
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass
class Pki:
    """A CA, its RA (RSA unless said otherwise) and two device keys."""

    ca_key: rsa.RSAPrivateKey
    ca: x509.Certificate
    ra_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    ra: x509.Certificate
    device_key: rsa.RSAPrivateKey
    other_key: rsa.RSAPrivateKey

    def issue(self, csr: x509.CertificateSigningRequest, **kwargs) -> x509.Certificate:
        return issue(csr.subject, csr.public_key(), self.ca.subject, self.ca_key, **kwargs)

    def parse(self, der: bytes, **kwargs) -> server.PKIRequest:
        return server.parse_pki_message(der, ra_certificate=self.ra, ra_key=self.ra_key, **kwargs)

    def cert_rep(self, request_info, status: PKIStatus, **kwargs) -> bytes:
        return server.build_cert_rep(
            request_info=request_info,
            status=status,
            ra_certificate=self.ra,
            ra_key=self.ra_key,
            **kwargs,
        )


def make_pki(ra_key=None) -> Pki:
    ca_key = rsa_key()
    ca = issue(name("Zylker CA"), ca_key.public_key(), name("Zylker CA"), ca_key, ca=True)
    ra_key = ra_key or rsa_key()
    ra = issue(name("Zylker RA"), ra_key.public_key(), ca.subject, ca_key)
    return Pki(ca_key, ca, ra_key, ra, rsa_key(), rsa_key())


@pytest.fixture(scope="session")
def pki() -> Pki:
    return make_pki()


def make_csr(key, common_name="device-1", challenge: str | None = "s3cret-challenge"):
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(common_name))
    if challenge is not None:
        builder = builder.add_attribute(CHALLENGE_OID, challenge.encode())
    return builder.sign(key, hashes.SHA256())


def pki_message(
    pki: Pki,
    *,
    message_type=MessageType.PKCS_REQ,
    payload: bytes | None = None,
    transaction_id="tx-0001",
    signer_key=None,
    signer_certificate=None,
    **kwargs,
) -> tuple[bytes, bytes]:
    """A client pkiMessage to ``pki``'s RA; a PKCSReq for the device key by default."""
    signer_key = signer_key or pki.device_key
    if payload is None:
        payload = client.pkcs_req_payload(make_csr(signer_key))
    return client.build_pki_message(
        message_type=message_type,
        payload=payload,
        transaction_id=transaction_id,
        signer_certificate=signer_certificate
        or client.self_signed_signer(signer_key, name("signer")),
        signer_key=signer_key,
        recipient_certificate=pki.ra,
        **kwargs,
    )


def signed_with(pki: Pki, *, content: bytes, attributes: list[bytes]) -> bytes:
    """A SignedData by the device key over ``content`` with these SCEP attributes."""
    return scep_cms.sign_message(
        content=content,
        attributes=attributes,
        certificate=client.self_signed_signer(pki.device_key, name("signer")),
        key=pki.device_key,
        digest=DigestAlgorithm.SHA256,
    )


def scep_attributes(*, message_type="19", transaction_id=None, nonce=None) -> list[bytes]:
    encode = scep_cms.encode_attribute
    return [
        encode(constants.OID_MESSAGE_TYPE, core.PrintableString(message_type)),
        encode(constants.OID_TRANSACTION_ID, transaction_id or core.PrintableString("tx-0001")),
        encode(constants.OID_SENDER_NONCE, core.OctetString(nonce or os.urandom(16))),
    ]


def refusal(pki: Pki, der: bytes, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        pki.parse(der, **kwargs)
    assert not isinstance(caught.value, MalformedMessage)
    return caught.value


# --- hand-built envelopes with ciphers mdmcerts never produces ----------------------


def des_envelope(plaintext: bytes, recipient: x509.Certificate) -> bytes:
    """Single DES-CBC, as micromdm's scepclient sends (3DES with K1=K2=K3 is DES)."""
    key, iv = os.urandom(8), os.urandom(8)
    padder = sym_padding.PKCS7(64).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(TripleDES(key * 3), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    algorithm = {"algorithm": "1.3.14.3.2.7", "parameters": core.OctetString(iv)}
    return hand_envelope(recipient, key, algorithm, ciphertext)


def rc2_envelope(recipient: x509.Certificate) -> bytes:
    """An RC2-CBC envelope (RC2 is not even in cryptography: the ciphertext is noise)."""
    parameters = algos.Rc2Params({"rc2_parameter_version": 58, "iv": os.urandom(8)})
    algorithm = {"algorithm": "1.2.840.113549.3.2", "parameters": parameters}
    return hand_envelope(recipient, os.urandom(16), algorithm, os.urandom(64))


def hand_envelope(recipient, content_key: bytes, algorithm: dict, ciphertext: bytes) -> bytes:
    asn1_recipient = asn1_x509.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))
    recipient_info = cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": cms.RecipientIdentifier(
                {
                    "issuer_and_serial_number": {
                        "issuer": asn1_recipient.issuer,
                        "serial_number": asn1_recipient.serial_number,
                    }
                }
            ),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": recipient.public_key().encrypt(content_key, padding.PKCS1v15()),
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [cms.RecipientInfo({"ktri": recipient_info})],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": algorithm,
                "encrypted_content": ciphertext,
            },
        }
    )
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def md5_signed(pki: Pki, content: bytes) -> bytes:
    """A pkiMessage really signed with MD5 (cms.sign_message refuses to)."""
    certificate = client.self_signed_signer(pki.device_key, name("signer"))
    md5 = hashlib.md5(content).digest()  # noqa: S324 -- the point of the test
    encode = scep_cms.encode_attribute
    signed_attrs = der_set_of(
        [
            *scep_attributes(),
            encode(constants.OID_CONTENT_TYPE, core.ObjectIdentifier(constants.OID_DATA)),
            encode(constants.OID_MESSAGE_DIGEST, core.OctetString(md5)),
        ]
    )
    asn1_cert = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    sid = {"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}
    signature = pki.device_key.sign(signed_attrs, padding.PKCS1v15(), hashes.MD5())  # noqa: S303
    signer_info = {
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": sid}),
        "digest_algorithm": {"algorithm": "md5"},
        "signed_attrs": cms.CMSAttributes.load(signed_attrs),
        "signature_algorithm": {"algorithm": "md5_rsa"},
        "signature": signature,
    }
    signed_data = {
        "version": "v1",
        "digest_algorithms": [{"algorithm": "md5"}],
        "encap_content_info": {"content_type": "data", "content": content},
        "certificates": [asn1_cert],
        "signer_infos": [signer_info],
    }
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


# --- parsing what a client sends ----------------------------------------------------


@pytest.mark.parametrize("cipher", [c for c in ContentCipher if c is not ContentCipher.DES_CBC])
@pytest.mark.parametrize("digest", [DigestAlgorithm.SHA256, DigestAlgorithm.SHA512])
def test_it_parses_a_pkcsreq_with_its_challenge(pki, cipher, digest):
    csr = make_csr(pki.device_key, "device-7", "s3cret-challenge")
    signer = client.self_signed_signer(pki.device_key, name("transient"))
    der, nonce = pki_message(
        pki,
        payload=client.pkcs_req_payload(csr),
        transaction_id="ABC-123/xyz+=",
        signer_certificate=signer,
        content_cipher=cipher,
        digest_algorithm=digest,
    )

    request = pki.parse(der)

    assert request.message_type is MessageType.PKCS_REQ
    assert request.transaction_id == "ABC-123/xyz+="
    assert request.sender_nonce == nonce
    assert len(nonce) == 16
    assert request.signer_certificate == signer
    assert request.digest_algorithm is digest
    assert request.content_cipher is cipher
    assert request.csr.public_bytes(serialization.Encoding.DER) == csr.public_bytes(
        serialization.Encoding.DER
    )
    assert request.challenge_password == "s3cret-challenge"
    assert request.issuer_and_subject is None
    assert request.issuer_and_serial is None
    now = datetime.datetime.now(datetime.UTC)
    assert abs(request.signing_time - now) < datetime.timedelta(minutes=1)
    assert set(request.raw_signed_attributes) >= {constants.OID_TRANSACTION_ID}


def test_it_parses_a_pkcsreq_without_challenge(pki):
    der, _ = pki_message(
        pki, payload=client.pkcs_req_payload(make_csr(pki.device_key, challenge=None))
    )

    assert pki.parse(der).challenge_password is None


def test_it_reads_a_utf8_challenge(pki):
    der, _ = pki_message(
        pki, payload=client.pkcs_req_payload(make_csr(pki.device_key, challenge="päss wörd"))
    )

    assert pki.parse(der).challenge_password == "päss wörd"


def test_it_does_not_show_the_challenge_in_a_repr(pki):
    der, _ = pki_message(pki)

    assert "s3cret-challenge" not in repr(pki.parse(der))


def test_it_parses_a_renewalreq_signed_by_the_current_certificate(pki):
    csr = make_csr(pki.device_key, challenge=None)
    current = pki.issue(csr)
    der, _ = pki_message(
        pki,
        message_type=MessageType.RENEWAL_REQ,
        payload=client.pkcs_req_payload(make_csr(pki.other_key, challenge=None)),
        signer_certificate=current,
    )

    request = pki.parse(der)

    assert request.message_type is MessageType.RENEWAL_REQ
    assert request.signer_certificate == current
    assert request.csr.public_key() == pki.other_key.public_key()


def test_it_parses_a_certpoll(pki):
    payload = client.cert_poll_payload(pki.ca.subject, name("device-1"))
    der, _ = pki_message(pki, message_type=MessageType.CERT_POLL, payload=payload)

    request = pki.parse(der)

    assert request.message_type is MessageType.CERT_POLL
    assert request.issuer_and_subject == IssuerAndSubject(pki.ca.subject, name("device-1"))
    assert request.csr is None


@pytest.mark.parametrize("message_type", [MessageType.GET_CERT, MessageType.GET_CRL])
def test_it_parses_getcert_and_getcrl(pki, message_type):
    payload = client.issuer_and_serial_payload(pki.ca.subject, 0x1234_5678_9ABC_DEF0_1122)
    der, _ = pki_message(pki, message_type=message_type, payload=payload)

    request = pki.parse(der)

    assert request.message_type is message_type
    assert request.issuer_and_serial == IssuerAndSerial(pki.ca.subject, 0x1234_5678_9ABC_DEF0_1122)


def test_it_accepts_sha1_as_the_client_digest(pki):
    der, _ = pki_message(pki, digest_algorithm=DigestAlgorithm.SHA1)

    assert pki.parse(der).digest_algorithm is DigestAlgorithm.SHA1


# --- refusals ------------------------------------------------------------------------


def test_it_refuses_a_flipped_signature_byte(pki):
    der, nonce = pki_message(pki, transaction_id="tx-flip")
    tampered = bytearray(der)
    tampered[-5] ^= 0x01

    error = refusal(pki, bytes(tampered))

    assert (error.fail_info, error.reason) == (
        FailInfo.BAD_MESSAGE_CHECK,
        "the signature does not verify",
    )
    assert (error.transaction_id, error.sender_nonce) == ("tx-flip", nonce)


def test_it_refuses_a_message_signed_by_another_key_than_its_certificate(pki):
    certificate = client.self_signed_signer(pki.device_key, name("signer"))
    der, _ = pki_message(pki, signer_key=pki.other_key, signer_certificate=certificate)

    error = refusal(pki, der)

    assert error.fail_info is FailInfo.BAD_MESSAGE_CHECK
    assert error.reason == "the signature does not verify"


def test_it_refuses_content_that_does_not_match_its_digest(pki):
    envelope_der = envelope.encrypt(b"payload", pki.ra, ContentCipher.AES_128_CBC)
    der = signed_with(pki, content=envelope_der, attributes=scep_attributes())
    tampered = der.replace(envelope_der[-20:], bytes(20))

    error = refusal(pki, tampered)

    assert (error.fail_info, error.reason) == (
        FailInfo.BAD_MESSAGE_CHECK,
        "the message digest does not match",
    )


@pytest.mark.parametrize("message_type", [MessageType.UPDATE_REQ, 99, MessageType.CERT_REP])
def test_it_refuses_message_types_it_does_not_serve(pki, message_type):
    der, _ = pki_message(pki, message_type=message_type)

    error = refusal(pki, der)

    assert (error.fail_info, error.reason) == (
        FailInfo.BAD_REQUEST,
        f"message type {int(message_type)} is not accepted",
    )
    assert error.transaction_id == "tx-0001"


@pytest.mark.parametrize(
    "transaction_id",
    [core.UTF8String("tx-0001"), core.IA5String("tx-0001"), core.PrintableString("tx_0001@x")],
)
def test_it_refuses_a_transaction_id_that_is_not_a_printable_string(pki, transaction_id):
    content = envelope.encrypt(
        client.pkcs_req_payload(make_csr(pki.device_key)), pki.ra, ContentCipher.AES_128_CBC
    )
    nonce = os.urandom(16)
    der = signed_with(
        pki, content=content, attributes=scep_attributes(transaction_id=transaction_id, nonce=nonce)
    )

    error = refusal(pki, der)

    assert (error.fail_info, error.reason) == (
        FailInfo.BAD_REQUEST,
        "the transactionID is not a PrintableString",
    )
    assert error.transaction_id is None
    assert error.sender_nonce == nonce


@pytest.mark.parametrize("length", [0, 15, 17])
def test_it_refuses_a_sender_nonce_that_is_not_16_bytes(pki, length):
    der, _ = pki_message(pki, sender_nonce=os.urandom(length))

    error = refusal(pki, der)

    assert (error.fail_info, error.reason) == (
        FailInfo.BAD_REQUEST,
        "the senderNonce is not 16 octets",
    )
    assert error.transaction_id == "tx-0001"
    assert error.sender_nonce is None


def test_it_refuses_a_message_without_transaction_id(pki):
    encode = scep_cms.encode_attribute
    content = envelope.encrypt(b"x", pki.ra, ContentCipher.AES_128_CBC)
    attributes = [
        encode(constants.OID_MESSAGE_TYPE, core.PrintableString("19")),
        encode(constants.OID_SENDER_NONCE, core.OctetString(os.urandom(16))),
    ]

    error = refusal(pki, signed_with(pki, content=content, attributes=attributes))

    assert (error.fail_info, error.reason) == (FailInfo.BAD_REQUEST, "the transactionID is missing")


def test_it_refuses_a_single_des_envelope_but_carries_what_it_parsed(pki):
    nonce = os.urandom(16)
    content = des_envelope(client.pkcs_req_payload(make_csr(pki.device_key)), pki.ra)
    der = signed_with(pki, content=content, attributes=scep_attributes(nonce=nonce))

    error = refusal(pki, der)

    assert (error.fail_info, error.reason) == (FailInfo.BAD_ALG, "single DES is not accepted")
    assert (error.transaction_id, error.sender_nonce) == ("tx-0001", nonce)
    assert error.message_type is MessageType.PKCS_REQ
    assert error.digest_algorithm is DigestAlgorithm.SHA256
    assert error.signer_certificate.public_key() == pki.device_key.public_key()


def test_it_reads_a_single_des_envelope_only_when_allowed(pki):
    csr = make_csr(pki.device_key)
    content = des_envelope(client.pkcs_req_payload(csr), pki.ra)
    der = signed_with(pki, content=content, attributes=scep_attributes())

    request = pki.parse(der, allow_single_des=True)

    assert request.content_cipher is ContentCipher.DES_CBC
    assert request.csr.subject == csr.subject


def test_it_refuses_an_rc2_envelope(pki):
    der = signed_with(pki, content=rc2_envelope(pki.ra), attributes=scep_attributes())

    error = refusal(pki, der, allow_single_des=True)

    assert (error.fail_info, error.reason) == (
        FailInfo.BAD_ALG,
        "the content cipher is not accepted",
    )


def test_it_refuses_an_md5_digest(pki):
    content = envelope.encrypt(
        client.pkcs_req_payload(make_csr(pki.device_key)), pki.ra, ContentCipher.AES_128_CBC
    )

    error = refusal(pki, md5_signed(pki, content))

    assert (error.fail_info, error.reason) == (FailInfo.BAD_ALG, "MD5 is not accepted")
    assert error.transaction_id == "tx-0001"


def test_it_refuses_an_ec_signer_that_could_not_receive_the_answer(pki):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    der, _ = pki_message(pki, signer_key=ec_key)

    error = refusal(pki, der)

    assert (error.fail_info, error.reason) == (
        FailInfo.BAD_ALG,
        "the signer certificate must have an RSA key",
    )


def test_it_refuses_a_message_without_envelope(pki):
    error = refusal(pki, signed_with(pki, content=None, attributes=scep_attributes()))

    assert (error.fail_info, error.reason) == (
        FailInfo.BAD_REQUEST,
        "the message has no pkcsPKIEnvelope",
    )


@pytest.mark.parametrize("cipher", [c for c in ContentCipher if c is not ContentCipher.DES_CBC])
def test_it_cannot_tell_a_wrong_recipient_from_a_tampered_ciphertext(pki, cipher):
    payload = client.pkcs_req_payload(make_csr(pki.device_key))
    stranger = issue(name("stranger"), pki.other_key.public_key(), pki.ca.subject, pki.ca_key)
    block = 8 if cipher is ContentCipher.DES_EDE3_CBC else 16
    good = envelope.encrypt(payload, pki.ra, cipher)
    # The ciphertext ends the envelope: flip the byte before the last block (breaks the
    # padding), or the first byte of the first block (garbles the CSR's header).
    first_block = len(good) - (len(payload) // block + 1) * block
    padding_broken, header_broken = bytearray(good), bytearray(good)
    padding_broken[-block - 1] ^= 0x01
    header_broken[first_block] ^= 0xFF
    contents = [
        envelope.encrypt(payload, stranger, cipher),
        bytes(padding_broken),
        bytes(header_broken),
    ]

    errors = [
        refusal(pki, signed_with(pki, content=c, attributes=scep_attributes())) for c in contents
    ]
    with pytest.raises(ProtocolError) as wrong_ra_key:
        server.parse_pki_message(
            signed_with(pki, content=good, attributes=scep_attributes()),
            ra_certificate=pki.ra, ra_key=pki.other_key,
        )  # fmt: skip

    for error in [*errors, wrong_ra_key.value]:
        assert (error.fail_info, error.reason) == DECRYPT_ERROR
        assert error.content_cipher is cipher
        assert error.transaction_id == "tx-0001"


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30\x00", bytes(100), b"\x30\x03\x02\x01\x01"],
    ids=["empty", "empty-sequence", "zeros", "integer"],
)
def test_it_raises_malformed_for_what_is_not_a_pki_message(pki, der):
    with pytest.raises(MalformedMessage):
        pki.parse(der)


def test_it_raises_malformed_for_a_certificate(pki):
    with pytest.raises(MalformedMessage):
        pki.parse(pki.ca.public_bytes(serialization.Encoding.DER))


# --- captures from micromdm's scepclient 2.1.0 (see testdata/README.md) ------------


@pytest.fixture(scope="module")
def capture_ra():
    certificate = x509.load_pem_x509_certificate((TESTDATA / "ra.pem").read_bytes())
    key = serialization.load_pem_private_key((TESTDATA / "ra.key").read_bytes(), None)
    return certificate, key


def scepclient_transaction_id(key_file: str) -> str:
    """scepclient's transactionID, computed independently: base64 of the first 20 bytes
    of SHA-256 over the PKCS#1 public key."""
    key = serialization.load_pem_private_key((TESTDATA / key_file).read_bytes(), None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    return base64.b64encode(hashlib.sha256(public).digest()[:20]).decode()


def parse_capture(der: bytes, capture_ra, **kwargs) -> server.PKIRequest:
    certificate, key = capture_ra
    return server.parse_pki_message(der, ra_certificate=certificate, ra_key=key, **kwargs)


CAPTURED_SUBJECT = "CN=capture-device-1,OU=capture,O=mdmcerts,C=US"


def test_scepclient_pkcsreq_by_post_is_refused_for_single_des(capture_ra):
    der = (TESTDATA / "scepclient_pkcsreq_post.der").read_bytes()

    with pytest.raises(ProtocolError) as caught:
        parse_capture(der, capture_ra)

    assert caught.value.fail_info is FailInfo.BAD_ALG
    assert caught.value.transaction_id == "qWt+NBedEzq7JKTUeHwaxjAT+4I="


def test_scepclient_pkcsreq_by_post_parses_when_single_des_is_allowed(capture_ra):
    der = (TESTDATA / "scepclient_pkcsreq_post.der").read_bytes()

    request = parse_capture(der, capture_ra, allow_single_des=True)

    assert request.message_type is MessageType.PKCS_REQ
    assert request.transaction_id == "qWt+NBedEzq7JKTUeHwaxjAT+4I="
    assert request.transaction_id == scepclient_transaction_id("scepclient_client.key")
    assert len(request.sender_nonce) == 16
    assert request.digest_algorithm is DigestAlgorithm.SHA1
    assert request.content_cipher is ContentCipher.DES_CBC
    assert request.csr.subject.rfc4514_string() == CAPTURED_SUBJECT
    assert request.challenge_password == "capture-challenge-1"
    assert request.signer_certificate.subject.rfc4514_string() == "CN=SCEP SIGNER,O=mdmcerts"


def test_scepclient_renewalreq_is_signed_by_its_current_certificate(capture_ra):
    der = (TESTDATA / "scepclient_renewalreq_post.der").read_bytes()
    ca = x509.load_pem_x509_certificate((TESTDATA / "ca.pem").read_bytes())

    request = parse_capture(der, capture_ra, allow_single_des=True)

    assert request.message_type is MessageType.RENEWAL_REQ
    assert request.transaction_id == "qWt+NBedEzq7JKTUeHwaxjAT+4I="
    assert len(request.sender_nonce) == 16
    assert request.csr.subject.rfc4514_string() == CAPTURED_SUBJECT
    # scepclient re-sends the CSR it saved at enrollment, old challenge included.
    assert request.challenge_password == "capture-challenge-1"
    assert request.signer_certificate.issuer == ca.subject
    assert (
        request.signer_certificate.subject.rfc4514_string()
        == "CN=capture-device-1,OU=capture,O=mdmcerts,C=US"
    )


def test_scepclient_pkcsreq_by_get_decodes_and_parses(capture_ra):
    raw = (TESTDATA / "scepclient_pkcsreq_get.txt").read_text().strip()
    assert "%3D" in raw and ("-" in raw or "_" in raw)

    request = parse_capture(server.decode_get_message(raw), capture_ra, allow_single_des=True)

    assert request.message_type is MessageType.PKCS_REQ
    assert request.transaction_id == "5gQ01Ci77tP+BM0XCF4Ts+G3meI="
    assert request.transaction_id == scepclient_transaction_id("scepclient_get_client.key")
    assert len(request.sender_nonce) == 16
    assert request.csr.subject.rfc4514_string() == CAPTURED_SUBJECT
    assert request.challenge_password == "capture-challenge-1"


# --- CertRep, checked by openssl as an independent verifier -------------------------


def openssl_verify_cms(der: bytes, tmp_path: Path, content: bytes | None = None) -> bytes:
    (tmp_path / "rep.der").write_bytes(der)
    args = [
        "cms",
        "-verify",
        "-noverify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        str(tmp_path / "rep.der"),
    ]
    if content is not None:
        (tmp_path / "content").write_bytes(content)
        args += ["-content", str(tmp_path / "content")]
    args += ["-out", str(tmp_path / "out.der")]
    result = openssl(*args)
    assert result.returncode == 0, result.stderr.decode()
    return (tmp_path / "out.der").read_bytes()


def openssl_decrypt(envelope_der: bytes, certificate, key, tmp_path: Path) -> bytes:
    (tmp_path / "env.der").write_bytes(envelope_der)
    (tmp_path / "recip.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "recip.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(tmp_path / "env.der"),
        "-recip", str(tmp_path / "recip.pem"), "-inkey", str(tmp_path / "recip.key"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.mark.parametrize("cipher", [c for c in ContentCipher if c is not ContentCipher.DES_CBC])
def test_a_success_cert_rep_verifies_and_decrypts_with_openssl(pki, cipher, tmp_path):
    signer = client.self_signed_signer(pki.device_key, name("transient"))
    der, _ = pki_message(pki, signer_certificate=signer, content_cipher=cipher)
    request = pki.parse(der)
    issued = pki.issue(request.csr)

    reply = pki.cert_rep(request, PKIStatus.SUCCESS, certificates=[issued])

    envelope_der = openssl_verify_cms(reply, tmp_path)
    inner = openssl_decrypt(envelope_der, signer, pki.device_key, tmp_path)
    assert pkcs7.load_der_pkcs7_certificates(inner) == [issued]
    printed = openssl(
        "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "env.der")
    )
    expected_cipher = {
        "AES_128_CBC": "aes-128-cbc",
        "AES_256_CBC": "aes-256-cbc",
        "DES_EDE3_CBC": "des-ede3-cbc",
    }
    assert expected_cipher[cipher.name] in printed.stdout.decode()


def test_a_failure_cert_rep_has_no_content_and_verifies_with_openssl(pki, tmp_path):
    der, _ = pki_message(pki, digest_algorithm=DigestAlgorithm.SHA512)
    request = pki.parse(der)

    reply = pki.cert_rep(
        request, PKIStatus.FAILURE, fail_info=FailInfo.BAD_REQUEST, fail_info_text="wrong challenge"
    )

    assert scep_cms.load_signed_message(reply).content is None
    openssl_verify_cms(reply, tmp_path, content=b"")
    printed = openssl(
        "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "rep.der")
    ).stdout.decode()
    assert "sha512" in printed
    assert "UTF8STRING:wrong challenge" in printed
    assert "PRINTABLESTRING:3" in printed  # messageType CertRep


def test_a_cert_rep_echoes_a_protocol_error(pki):
    der, nonce = pki_message(pki, message_type=MessageType.UPDATE_REQ, transaction_id="tx-echo")
    error = refusal(pki, der)

    reply = pki.cert_rep(
        error, PKIStatus.FAILURE, fail_info=error.fail_info, fail_info_text=error.reason
    )

    result = client.parse_cert_rep(
        reply, recipient_key=pki.device_key, recipient_certificate=error.signer_certificate
    )
    assert (result.status, result.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert (result.transaction_id, result.recipient_nonce) == ("tx-echo", nonce)
    assert result.fail_info_text == "message type 18 is not accepted"
    assert len(result.sender_nonce) == 16 and result.sender_nonce != nonce


def test_a_cert_rep_can_be_signed_by_an_ec_ra_key(pki, tmp_path):
    ec_pki = make_pki(ra_key=ec.generate_private_key(ec.SECP256R1()))
    signer = client.self_signed_signer(pki.device_key, name("transient"))
    request = pki.parse(pki_message(pki, signer_certificate=signer)[0])
    issued = pki.issue(request.csr)

    reply = ec_pki.cert_rep(request, PKIStatus.SUCCESS, certificates=[issued])

    envelope_der = openssl_verify_cms(reply, tmp_path)
    assert pkcs7.load_der_pkcs7_certificates(
        openssl_decrypt(envelope_der, signer, pki.device_key, tmp_path)
    ) == [issued]
    result = client.parse_cert_rep(
        reply,
        recipient_key=pki.device_key,
        recipient_certificate=signer,
        ra_certificates=[ec_pki.ra],
    )
    assert result.certificates == [issued]


def test_an_ec_ra_key_cannot_decrypt_requests(pki):
    ec_pki = make_pki(ra_key=ec.generate_private_key(ec.SECP256R1()))
    der, _ = pki_message(pki)  # encrypted to the RSA RA: an EC RA has no key transport

    with pytest.raises(ProtocolError) as caught:
        server.parse_pki_message(der, ra_certificate=ec_pki.ra, ra_key=ec_pki.ra_key)

    assert (caught.value.fail_info, caught.value.reason) == DECRYPT_ERROR


def test_a_cert_rep_includes_the_ra_certificate(pki):
    der, _ = pki_message(pki)

    reply = pki.cert_rep(pki.parse(der), PKIStatus.PENDING)

    certificates = scep_cms.load_signed_message(reply).certificates
    assert [scep_cms.to_cryptography(c) for c in certificates] == [pki.ra]


def test_a_cert_rep_answers_a_sha1_request_with_sha256(pki):
    der, _ = pki_message(pki, digest_algorithm=DigestAlgorithm.SHA1)

    reply = pki.cert_rep(pki.parse(der), PKIStatus.PENDING)

    assert scep_cms.signer_digest(scep_cms.load_signed_message(reply)) is DigestAlgorithm.SHA256


def test_a_cert_rep_answers_a_single_des_request_with_aes_128(pki):
    content = des_envelope(client.pkcs_req_payload(make_csr(pki.device_key)), pki.ra)
    request = pki.parse(
        signed_with(pki, content=content, attributes=scep_attributes()), allow_single_des=True
    )

    reply = pki.cert_rep(request, PKIStatus.SUCCESS, certificates=[pki.issue(request.csr)])

    enveloped = envelope.load_envelope(scep_cms.load_signed_message(reply).content)
    assert envelope.content_cipher(enveloped, allow_single_des=False) is ContentCipher.AES_128_CBC


@pytest.mark.parametrize(
    ("status", "kwargs"),
    [
        (PKIStatus.FAILURE, {}),
        (PKIStatus.PENDING, {"fail_info": FailInfo.BAD_REQUEST}),
        (PKIStatus.SUCCESS, {}),
        (PKIStatus.PENDING, {"crl_der": b"x"}),
    ],
)
def test_build_cert_rep_refuses_inconsistent_input(pki, status, kwargs):
    der, _ = pki_message(pki)
    with pytest.raises(ValueError):
        pki.cert_rep(pki.parse(der), status, **kwargs)


# --- GetCACaps, GetCACert, GET decoding ----------------------------------------------


@pytest.mark.parametrize(
    ("renewal", "next_ca_cert", "expected"),
    [
        (False, False, "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\n"),
        (True, False, "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\nRenewal\n"),
        (False, True, "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\nGetNextCACert\n"),
        (
            True,
            True,
            "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nSCEPStandard\nRenewal\nGetNextCACert\n",
        ),
    ],
)
def test_get_ca_caps_advertises_only_what_is_true(renewal, next_ca_cert, expected):
    assert server.get_ca_caps(renewal=renewal, next_ca_cert=next_ca_cert) == expected


def test_ca_certs_response_holds_the_ra_then_the_chain(pki, tmp_path):
    der = server.ca_certs_response(pki.ra, [pki.ca])

    assert pkcs7.load_der_pkcs7_certificates(der) == [pki.ra, pki.ca]
    (tmp_path / "certs.p7b").write_bytes(der)
    printed = openssl("pkcs7", "-inform", "DER", "-in", str(tmp_path / "certs.p7b"), "-print_certs")
    assert printed.returncode == 0
    assert printed.stdout.decode().count("BEGIN CERTIFICATE") == 2


@pytest.fixture(scope="module")
def sample_message() -> bytes:
    # Bytes whose standard base64 has both "+" and "/".
    return bytes(range(256)) * 3


def test_decode_get_message_reads_every_encoding_clients_use(sample_message):
    standard = base64.b64encode(sample_message).decode()
    assert "+" in standard and "/" in standard
    encodings = [
        standard,
        standard.rstrip("="),
        standard.replace("+", " "),  # form decoding turned the unescaped "+" into spaces
        standard.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"),
        base64.urlsafe_b64encode(sample_message).decode().replace("=", "%3D"),
        "\n".join(standard[i : i + 64] for i in range(0, len(standard), 64)),
    ]

    for value in encodings:
        assert server.decode_get_message(value) == sample_message


@pytest.mark.parametrize("value", ["", "====", "abc*def", "A", "%ZZ", "YWJj\x00"])
def test_decode_get_message_refuses_what_is_not_base64(value):
    with pytest.raises(MalformedMessage):
        server.decode_get_message(value)


def test_decode_get_message_refuses_an_oversized_message():
    with pytest.raises(MalformedMessage):
        server.decode_get_message("A" * (100 * 1024))
