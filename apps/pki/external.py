"""External SCEP CA servers: pinning their CA certificate and testing the connection.

The CA certificate of an external CA is what its GetCACert returns (or what an admin
uploads): the issuing CA is pinned by its SHA-256 fingerprint in the CA server's
certificate fields, the rest of the answer (RA certificates, intermediates, root) is kept
in ``chain_pem``. Enrollments check every later GetCACert against that pin.
"""

import datetime
import logging
import re
from dataclasses import dataclass, field

from cryptography import x509

from apps.audit.services import record_change
from apps.pki import crypto
from apps.pki.backends.scep import UpstreamError, issuing_ca, upstream_for
from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority

logger = logging.getLogger(__name__)
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
MAX_CERTIFICATES_PEM = 256 * 1024  # characters: a chain of CA certificates, with room


class FingerprintMismatch(ValueError):
    """The CA certificate is not the one the admin expects; the message says both."""


def normalize_fingerprint(value: str) -> str:
    """A SHA-256 fingerprint typed with or without colons or spaces, as lowercase hex;
    ``ValueError`` if it is not 64 hexadecimal digits."""
    cleaned = re.sub(r"[\s:]", "", value).lower()
    if not FINGERPRINT.match(cleaned):
        raise ValueError("A SHA-256 fingerprint is 64 hexadecimal digits (colons allowed).")
    return cleaned


def load_pem_certificates(pem: bytes) -> list[x509.Certificate]:
    """The certificates of an uploaded PEM file; ``ValueError`` if it holds none."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certificates = []
    if not certificates:
        raise ValueError("The file holds no PEM certificate.")
    return certificates


def pin(
    ca: CertificateAuthority, certificates: list[x509.Certificate], *, expected: str = ""
) -> x509.Certificate:
    """Pin the issuing CA of ``certificates`` on ``ca`` (not saved); the others go to
    ``chain_pem``. ``FingerprintMismatch`` when ``expected`` names another certificate."""
    issuing = issuing_ca(certificates)
    found = crypto.fingerprint_sha256(issuing)
    if expected and normalize_fingerprint(expected) != found:
        raise FingerprintMismatch(
            f"The CA certificate's SHA-256 fingerprint is {crypto.colon_hex(found)}, not the "
            f"expected {crypto.colon_hex(normalize_fingerprint(expected))}."
        )
    ca.kind = CAKind.SCEP
    ca.set_identity(issuing, None)
    ca.chain_pem = "".join(crypto.cert_pem(c) for c in certificates if c is not issuing)
    return issuing


def read_ca_certificates(
    ca: CertificateAuthority, *, pem: str = "", fetch: bool = False
) -> list[x509.Certificate] | None:
    """The certificates to pin on ``ca``: those of ``pem`` when given, else what its
    GetCACert returns now when ``fetch``, else None (the pinned ones stay). ``ValueError``
    for a PEM without a certificate, ``UpstreamError`` when the CA cannot be used."""
    if pem.strip():
        if len(pem) > MAX_CERTIFICATES_PEM:
            raise ValueError("The PEM is too large for CA certificates.")
        return load_pem_certificates(pem.encode())
    if fetch:
        return upstream_for(ca).fetch_ca_certificates()
    return None


def check_expected_fingerprint(certificates: list[x509.Certificate], expected: str) -> None:
    """``FingerprintMismatch`` unless the issuing CA of ``certificates`` has the SHA-256
    fingerprint ``expected`` (nothing to check when it is empty)."""
    if expected:
        pin(CertificateAuthority(), certificates, expected=expected)


def fetch_and_pin(ca: CertificateAuthority, *, expected: str = "") -> x509.Certificate:
    """GetCACert from the CA's SCEP URL now, then ``pin``. ``UpstreamError`` if unreachable."""
    certificates = upstream_for(ca).fetch_ca_certificates()
    return pin(ca, certificates, expected=expected)


def save_external_ca(
    ca: CertificateAuthority, *, before: dict | None, actor=None, request=None
) -> CertificateAuthority:
    """Save a new or changed external CA server with its audit event (secrets redacted)."""
    ca.save()
    record_change(
        obj=ca,
        before=before,
        actor=actor,
        request=request,
        message=f"external SCEP CA, pinned SHA-256 {crypto.colon_hex(ca.fingerprint_sha256)}",
    )
    return ca


# --- Test connection ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChainEntry:
    """One certificate of a GetCACert answer, as the admin sees it."""

    subject: str
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint: str
    role: str
    pinned: bool


@dataclass(frozen=True)
class ConnectionReport:
    """What "Test connection" found; ``error`` is set when the CA could not be used."""

    ca: CertificateAuthority
    capabilities: list[str] = field(default_factory=list)
    chain: list[ChainEntry] = field(default_factory=list)
    pinned_fingerprint: str = ""
    error: str = ""

    @property
    def pin_matches(self) -> bool:
        return any(entry.pinned for entry in self.chain)

    @property
    def ok(self) -> bool:
        return not self.error and self.pin_matches


def check_connection(*, ca: CertificateAuthority) -> ConnectionReport:
    """GetCACaps and GetCACert against the CA now, and whether the pinned CA certificate
    is among the answer. Never raises for the CA's sake: failures are in ``error``. It
    changes nothing, so it leaves no audit event (the log has the outcome)."""
    pinned = ca.fingerprint_sha256
    try:
        upstream = upstream_for(ca)
        capabilities = upstream.ca_caps()
        certificates = upstream.fetch_ca_certificates()
    except UpstreamError as exc:
        report = ConnectionReport(ca=ca, pinned_fingerprint=pinned, error=str(exc))
    else:
        chain = [_entry(c, pinned, certificates) for c in certificates]
        report = ConnectionReport(
            ca=ca, capabilities=capabilities, chain=chain, pinned_fingerprint=pinned
        )
    logger.info("CA server %s: %s", ca.pk, _outcome(report))
    return report


def _entry(
    certificate: x509.Certificate, pinned: str, certificates: list[x509.Certificate]
) -> ChainEntry:
    fingerprint = crypto.fingerprint_sha256(certificate)
    role = "issuing CA" if certificate is issuing_ca(certificates) else _role(certificate)
    return ChainEntry(
        subject=crypto.format_name(certificate.subject),
        issuer=crypto.format_name(certificate.issuer),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint=fingerprint,
        role=role,
        pinned=fingerprint == pinned,
    )


def _role(certificate: x509.Certificate) -> str:
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        return "RA"
    return "root CA" if certificate.issuer == certificate.subject else "CA"


def _outcome(report: ConnectionReport) -> str:
    if report.error:
        return f"test connection failed: {report.error}"
    if report.pin_matches:
        return "test connection: reachable, pinned CA certificate presented"
    return "test connection: reachable, but the pinned CA certificate is NOT presented"
