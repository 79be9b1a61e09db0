"""Signing .mobileconfig files (CMS SignedData) with a local CA's profile-signing certificate.

The signer certificate has keyUsage digitalSignature and extendedKeyUsage code signing only.
Apple devices check that the signature is valid and chains to a trusted root, not which EKU
the signer has (profiles signed with Developer ID certificates, which are code-signing
certificates, show as verified). An EKU is chosen rather than none because a certificate
without the extension is valid for every purpose: a leaked signer key would then also be a
TLS client certificate that every EAP-TLS RADIUS server trusting this CA accepts. Code
signing keeps it out of TLS, e-mail and SCEP entirely. (OpenSSL's ``smime -verify`` checks
the S/MIME purpose by default, so verify there with ``-purpose any``.)

RSA 2048 because every iOS and macOS version verifies RSA profile signatures.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from django.db import transaction
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import record_event
from apps.pki import crypto
from apps.pki.choices import KeyAlgorithm
from apps.pki.models import CertificateAuthority
from apps.pki.services import sign_service_certificate
from apps.profiles.models import ProfileSigner

SIGNER_VALIDITY = datetime.timedelta(days=365)
SIGNER_RENEW_BEFORE = datetime.timedelta(days=30)


class ProfileSigningError(Exception):
    """The CA cannot sign profiles; the message says why."""


def _usable(signer: ProfileSigner | None, ca: CertificateAuthority, now) -> bool:
    return (
        signer is not None
        and signer.issuer_fingerprint_sha256 == ca.fingerprint_sha256
        and signer.not_after - now > SIGNER_RENEW_BEFORE
    )


def _current_signer(ca: CertificateAuthority) -> ProfileSigner | None:
    return ProfileSigner.objects.filter(ca=ca).first()


def ensure_profile_signer(ca: CertificateAuthority) -> ProfileSigner:
    """The CA's profile signer, made on first use and renewed when it nears expiry (or the
    CA certificate changed). Safe to call concurrently: the CA row is the lock."""
    if not ca.signs_locally:
        raise ProfileSigningError(f"CA {ca} is not a local CA holding its key: it cannot sign")
    now = timezone.now()
    signer = _current_signer(ca)
    if _usable(signer, ca, now):
        return signer
    if not ca.is_valid_now:
        raise ProfileSigningError(f"CA {ca} is not valid now: it cannot sign profiles")
    with transaction.atomic():
        CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
        signer = _current_signer(ca)
        if _usable(signer, ca, now):
            return signer  # another process made it meanwhile
        previous = signer.fingerprint_sha256 if signer else None
        signer = signer or ProfileSigner(ca=ca)
        key = crypto.generate_private_key(KeyAlgorithm.RSA_2048)
        signer.set_identity(_sign_signer(ca, key, now), key)
        signer.save()
        record_event(
            action=AuditAction.UPDATE,
            obj=ca,
            message="profile-signing certificate issued",
            changes={"profile_signer": [previous, signer.fingerprint_sha256]},
        )
    return signer


def _sign_signer(ca: CertificateAuthority, key, now) -> x509.Certificate:
    return sign_service_certificate(
        ca,
        key,
        now,
        role="profile signing",
        validity=SIGNER_VALIDITY,
        key_usage=crypto.key_usage(digital_signature=True),
        extensions=(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]),),
    )


def sign_profile(content: bytes, *, ca: CertificateAuthority) -> bytes:
    """``content`` (a .mobileconfig) as CMS SignedData in DER, signed by ``ca``'s profile
    signer, with the signer and the CA chain (root excepted) for the device to build the
    path."""
    signer = ensure_profile_signer(ca)
    builder = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(signer.certificate, signer.load_private_key(), hashes.SHA256())
    )
    for cert in ca.chain():
        if cert.issuer != cert.subject:
            builder = builder.add_certificate(cert)
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
