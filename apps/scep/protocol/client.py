"""The client side of SCEP (RFC 8894): build pkiMessages, read CertReps and CA certs.

Used by the tests and to enroll with external SCEP CAs (server-side delivery).
"""

import dataclasses
import datetime
import hashlib
import os
from dataclasses import dataclass, field

from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, pkcs7

from apps.scep.protocol import cms, envelope
from apps.scep.protocol.constants import (
    NONCE_LENGTH,
    OID_FAIL_INFO,
    OID_FAIL_INFO_TEXT,
    OID_MESSAGE_TYPE,
    OID_PKI_STATUS,
    OID_RECIPIENT_NONCE,
    OID_SENDER_NONCE,
    OID_TRANSACTION_ID,
    PRINTABLE_STRING,
    ContentCipher,
    DigestAlgorithm,
    FailInfo,
    MessageType,
    PKIStatus,
)
from apps.scep.protocol.der import check_der
from apps.scep.protocol.errors import MalformedMessage, ProtocolError
from apps.scep.protocol.payloads import encode_issuer_and_serial, encode_issuer_and_subject

PrivateKey = cms.PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class CertRepResult:
    """A verified CertRep; ``certificates``/``crl_der`` are filled on SUCCESS."""

    status: PKIStatus
    fail_info: FailInfo | None
    fail_info_text: str | None
    transaction_id: str | None
    recipient_nonce: bytes | None
    sender_nonce: bytes | None
    certificates: list[x509.Certificate] = field(default_factory=list)
    crl_der: bytes | None = None


def build_pki_message(
    *,
    message_type: MessageType,
    payload: bytes,
    transaction_id: str,
    signer_certificate: x509.Certificate,
    signer_key: PrivateKey,
    recipient_certificate: x509.Certificate,
    content_cipher: ContentCipher = ContentCipher.AES_256_CBC,
    digest_algorithm: DigestAlgorithm = DigestAlgorithm.SHA256,
    sender_nonce: bytes | None = None,
) -> tuple[bytes, bytes]:
    """A signed pkiMessage whose ``payload`` is enveloped for ``recipient_certificate``.

    Returns the DER and the senderNonce (fresh 16 random octets unless given).
    Raises ``ValueError`` for a transactionID that is not a PrintableString.
    """
    if not PRINTABLE_STRING.fullmatch(transaction_id):
        raise ValueError("a transactionID must be a non-empty PrintableString")
    nonce = os.urandom(NONCE_LENGTH) if sender_nonce is None else sender_nonce
    encode = cms.encode_attribute
    attributes = [
        encode(OID_MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
        encode(OID_TRANSACTION_ID, core.PrintableString(transaction_id)),
        encode(OID_SENDER_NONCE, core.OctetString(nonce)),
    ]
    der = cms.sign_message(
        content=envelope.encrypt(payload, recipient_certificate, content_cipher),
        attributes=attributes,
        certificate=signer_certificate,
        key=signer_key,
        digest=digest_algorithm,
    )
    return der, nonce


def certificate_request(
    *,
    key: PrivateKey,
    subject: x509.Name,
    sans: tuple[x509.GeneralName, ...] = (),
    challenge_password: str = "",
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request signed with SHA-256: the subject, the SANs and other requested
    extensions, and the challengePassword attribute when there is one."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        # RFC 5280 4.2.1.6: critical when the subject is empty.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(sans)), critical=len(subject) == 0
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    if challenge_password:
        builder = builder.add_attribute(
            x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge_password.encode()
        )
    return builder.sign(key, hashes.SHA256())


def pkcs_req_payload(csr: x509.CertificateSigningRequest) -> bytes:
    """messageData of PKCSReq and RenewalReq: the CSR's DER."""
    return csr.public_bytes(Encoding.DER)


def cert_poll_payload(issuer: x509.Name, subject: x509.Name) -> bytes:
    """messageData of CertPoll: IssuerAndSubject."""
    return encode_issuer_and_subject(issuer, subject)


def issuer_and_serial_payload(issuer: x509.Name, serial: int) -> bytes:
    """messageData of GetCert and GetCRL: IssuerAndSerialNumber."""
    return encode_issuer_and_serial(issuer, serial)


def self_signed_signer(key: PrivateKey, subject: x509.Name) -> x509.Certificate:
    """The transient self-signed certificate a client signs its PKCSReq with."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def transaction_id_for(public_key: PublicKey) -> str:
    """The transactionID clients commonly use: hex SHA-256 of the SubjectPublicKeyInfo."""
    spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def parse_ca_certs(der: bytes) -> list[x509.Certificate]:
    """The certificates of a GetCACert answer: certificates-only PKCS#7 or one DER cert."""
    try:
        check_der(der, max_size=1024 * 1024)
        try:
            return pkcs7.load_der_pkcs7_certificates(der)
        except ValueError:
            return [x509.load_der_x509_certificate(der)]
    except Exception:  # the boundary: hostile bytes raise nothing else
        raise MalformedMessage("the GetCACert answer holds no certificates") from None


def select_recipient(certificates: list[x509.Certificate]) -> x509.Certificate:
    """The certificate to encrypt a pkiMessage to: the RA (first non-CA certificate with
    keyEncipherment) when the server has one, else the CA itself."""
    for certificate in certificates:
        if not _is_ca(certificate) and _key_encipherment(certificate):
            return certificate
    for certificate in certificates:
        if _is_ca(certificate):
            return certificate
    return certificates[0]


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _key_encipherment(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_encipherment


def parse_cert_rep(
    der: bytes,
    *,
    recipient_key: PrivateKey,
    recipient_certificate: x509.Certificate,
    ra_certificates: list[x509.Certificate] | None = None,
    allow_single_des: bool = False,
) -> CertRepResult:
    """Verify and read a CertRep; decrypt its content on SUCCESS.

    With ``ra_certificates`` the signer must be one of them; otherwise the certificate
    in the message is used. Checking recipientNonce and transactionID against the
    request is the caller's. ``allow_single_des`` reads DES-CBC envelopes (micromdm's
    scepserver 2.1 answers with them). Raises ``MalformedMessage``/``ProtocolError``.
    """
    try:
        return _parse_cert_rep(
            der, recipient_key, recipient_certificate, ra_certificates, allow_single_des
        )
    except ProtocolError:
        raise
    except Exception:  # the boundary: hostile bytes raise nothing else
        raise MalformedMessage("the CertRep could not be read") from None


def _parse_cert_rep(
    der: bytes,
    recipient_key: PrivateKey,
    recipient_certificate: x509.Certificate,
    ra_certificates: list[x509.Certificate] | None,
    allow_single_des: bool,
) -> CertRepResult:
    message = cms.load_signed_message(der)
    _verify_cert_rep(message, ra_certificates)
    result = _read_cert_rep(message)
    if result.status is not PKIStatus.SUCCESS:
        return result
    certificates, crls = _open_cert_rep(
        message, recipient_key, recipient_certificate, allow_single_des
    )
    return dataclasses.replace(result, certificates=certificates, crl_der=crls[0] if crls else None)


def _verify_cert_rep(
    message: cms.SignedMessage, ra_certificates: list[x509.Certificate] | None
) -> None:
    if ra_certificates is None:
        candidates = message.certificates
    else:
        candidates = [
            asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER)) for cert in ra_certificates
        ]
    signer = cms.find_signer(message, candidates)
    if signer is None:
        raise ProtocolError(FailInfo.BAD_MESSAGE_CHECK, "the CertRep is not signed by the RA")
    digest = cms.signer_digest(message)
    cms.verify_signed_message(message, cms.to_cryptography(signer), digest)


def _read_cert_rep(message: cms.SignedMessage) -> CertRepResult:
    if _printable(message, OID_MESSAGE_TYPE) != str(int(MessageType.CERT_REP)):
        raise ProtocolError(FailInfo.BAD_REQUEST, "the answer is not a CertRep")
    status = PKIStatus(int(_printable(message, OID_PKI_STATUS) or "-1"))
    fail_info = _printable(message, OID_FAIL_INFO)
    text = message.attribute(OID_FAIL_INFO_TEXT)
    return CertRepResult(
        status=status,
        fail_info=FailInfo(int(fail_info)) if fail_info is not None else None,
        fail_info_text=core.UTF8String.load(text).native if text else None,
        transaction_id=_printable(message, OID_TRANSACTION_ID),
        recipient_nonce=_octets(message, OID_RECIPIENT_NONCE),
        sender_nonce=_octets(message, OID_SENDER_NONCE),
    )


def _open_cert_rep(
    message: cms.SignedMessage,
    recipient_key: PrivateKey,
    recipient_certificate: x509.Certificate,
    allow_single_des: bool,
) -> tuple[list[x509.Certificate], list[bytes]]:
    if message.content is None:
        raise ProtocolError(FailInfo.BAD_REQUEST, "the SUCCESS CertRep has no content")
    enveloped = envelope.load_envelope(message.content)
    cipher = envelope.content_cipher(enveloped, allow_single_des=allow_single_des)
    inner = envelope.decrypt(
        message.content,
        enveloped,
        cipher,
        certificate=recipient_certificate,
        key=recipient_key,
    )
    return cms.read_degenerate(inner)


def _printable(message: cms.SignedMessage, oid: str) -> str | None:
    raw = message.attribute(oid)
    return None if raw is None else core.PrintableString.load(raw).native


def _octets(message: cms.SignedMessage, oid: str) -> bytes | None:
    raw = message.attribute(oid)
    return None if raw is None else core.OctetString.load(raw).native
