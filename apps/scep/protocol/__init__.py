"""SCEP (RFC 8894) messages, server and client side. Pure: bytes in, dataclasses or bytes
out; no ORM, no request objects, no settings.

``server`` parses pkiMessages and builds CertReps, ``client`` builds pkiMessages and
reads CertReps; ``constants`` and ``errors`` are shared by both.
"""

from apps.scep.protocol.constants import (
    ContentCipher,
    DigestAlgorithm,
    FailInfo,
    MessageType,
    PKIStatus,
)
from apps.scep.protocol.errors import MalformedMessage, ProtocolError
from apps.scep.protocol.payloads import IssuerAndSerial, IssuerAndSubject
from apps.scep.protocol.server import (
    PKIRequest,
    build_cert_rep,
    ca_certs_response,
    decode_get_message,
    get_ca_caps,
    next_ca_certs_response,
    parse_pki_message,
)

__all__ = [
    "ContentCipher",
    "DigestAlgorithm",
    "FailInfo",
    "IssuerAndSerial",
    "IssuerAndSubject",
    "MalformedMessage",
    "MessageType",
    "PKIRequest",
    "PKIStatus",
    "ProtocolError",
    "build_cert_rep",
    "ca_certs_response",
    "decode_get_message",
    "get_ca_caps",
    "next_ca_certs_response",
    "parse_pki_message",
]
