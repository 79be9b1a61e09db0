"""OCSP responses (RFC 6960) for one CA: request bytes and a status lookup in, response
bytes out. No ORM, no HTTP request: the caller supplies the responder and the lookup."""

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from apps.pki.choices import RevocationReason

RESPONSE_VALIDITY = datetime.timedelta(hours=1)
CLOCK_SKEW = datetime.timedelta(minutes=1)
MAX_NONCE_BYTES = 32  # RFC 8954 2.1
# What reading a request can raise on hostile input; anything here is malformedRequest.
MALFORMED = (
    ValueError,
    TypeError,
    NotImplementedError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


@dataclass(frozen=True)
class SerialStatus:
    """What the inventory says of one serial this CA issued: good when ``revoked_at`` is
    None, else revoked then for ``reason`` (a ``RevocationReason`` value)."""

    revoked_at: datetime.datetime | None = None
    reason: str = ""


GOOD = SerialStatus()


@dataclass(frozen=True)
class Responder:
    """Who answers for ``issuer``: its delegated OCSP signer, key and signature hash."""

    issuer: x509.Certificate
    signer: x509.Certificate
    signer_key: object
    signature_hash: hashes.HashAlgorithm
    validity: datetime.timedelta = RESPONSE_VALIDITY


@dataclass(frozen=True)
class Answer:
    """An encoded OCSPResponse; ``next_update`` is set on signed answers only."""

    der: bytes
    status: ocsp.OCSPResponseStatus
    next_update: datetime.datetime | None = None


@dataclass(frozen=True)
class _Question:
    name_hash: bytes
    key_hash: bytes
    serial: int
    algorithm: hashes.HashAlgorithm
    nonce: bytes | None


def respond(
    request_der: bytes,
    *,
    responder: Responder,
    lookup: Callable[[int], SerialStatus | None],
    now: datetime.datetime,
) -> Answer:
    """Answer an OCSPRequest: good, revoked or unknown (``lookup`` returned None).

    A request that cannot be read (or asks about several certificates, which
    ``cryptography`` cannot answer in one response) is ``malformedRequest``; one about
    another issuer is ``unauthorized`` (RFC 6960 2.3, RFC 5019 2.2.3): this responder's
    delegated signer has no authority there, so a signed "unknown" would not verify.
    """
    try:
        question = _read(request_der)
        expected = issuer_hashes(responder.issuer, question.algorithm)
    except MALFORMED:
        return unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    if (question.name_hash, question.key_hash) != expected:
        return unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    return _signed(question, lookup(question.serial), responder, now)


def unsuccessful(status: ocsp.OCSPResponseStatus) -> Answer:
    response = ocsp.OCSPResponseBuilder.build_unsuccessful(status)
    return Answer(der=response.public_bytes(serialization.Encoding.DER), status=status)


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """``(issuerNameHash, issuerKeyHash)`` of a CertID naming ``issuer``.

    Only the issuer's name and key enter these hashes, so the issuer stands in for the
    certificate: ``cryptography`` then hashes the exact subjectPublicKey bits, whatever
    the key type or point encoding.
    """
    request = ocsp.OCSPRequestBuilder().add_certificate(issuer, issuer, algorithm).build()
    return request.issuer_name_hash, request.issuer_key_hash


def _read(request_der: bytes) -> _Question:
    request = ocsp.load_der_ocsp_request(request_der)
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        nonce = None
    return _Question(
        name_hash=request.issuer_name_hash,
        key_hash=request.issuer_key_hash,
        serial=request.serial_number,
        algorithm=request.hash_algorithm,
        nonce=nonce,
    )


def _signed(
    question: _Question,
    status: SerialStatus | None,
    responder: Responder,
    now: datetime.datetime,
) -> Answer:
    next_update = now + responder.validity
    cert_status, revoked_at, reason = _cert_status(status)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=question.name_hash,
            issuer_key_hash=question.key_hash,
            serial_number=question.serial,
            algorithm=question.algorithm,
            cert_status=cert_status,
            this_update=now - CLOCK_SKEW,
            next_update=next_update,
            revocation_time=revoked_at,
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.signer)
        .certificates([responder.signer])
    )
    # Longer nonces are left out rather than refused (RFC 8954 2.1 allows either).
    if question.nonce and len(question.nonce) <= MAX_NONCE_BYTES:
        builder = builder.add_extension(x509.OCSPNonce(question.nonce), critical=False)
    response = builder.sign(responder.signer_key, responder.signature_hash)
    return Answer(
        der=response.public_bytes(serialization.Encoding.DER),
        status=ocsp.OCSPResponseStatus.SUCCESSFUL,
        next_update=next_update,
    )


def _cert_status(status: SerialStatus | None):
    if status is None:
        return ocsp.OCSPCertStatus.UNKNOWN, None, None
    if status.revoked_at is None:
        return ocsp.OCSPCertStatus.GOOD, None, None
    # "unspecified" is left out, as in the CRL (RFC 5280 5.3.1).
    reason = (
        x509.ReasonFlags[status.reason]
        if status.reason and status.reason != RevocationReason.UNSPECIFIED
        else None
    )
    return ocsp.OCSPCertStatus.REVOKED, status.revoked_at, reason
