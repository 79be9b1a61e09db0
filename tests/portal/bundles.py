"""PKCS#12 files an end user might upload, made here with cryptography: an S/MIME
certificate from an outside CA with its key, and the broken variants the portal must
refuse."""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from apps.pki import crypto
from tests.factories import make_key, self_signed_ca

P12_PASSWORD = "Export-Passw0rd!"


def smime_certificate(
    key,
    *,
    email: str = "alice@zylker.com",
    issuer_key=None,
    issuer: x509.Certificate | None = None,
    not_before_days: int = -1,
    days: int = 365,
) -> tuple[x509.Certificate, x509.Certificate]:
    """(leaf, issuer): an S/MIME certificate for ``email`` signed by an outside CA."""
    issuer_key = issuer_key or make_key()
    issuer = issuer or self_signed_ca(issuer_key)
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Zylker"),
                    x509.NameAttribute(NameOID.COMMON_NAME, email),
                ]
            )
        )
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=not_before_days))
        .not_valid_after(now + datetime.timedelta(days=not_before_days + days))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return leaf, issuer


def make_p12(
    *,
    email: str = "alice@zylker.com",
    password: str = P12_PASSWORD,
    key=None,
    with_key: bool = True,
    foreign_key: bool = False,
    not_before_days: int = -1,
    days: int = 365,
) -> bytes:
    """A PKCS#12 file with one certificate, its issuer and (``with_key``) a private key:
    the certificate's own, or another one (``foreign_key``)."""
    key = key or make_key()
    leaf, issuer = smime_certificate(key, email=email, not_before_days=not_before_days, days=days)
    if foreign_key:
        # cryptography pairs a key only with its own certificate: the mismatched file
        # carries the certificate beside the key, as some exporters write it.
        return _serialize(email, make_key(), None, [leaf, issuer], password)
    return _serialize(email, key if with_key else None, leaf, [issuer], password)


def _serialize(email: str, key, cert, cas: list, password: str) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        name=email.encode(),
        key=key,
        cert=cert,
        cas=cas,
        encryption_algorithm=BestAvailableEncryption(password.encode()),
    )


def subject_of(p12: bytes, password: str = P12_PASSWORD) -> str:
    """The leaf's subject as mdmcerts writes it (``O=…,CN=…``)."""
    loaded = pkcs12.load_pkcs12(p12, password.encode())
    return crypto.format_name(loaded.cert.certificate.subject)
