"""External SCEP CAs (kind ``scep``): NDES, DigiCert ONE, EJBCA, any RFC 8894 CA.

``ScepUpstream`` talks to one such CA: raw GET/POST for the proxy, GetCACaps and GetCACert
(checked against the pinned CA certificate), the challenge the CA expects (none, static,
or fetched from NDES now) and a SCEP client enrollment (PKCSReq, then CertPoll while the
CA answers PENDING) for server-side key generation. Every request has the CA server's
timeout; every failure is an ``UpstreamError`` whose message is safe to show.

Requests are encrypted with AES when GetCACaps offers it (else 3DES) and signed with
SHA-256 or SHA-512 when offered (else SHA-1, what old NDES versions read). Answers
encrypted with single DES are read only from a CA server whose admin ticked "accept
single-DES answers" (micromdm scepserver 2.1 answers with nothing else).
"""

import base64
import time
import urllib.parse
from dataclasses import dataclass

from cryptography import x509

from apps.pki import crypto, ndes
from apps.pki.backends import IssuanceError, IssuanceSpec
from apps.pki.backends.http import HttpFailure, HttpTimeout, describe, request, tls_context
from apps.pki.choices import ExternalChallengeType
from apps.pki.models import CertificateAuthority
from apps.scep.protocol import (
    ContentCipher,
    DigestAlgorithm,
    MalformedMessage,
    MessageType,
    PKIStatus,
    ProtocolError,
    client,
)

PKI_MESSAGE = "application/x-pki-message"
# Moved aside in tests (never slept there): the wait between two CertPolls.
wait = time.sleep


class UpstreamError(IssuanceError):
    """The external CA could not be used; the message is safe to show and holds no secret.
    ``timed_out``: it did not answer within its timeout (a gateway timeout, not an error)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class EnrollmentRefused(UpstreamError):
    """The external CA answered FAILURE: final, retrying the same request is pointless."""


@dataclass(frozen=True)
class UpstreamReply:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class PendingRequest:
    """What a server-side enrollment needs to send or resume one transaction."""

    key: crypto.PrivateKey
    csr: x509.CertificateSigningRequest
    transaction_id: str


class ScepUpstream:
    """One external SCEP CA server, as configured on its ``CertificateAuthority`` row."""

    def __init__(self, ca: CertificateAuthority) -> None:
        if not ca.scep_url:
            raise UpstreamError(f"CA server {ca.name} has no SCEP URL")
        self.ca = ca
        self.timeout = ca.scep_request_timeout_seconds
        self._tls = None

    # --- transport ------------------------------------------------------------------------

    def get(self, params: dict[str, str]) -> UpstreamReply:
        """GET the SCEP URL with ``params`` (operation, message) added to its query.
        Any HTTP status is returned; ``UpstreamError`` when there is no answer."""
        return self._send("GET", self._url(params))

    def post_pki_operation(self, body: bytes) -> UpstreamReply:
        """POST a pkiMessage (``operation=PKIOperation``); any HTTP status is returned."""
        return self._send(
            "POST",
            self._url({"operation": "PKIOperation"}),
            body=body,
            headers={"Content-Type": PKI_MESSAGE},
        )

    def _url(self, params: dict[str, str]) -> str:
        parts = urllib.parse.urlsplit(self.ca.scep_url)
        query = urllib.parse.parse_qsl(parts.query) + list(params.items())
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def _send(self, method: str, url: str, **kwargs) -> UpstreamReply:
        try:
            response = request(method, url, timeout=self.timeout, tls=self._context(), **kwargs)
        except HttpFailure as exc:
            raise UpstreamError(
                f"CA server {self.ca.name}: {exc}", timed_out=isinstance(exc, HttpTimeout)
            ) from None
        return UpstreamReply(response.status, response.content_type, response.body)

    def _context(self):
        if self._tls is None:
            try:
                self._tls = tls_context(self.ca.tls_trust_bundle_pem)
            except ValueError as exc:  # ssl.SSLError is one: a malformed bundle
                raise UpstreamError(f"CA server {self.ca.name}: bad TLS trust bundle") from exc
        return self._tls

    def _ok(self, reply: UpstreamReply, operation: str) -> bytes:
        if reply.status != 200:
            raise UpstreamError(
                f"CA server {self.ca.name}: {operation} at {describe(self.ca.scep_url)} "
                f"answered HTTP {reply.status}"
            )
        return reply.body

    # --- GetCACaps, GetCACert, challenge --------------------------------------------------

    def ca_caps(self) -> list[str]:
        """The capabilities GetCACaps lists, as the CA spells them."""
        body = self._ok(self.get({"operation": "GetCACaps"}), "GetCACaps")
        text = body.decode("ascii", errors="replace")
        return [line.strip() for line in text.splitlines() if line.strip()]

    def fetch_ca_certificates(self) -> list[x509.Certificate]:
        """GetCACert's certificates as the CA sends them, not checked against the pin."""
        body = self._ok(self.get({"operation": "GetCACert"}), "GetCACert")
        try:
            return client.parse_ca_certs(body)
        except MalformedMessage:
            raise UpstreamError(
                f"CA server {self.ca.name}: the GetCACert answer holds no certificate"
            ) from None

    def ca_certificates(self) -> list[x509.Certificate]:
        """GetCACert's certificates; ``UpstreamError`` if the pinned CA is not among them."""
        certificates = self.fetch_ca_certificates()
        pinned = self.ca.fingerprint_sha256
        if pinned and pinned not in {crypto.fingerprint_sha256(c) for c in certificates}:
            found = crypto.fingerprint_sha256(issuing_ca(certificates))
            raise UpstreamError(
                f"CA server {self.ca.name}: fingerprint mismatch: GetCACert presents "
                f"{crypto.colon_hex(found)}, pinned {crypto.colon_hex(pinned)}"
            )
        return certificates

    def challenge(self) -> str:
        """The challenge password for one enrollment: "" (none), the static one, or a
        one-time NDES challenge fetched now."""
        ca = self.ca
        if ca.scep_challenge_type == ExternalChallengeType.STATIC:
            return ca.reveal_secret("scep_static_challenge")
        if ca.scep_challenge_type != ExternalChallengeType.DYNAMIC:
            return ""
        try:
            return ndes.fetch_challenge(
                url=ca.ndes_challenge_url,
                username=ca.ndes_username,
                password=ca.reveal_secret("ndes_password"),
                expected_length=ca.ndes_challenge_length,
                timeout=self.timeout,
                trust_bundle_pem=ca.tls_trust_bundle_pem,
            )
        except ndes.NdesError as exc:
            raise UpstreamError(f"CA server {ca.name}: {exc}") from None

    # --- enrollment as a SCEP client ------------------------------------------------------

    def enroll(self, pending: PendingRequest) -> x509.Certificate | None:
        """Send the PKCSReq and poll while PENDING, within the CA server's retries. The
        certificate, or None when the CA still says PENDING (resume with ``poll``)."""
        session = _Session(self)
        status, certificate = session.exchange(pending, MessageType.PKCS_REQ)
        return self._poll_while_pending(session, pending, status, certificate)

    def poll(self, pending: PendingRequest) -> x509.Certificate | None:
        """CertPoll for a transaction the CA left PENDING, then poll as ``enroll`` does."""
        session = _Session(self)
        status, certificate = session.exchange(pending, MessageType.CERT_POLL)
        return self._poll_while_pending(session, pending, status, certificate)

    def _poll_while_pending(self, session, pending, status, certificate):
        for _ in range(self.ca.scep_max_pending_retries):
            if status is not PKIStatus.PENDING:
                break
            wait(self.ca.scep_retry_seconds)
            status, certificate = session.exchange(pending, MessageType.CERT_POLL)
        return certificate


class _Session:
    """One conversation with the CA: its capabilities and certificates, read once."""

    def __init__(self, upstream: ScepUpstream) -> None:
        self.upstream = upstream
        self.ca = upstream.ca
        caps = {cap.upper() for cap in upstream.ca_caps()}
        self.certificates = upstream.ca_certificates()
        self.cipher = ContentCipher.AES_256_CBC if "AES" in caps else ContentCipher.DES_EDE3_CBC
        self.digest = next(
            (d for cap, d in DIGESTS if cap in caps), DigestAlgorithm.SHA1
        )  # SHA-1 only for a CA that offers nothing better (NDES 2008)
        self.post = "POSTPKIOPERATION" in caps

    def exchange(
        self, pending: PendingRequest, message_type: MessageType
    ) -> tuple[PKIStatus, x509.Certificate | None]:
        """Send one PKCSReq or CertPoll and read the CertRep."""
        signer = client.self_signed_signer(pending.key, pending.csr.subject)
        payload = (
            client.pkcs_req_payload(pending.csr)
            if message_type is MessageType.PKCS_REQ
            else client.cert_poll_payload(self.ca.certificate.subject, pending.csr.subject)
        )
        der, nonce = client.build_pki_message(
            message_type=message_type,
            payload=payload,
            transaction_id=pending.transaction_id,
            signer_certificate=signer,
            signer_key=pending.key,
            recipient_certificate=client.select_recipient(self.certificates),
            content_cipher=self.cipher,
            digest_algorithm=self.digest,
        )
        reply = self._send(der)
        return self._read(reply, pending, signer, nonce)

    def _send(self, der: bytes) -> bytes:
        if self.post:
            reply = self.upstream.post_pki_operation(der)
        else:
            message = base64.b64encode(der).decode()
            reply = self.upstream.get({"operation": "PKIOperation", "message": message})
        return self.upstream._ok(reply, "PKIOperation")

    def _read(self, der, pending, signer, nonce) -> tuple[PKIStatus, x509.Certificate | None]:
        name = self.ca.name
        try:
            result = client.parse_cert_rep(
                der,
                recipient_key=pending.key,
                recipient_certificate=signer,
                ra_certificates=self.certificates,
                allow_single_des=self.ca.scep_allow_single_des,
            )
        except ProtocolError as exc:
            hint = (
                " (tick 'accept single-DES answers' only if this CA can do nothing else)"
                if "single DES" in exc.reason
                else ""
            )
            raise UpstreamError(f"CA server {name}: its CertRep: {exc.reason}{hint}") from None
        except MalformedMessage:
            raise UpstreamError(f"CA server {name}: its CertRep could not be read") from None
        if result.transaction_id != pending.transaction_id or result.recipient_nonce != nonce:
            raise UpstreamError(f"CA server {name}: the CertRep answers another request")
        if result.status is PKIStatus.FAILURE:
            reason = result.fail_info_text or (
                result.fail_info.name if result.fail_info else "no reason given"
            )
            raise EnrollmentRefused(f"CA server {name} refused the request: {reason}")
        if result.status is PKIStatus.PENDING:
            return PKIStatus.PENDING, None
        return PKIStatus.SUCCESS, self._issued(result.certificates, pending)

    def _issued(self, certificates, pending: PendingRequest) -> x509.Certificate:
        name = self.ca.name
        mine = [c for c in certificates if c.public_key() == pending.key.public_key()]
        if not mine:
            raise UpstreamError(f"CA server {name}: the CertRep holds no certificate for our key")
        certificate = mine[0]
        try:
            certificate.verify_directly_issued_by(self.ca.certificate)
        except (ValueError, TypeError, x509.InvalidSignature):
            raise UpstreamError(
                f"CA server {name}: the certificate returned is not signed by the pinned CA"
            ) from None
        return certificate


DIGESTS = (("SHA-256", DigestAlgorithm.SHA256), ("SHA-512", DigestAlgorithm.SHA512))


def issuing_ca(certificates: list[x509.Certificate]) -> x509.Certificate:
    """The CA certificate of a GetCACert answer that issues end entities: the issuer of its
    RA certificates when it has some, else the CA certificate that issued no other CA
    certificate of the answer (the lowest), else the first certificate."""
    cas = [c for c in certificates if _is_ca(c)]
    if not cas:
        return certificates[0]
    for certificate in certificates:
        if not _is_ca(certificate):
            for ca in cas:
                if certificate.issuer == ca.subject:
                    return ca
    issuers = {c.issuer for c in cas if c.issuer != c.subject}
    lowest = [ca for ca in cas if ca.subject not in issuers]
    return (lowest or cas)[0]


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def upstream_for(ca: CertificateAuthority) -> ScepUpstream:
    """The SCEP client of an external CA server."""
    return ScepUpstream(ca)


class ExternalScepIssuer:
    """``backend_for`` of an external CA: it cannot sign a certificate for a bare public key."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca

    def issue(self, spec: IssuanceSpec) -> x509.Certificate:
        raise IssuanceError(
            f"CA server {self.ca.name} is an external SCEP CA: mdmcerts cannot have it sign a "
            "key it does not hold. Device keys for an external CA go through delegate or "
            "proxy delivery; server-side delivery enrolls with the key mdmcerts generated."
        )
