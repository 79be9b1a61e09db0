"""The server side of SCEP (RFC 8894): parse a pkiMessage, build a CertRep, answer the
GetCACaps/GetCACert operations. Pure: bytes in, dataclasses or bytes out."""

import base64
import binascii
import datetime
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Protocol

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from apps.scep.protocol import cms, envelope
from apps.scep.protocol.constants import (
    DEFAULT_DIGEST,
    MAX_MESSAGE_SIZE,
    MAX_TRANSACTION_ID_LENGTH,
    NONCE_LENGTH,
    OID_DATA,
    OID_FAIL_INFO,
    OID_FAIL_INFO_TEXT,
    OID_MESSAGE_TYPE,
    OID_PKI_STATUS,
    OID_RECIPIENT_NONCE,
    OID_SENDER_NONCE,
    OID_TRANSACTION_ID,
    PRINTABLE_STRING,
    REQUEST_TYPES,
    SIGNING_DIGESTS,
    ContentCipher,
    DigestAlgorithm,
    FailInfo,
    MessageType,
    PKIStatus,
)
from apps.scep.protocol.errors import MalformedMessage, ProtocolError
from apps.scep.protocol.payloads import (
    IssuerAndSerial,
    IssuerAndSubject,
    challenge_password,
    decode_issuer_and_serial,
    decode_issuer_and_subject,
)

PrivateKey = cms.PrivateKey
_BASE64 = re.compile(r"[A-Za-z0-9+/]*")
MAX_FAIL_INFO_TEXT = 1024


@dataclass(frozen=True)
class PKIRequest:
    """A verified, decrypted pkiMessage from a client."""

    message_type: MessageType
    transaction_id: str
    sender_nonce: bytes
    signer_certificate: x509.Certificate
    digest_algorithm: DigestAlgorithm
    content_cipher: ContentCipher
    csr: x509.CertificateSigningRequest | None = None
    issuer_and_subject: IssuerAndSubject | None = None
    issuer_and_serial: IssuerAndSerial | None = None
    challenge_password: str | None = field(default=None, repr=False)
    signing_time: datetime.datetime | None = None
    raw_signed_attributes: dict[str, list[bytes]] = field(default_factory=dict, repr=False)


class RequestInfo(Protocol):
    """What a CertRep echoes: a ``PKIRequest`` or a ``ProtocolError``."""

    transaction_id: str | None
    sender_nonce: bytes | None
    signer_certificate: x509.Certificate | None
    digest_algorithm: DigestAlgorithm | None
    content_cipher: ContentCipher | None


@dataclass
class _Context:
    """What is known so far, echoed by the error if parsing stops."""

    answerable: bool = False
    message_type: int | None = None
    transaction_id: str | None = None
    sender_nonce: bytes | None = None
    signer_certificate: x509.Certificate | None = None
    digest_algorithm: DigestAlgorithm | None = None
    content_cipher: ContentCipher | None = None

    def error(self, fail_info: FailInfo, reason: str) -> ProtocolError:
        return ProtocolError(
            fail_info,
            reason,
            message_type=self.message_type,
            transaction_id=self.transaction_id,
            sender_nonce=self.sender_nonce,
            signer_certificate=self.signer_certificate,
            digest_algorithm=self.digest_algorithm,
            content_cipher=self.content_cipher,
        )


def parse_pki_message(
    der: bytes,
    *,
    ra_certificate: x509.Certificate,
    ra_key: PrivateKey,
    allow_single_des: bool = False,
) -> PKIRequest:
    """Verify, decrypt and parse a client's pkiMessage.

    Raises ``MalformedMessage`` when the bytes are not a SignedData with attributes
    (answer HTTP 400), else ``ProtocolError`` carrying what was parsed (answer a CertRep
    FAILURE). The CSR's own signature is not checked here. ``allow_single_des`` admits
    DES-CBC envelopes (micromdm's scepclient); the reply then uses AES-128-CBC.
    """
    context = _Context()
    try:
        return _parse(der, context, ra_certificate, ra_key, allow_single_des)
    except ProtocolError as exc:
        if not context.answerable:
            raise MalformedMessage(exc.reason) from None
        fail_info = FailInfo.BAD_REQUEST if isinstance(exc, MalformedMessage) else exc.fail_info
        raise context.error(fail_info, exc.reason) from None
    except Exception:  # the boundary: hostile bytes raise nothing else
        if not context.answerable:
            raise MalformedMessage() from None
        raise context.error(FailInfo.BAD_REQUEST, "the message could not be processed") from None


def _parse(
    der: bytes,
    context: _Context,
    ra_certificate: x509.Certificate,
    ra_key: PrivateKey,
    allow_single_des: bool,
) -> PKIRequest:
    message = cms.load_signed_message(der)
    context.answerable = True
    problem = _read_header(message, context)
    _authenticate(message, context)
    if problem is not None:
        raise problem
    if context.message_type not in REQUEST_TYPES:
        raise ProtocolError(
            FailInfo.BAD_REQUEST, f"message type {context.message_type} is not accepted"
        )
    if not isinstance(context.signer_certificate.public_key(), rsa.RSAPublicKey):
        raise ProtocolError(FailInfo.BAD_ALG, "the signer certificate must have an RSA key")
    plaintext = _open_envelope(message, context, ra_certificate, ra_key, allow_single_des)
    return _request(message, context, plaintext)


def _read_header(message: cms.SignedMessage, context: _Context) -> ProtocolError | None:
    """Read transactionID, senderNonce and messageType; the first problem is returned so
    that the signature is still checked (and wins) before it is raised."""
    problems = []
    for reader in (_read_transaction_id, _read_sender_nonce, _read_message_type):
        try:
            reader(message, context)
        except ProtocolError as exc:
            problems.append(exc)
    return problems[0] if problems else None


def _read_transaction_id(message: cms.SignedMessage, context: _Context) -> None:
    raw = message.attribute(OID_TRANSACTION_ID)
    if raw is None:
        raise ProtocolError(FailInfo.BAD_REQUEST, "the transactionID is missing")
    value = core.PrintableString.load(raw).native if raw[0] == 0x13 else None
    if (
        value is None
        or len(value) > MAX_TRANSACTION_ID_LENGTH
        or not PRINTABLE_STRING.fullmatch(value)
    ):
        raise ProtocolError(FailInfo.BAD_REQUEST, "the transactionID is not a PrintableString")
    context.transaction_id = value


def _read_sender_nonce(message: cms.SignedMessage, context: _Context) -> None:
    raw = message.attribute(OID_SENDER_NONCE)
    if raw is None:
        raise ProtocolError(FailInfo.BAD_REQUEST, "the senderNonce is missing")
    value = core.OctetString.load(raw).native if raw[0] == 0x04 else None
    if value is None or len(value) != NONCE_LENGTH:
        raise ProtocolError(FailInfo.BAD_REQUEST, "the senderNonce is not 16 octets")
    context.sender_nonce = value


def _read_message_type(message: cms.SignedMessage, context: _Context) -> None:
    raw = message.attribute(OID_MESSAGE_TYPE)
    value = core.PrintableString.load(raw).native if raw and raw[0] == 0x13 else ""
    if not (value.isascii() and value.isdigit() and len(value) <= 3):
        raise ProtocolError(FailInfo.BAD_REQUEST, "the messageType is missing or invalid")
    number = int(value)
    known = {int(member) for member in MessageType}
    context.message_type = MessageType(number) if number in known else number


def _authenticate(message: cms.SignedMessage, context: _Context) -> None:
    signer = cms.find_signer(message, message.certificates)
    if signer is None:
        raise ProtocolError(
            FailInfo.BAD_MESSAGE_CHECK, "the signer's certificate is not in the message"
        )
    context.signer_certificate = cms.to_cryptography(signer)
    context.digest_algorithm = cms.signer_digest(message)
    cms.verify_signed_message(message, context.signer_certificate, context.digest_algorithm)


def _open_envelope(
    message: cms.SignedMessage,
    context: _Context,
    ra_certificate: x509.Certificate,
    ra_key: PrivateKey,
    allow_single_des: bool,
) -> bytes:
    if message.content is None or message.content_type != OID_DATA:
        raise ProtocolError(FailInfo.BAD_REQUEST, "the message has no pkcsPKIEnvelope")
    enveloped = envelope.load_envelope(message.content)
    cipher = envelope.content_cipher(enveloped, allow_single_des=allow_single_des)
    context.content_cipher = cipher
    return envelope.decrypt(
        message.content, enveloped, cipher, certificate=ra_certificate, key=ra_key
    )


def _request(message: cms.SignedMessage, context: _Context, plaintext: bytes) -> PKIRequest:
    fields = _read_payload(context.message_type, plaintext)
    return PKIRequest(
        message_type=context.message_type,
        transaction_id=context.transaction_id,
        sender_nonce=context.sender_nonce,
        signer_certificate=context.signer_certificate,
        digest_algorithm=context.digest_algorithm,
        content_cipher=context.content_cipher,
        signing_time=message.signing_time(),
        raw_signed_attributes=message.attributes,
        **fields,
    )


def _read_payload(message_type: MessageType, plaintext: bytes) -> dict:
    """The messageData by type. A payload that does not parse fails exactly like a failed
    decryption: a random key that happens to unpad must not be told apart."""
    try:
        if message_type in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
            csr = x509.load_der_x509_csr(plaintext)
            return {"csr": csr, "challenge_password": _challenge(csr)}
        if message_type is MessageType.CERT_POLL:
            return {"issuer_and_subject": decode_issuer_and_subject(plaintext)}
        return {"issuer_and_serial": decode_issuer_and_serial(plaintext)}
    except ProtocolError:
        raise
    except Exception:
        raise envelope.DecryptionFailed() from None


def _challenge(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        return challenge_password(csr.public_bytes(Encoding.DER))
    except ProtocolError:
        raise
    except Exception:
        raise ProtocolError(FailInfo.BAD_REQUEST, "the CSR's attributes cannot be read") from None


def build_cert_rep(
    *,
    request_info: RequestInfo,
    status: PKIStatus,
    ra_certificate: x509.Certificate,
    ra_key: PrivateKey,
    certificates: list[x509.Certificate] | tuple[x509.Certificate, ...] = (),
    crl_der: bytes | None = None,
    fail_info: FailInfo | None = None,
    fail_info_text: str | None = None,
) -> bytes:
    """A CertRep answering ``request_info``, signed by the RA key.

    SUCCESS carries the certificates (or the CRL) in an envelope for the request's
    signer certificate, with the request's cipher (AES-128-CBC for a DES request);
    PENDING and FAILURE carry no content. Raises ``ValueError`` on inconsistent input.
    """
    status = PKIStatus(status)
    _check_reply(status, certificates, crl_der, fail_info, request_info)
    content = None
    if status is PKIStatus.SUCCESS:
        content = _reply_envelope(request_info, list(certificates), crl_der)
    return cms.sign_message(
        content=content,
        attributes=_reply_attributes(request_info, status, fail_info, fail_info_text),
        certificate=ra_certificate,
        key=ra_key,
        digest=reply_digest(request_info.digest_algorithm),
    )


def reply_digest(requested: DigestAlgorithm | None) -> DigestAlgorithm:
    """The digest a CertRep is signed with: the request's if mdmcerts signs with it."""
    return requested if requested in SIGNING_DIGESTS else DEFAULT_DIGEST


def _check_reply(
    status: PKIStatus,
    certificates,
    crl_der: bytes | None,
    fail_info: FailInfo | None,
    request_info: RequestInfo,
) -> None:
    if (status is PKIStatus.FAILURE) != (fail_info is not None):
        raise ValueError("failInfo goes with a FAILURE, and only with it")
    if status is not PKIStatus.SUCCESS and (certificates or crl_der):
        raise ValueError("only a SUCCESS carries certificates or a CRL")
    if status is PKIStatus.SUCCESS:
        if not certificates and crl_der is None:
            raise ValueError("a SUCCESS carries certificates or a CRL")
        if request_info.signer_certificate is None:
            raise ValueError("a SUCCESS needs the request's signer certificate")


def _reply_envelope(
    request_info: RequestInfo, certificates: list[x509.Certificate], crl_der: bytes | None
) -> bytes:
    if crl_der is None:
        inner = pkcs7.serialize_certificates(certificates, Encoding.DER)
    else:
        inner = cms.degenerate_signed_data(certificates, [crl_der])
    cipher = request_info.content_cipher
    if cipher in (None, ContentCipher.DES_CBC):
        cipher = ContentCipher.AES_128_CBC
    return envelope.encrypt(inner, request_info.signer_certificate, cipher)


def _reply_attributes(
    request_info: RequestInfo,
    status: PKIStatus,
    fail_info: FailInfo | None,
    fail_info_text: str | None,
) -> list[bytes]:
    encode = cms.encode_attribute
    attributes = [
        encode(OID_MESSAGE_TYPE, core.PrintableString(str(int(MessageType.CERT_REP)))),
        encode(OID_PKI_STATUS, core.PrintableString(str(int(status)))),
        encode(OID_SENDER_NONCE, core.OctetString(os.urandom(NONCE_LENGTH))),
    ]
    if request_info.transaction_id is not None:
        attributes.append(
            encode(OID_TRANSACTION_ID, core.PrintableString(request_info.transaction_id))
        )
    if request_info.sender_nonce is not None:
        attributes.append(encode(OID_RECIPIENT_NONCE, core.OctetString(request_info.sender_nonce)))
    if fail_info is not None:
        attributes.append(encode(OID_FAIL_INFO, core.PrintableString(str(int(fail_info)))))
        if fail_info_text:
            text = fail_info_text[:MAX_FAIL_INFO_TEXT]
            attributes.append(encode(OID_FAIL_INFO_TEXT, core.UTF8String(text)))
    return attributes


def get_ca_caps(*, renewal: bool, next_ca_cert: bool) -> str:
    """The GetCACaps answer (text/plain): only what mdmcerts really does."""
    caps = ["POSTPKIOperation", "SHA-256", "SHA-512", "AES", "SCEPStandard"]
    if renewal:
        caps.append("Renewal")
    if next_ca_cert:
        caps.append("GetNextCACert")
    return "".join(f"{cap}\n" for cap in caps)


def ca_certs_response(ra_certificate: x509.Certificate, chain: list[x509.Certificate]) -> bytes:
    """GetCACert answer (application/x-x509-ca-ra-cert): a certificates-only PKCS#7 with
    the RA certificate first, then the CA chain."""
    certificates = [ra_certificate, *(cert for cert in chain if cert != ra_certificate)]
    return pkcs7.serialize_certificates(certificates, Encoding.DER)


def decode_get_message(value: str) -> bytes:
    """The pkiMessage of a PKIOperation sent by GET, from its ``message`` parameter.

    Accepts the value still URL-encoded or already decoded, a ``+`` turned into a space
    by form decoding (macOS does not escape ``+`` and ``/``), the URL-safe alphabet
    (micromdm's scepclient), line breaks and missing padding.
    """
    if "%" in value:
        value = urllib.parse.unquote(value)
    value = value.replace(" ", "+").replace("-", "+").replace("_", "/")
    value = re.sub(r"[\r\n\t]", "", value).rstrip("=")
    if not value or len(value) % 4 == 1 or not _BASE64.fullmatch(value):
        raise MalformedMessage("the message parameter is not base64")
    if len(value) * 3 // 4 > MAX_MESSAGE_SIZE:
        raise MalformedMessage("the message is too large")
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except binascii.Error:
        raise MalformedMessage("the message parameter is not base64") from None


def next_ca_certs_response(
    *, certificates: list[x509.Certificate], ra_certificate: x509.Certificate, ra_key: PrivateKey
) -> bytes:
    """GetNextCACert answer (application/x-x509-next-ca-cert): the successor CA's
    certificates as a certificates-only PKCS#7, inside a SignedData signed by the current
    RA so a client can trust the hand-over (RFC 8894 §4.7.1)."""
    return cms.sign_message(
        content=pkcs7.serialize_certificates(certificates, Encoding.DER),
        attributes=[],
        certificate=ra_certificate,
        key=ra_key,
        digest=DEFAULT_DIGEST,
    )
