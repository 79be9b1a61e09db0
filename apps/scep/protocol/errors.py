"""Errors of the SCEP protocol layer; their ``reason`` is safe to show to a client."""

from cryptography import x509

from apps.scep.protocol.constants import ContentCipher, DigestAlgorithm, FailInfo


class ProtocolError(Exception):
    """A pkiMessage refused for ``fail_info``, answered with a CertRep FAILURE.

    Carries what was parsed before the refusal (each possibly None) so the CertRep can
    echo the transactionID and nonce: it can be passed to ``build_cert_rep`` as
    ``request_info``. ``reason`` never holds a stack trace, a key or a challenge.
    """

    def __init__(
        self,
        fail_info: FailInfo,
        reason: str,
        *,
        message_type: int | None = None,
        transaction_id: str | None = None,
        sender_nonce: bytes | None = None,
        signer_certificate: x509.Certificate | None = None,
        digest_algorithm: DigestAlgorithm | None = None,
        content_cipher: ContentCipher | None = None,
    ) -> None:
        super().__init__(reason)
        self.fail_info = fail_info
        self.reason = reason
        self.message_type = message_type
        self.transaction_id = transaction_id
        self.sender_nonce = sender_nonce
        self.signer_certificate = signer_certificate
        self.digest_algorithm = digest_algorithm
        self.content_cipher = content_cipher


class MalformedMessage(ProtocolError):
    """Bytes that are not a pkiMessage far enough to answer with a CertRep (HTTP 400)."""

    def __init__(self, reason: str = "the message is not a well-formed SCEP pkiMessage") -> None:
        super().__init__(FailInfo.BAD_REQUEST, reason)
