"""SCEP (RFC 8894) object identifiers, message types, statuses and algorithm choices."""

import enum
import re

from cryptography.hazmat.primitives import hashes

# SCEP's authenticated attributes (RFC 8894 section 3.2.1), all under VeriSign's arc.
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
OID_FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"
OID_CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"  # noqa: S105 -- an OID, not a secret

# CMS attributes and content types that SCEP messages carry.
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"

NONCE_LENGTH = 16
# Far above any real SCEP message (a few KiB), far below what could hurt a worker.
MAX_MESSAGE_SIZE = 64 * 1024
MAX_TRANSACTION_ID_LENGTH = 255
# X.680 PrintableString characters; a transactionID must use only these.
PRINTABLE_STRING = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")


class MessageType(enum.IntEnum):
    """The messageType attribute: what a pkiMessage asks for or answers."""

    CERT_REP = 3
    RENEWAL_REQ = 17
    UPDATE_REQ = 18
    PKCS_REQ = 19
    CERT_POLL = 20
    GET_CERT = 21
    GET_CRL = 22


# What a server accepts; UpdateReq (18) was dropped by RFC 8894 and is refused.
REQUEST_TYPES = frozenset(
    {
        MessageType.RENEWAL_REQ,
        MessageType.PKCS_REQ,
        MessageType.CERT_POLL,
        MessageType.GET_CERT,
        MessageType.GET_CRL,
    }
)


class PKIStatus(enum.IntEnum):
    """The pkiStatus attribute of a CertRep."""

    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


class FailInfo(enum.IntEnum):
    """The failInfo attribute of a CertRep FAILURE."""

    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4


class ContentCipher(enum.Enum):
    """Content-encryption algorithm of a pkcsPKIEnvelope (its OID is the value).

    ``DES_CBC`` is never produced and only accepted where a caller opts in with
    ``allow_single_des=True`` (micromdm's scepclient and scepserver 2.1 use it).
    """

    AES_128_CBC = "2.16.840.1.101.3.4.1.2"
    AES_256_CBC = "2.16.840.1.101.3.4.1.42"
    DES_EDE3_CBC = "1.2.840.113549.3.7"
    DES_CBC = "1.3.14.3.2.7"


class DigestAlgorithm(enum.Enum):
    """Message digest of a SignedData (its OID is the value).

    SHA-1 is accepted in requests because micromdm's scepclient (and older Apple and
    Cisco clients) sign with it whatever GetCACaps says; mdmcerts itself signs with
    SHA-256 or SHA-512 only. MD5 is not a member: it is refused with badAlg.
    """

    SHA1 = "1.3.14.3.2.26"
    SHA256 = "2.16.840.1.101.3.4.2.1"
    SHA512 = "2.16.840.1.101.3.4.2.3"

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        """The ``cryptography`` hash for this digest."""
        return {"SHA1": hashes.SHA1, "SHA256": hashes.SHA256, "SHA512": hashes.SHA512}[self.name]()


# The digests mdmcerts signs with; a request digested with another gets SHA-256.
SIGNING_DIGESTS = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA512})
DEFAULT_DIGEST = DigestAlgorithm.SHA256
OID_MD5 = "1.2.840.113549.2.5"
