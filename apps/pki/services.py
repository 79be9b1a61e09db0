"""Creating and importing CA servers."""

import datetime
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import record_change, record_event
from apps.pki import crypto
from apps.pki.choices import CAKind, KeyAlgorithm, RevocationReason
from apps.pki.models import CertificateAuthority

BACKDATE = datetime.timedelta(minutes=1)
MAX_IMPORT_BYTES = 256 * 1024


def _ca_extensions(
    builder: x509.CertificateBuilder,
    *,
    public_key,
    issuer: x509.Certificate | None,
    path_length: int | None,
) -> x509.CertificateBuilder:
    aki = (
        crypto.authority_key_identifier(issuer)
        if issuer is not None
        else x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    )
    return (
        builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        )
        .add_extension(
            crypto.key_usage(key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
    )


def generate_local_ca(
    *,
    ca: CertificateAuthority,
    subject: str,
    key_algorithm: str,
    signature_hash: str,
    validity_years: int,
    parent: CertificateAuthority | None = None,
    path_length: int | None = None,
    actor=None,
    request=None,
) -> CertificateAuthority:
    """Generate a key and a root certificate, or an intermediate signed by ``parent``."""
    name = crypto.build_name(crypto.parse_name_pattern(subject))
    if parent is not None:
        check_can_sign_ca(parent, path_length)
        if path_length is None and parent.path_length is not None:
            path_length = parent.path_length - 1
    key = crypto.generate_private_key(key_algorithm)
    now = timezone.now()
    not_after = now + datetime.timedelta(days=365 * validity_years)
    issuer_name, issuer_key = name, key
    if parent is not None:
        issuer_name, issuer_key = parent.certificate.subject, parent.load_private_key()
        not_after = min(not_after, parent.not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
    )
    builder = _ca_extensions(
        builder,
        public_key=key.public_key(),
        issuer=parent.certificate if parent else None,
        path_length=path_length,
    )
    if parent is not None:
        builder = add_revocation_pointers(builder, parent)
    cert = builder.sign(issuer_key, crypto.signature_hash(signature_hash))
    ca.kind, ca.parent, ca.signature_hash = CAKind.LOCAL, parent, signature_hash
    ca.set_identity(cert, key)
    return _save_new_ca(ca, actor=actor, request=request, message="generated")


def check_can_sign_ca(parent: CertificateAuthority, path_length: int | None) -> None:
    if not parent.signs_locally:
        raise ValidationError({"parent": "The issuing CA must be a local CA with its key."})
    if not parent.is_valid_now:
        raise ValidationError({"parent": "The issuing CA is not valid now."})
    if parent.path_length == 0:
        raise ValidationError(
            {"parent": "The issuing CA has path length 0: it cannot sign other CAs."}
        )
    if (
        parent.path_length is not None
        and path_length is not None
        and (path_length >= parent.path_length)
    ):
        raise ValidationError(
            {
                "path_length": f"Below this issuing CA the path length must be at most "
                f"{parent.path_length - 1}."
            }
        )


def add_revocation_pointers(builder, issuer: CertificateAuthority):
    """CRL distribution point and AIA (OCSP, CA issuers) at the portal's public URLs."""
    return builder.add_extension(
        x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(issuer.public_url("crl"))],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        ),
        critical=False,
    ).add_extension(
        x509.AuthorityInformationAccess(
            [
                x509.AccessDescription(
                    x509.oid.AuthorityInformationAccessOID.OCSP,
                    x509.UniformResourceIdentifier(issuer.public_url("ocsp")),
                ),
                x509.AccessDescription(
                    x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(issuer.public_url("ca.crt")),
                ),
            ]
        ),
        critical=False,
    )


def _save_new_ca(ca: CertificateAuthority, *, actor, request, message: str) -> CertificateAuthority:
    with transaction.atomic():
        ca.save()
        record_change(obj=ca, before=None, actor=actor, request=request, message=message)
    return ca


def import_ca(
    *,
    ca: CertificateAuthority,
    data: bytes,
    password: str = "",
    key_data: bytes = b"",
    actor=None,
    request=None,
) -> CertificateAuthority:
    """Import a CA from PKCS#12, or from PEM (certificates and key in one or two files)."""
    key, cert, chain = check_ca_import(data=data, password=password, key_data=key_data)
    ca.kind = CAKind.LOCAL
    ca.parent = _known_issuer(cert)
    ca.chain_pem = "" if ca.parent else "".join(crypto.cert_pem(c) for c in chain)
    ca.set_identity(cert, key)
    return _save_new_ca(ca, actor=actor, request=request, message="imported")


def check_ca_import(*, data: bytes, password: str = "", key_data: bytes = b""):
    """Read and check a CA identity to import: ``(key, certificate, other certificates)``.

    Raises ``ValidationError`` with a message for the form when anything is wrong.
    """
    if len(data) + len(key_data) > MAX_IMPORT_BYTES:
        raise ValidationError("The file is too large for a CA identity.")
    key, certs = _load_identity(data, password, key_data)
    cert = next((c for c in certs if crypto.public_key_matches(key, c)), None)
    if cert is None:
        raise ValidationError("The private key does not match any certificate in the file.")
    _check_importable(cert)
    return key, cert, [c for c in certs if c is not cert]


def _load_identity(data: bytes, password: str, key_data: bytes):
    secret = password.encode() if password else None
    if b"-----BEGIN" in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ValidationError("The PEM file holds no readable certificate.") from exc
        return _load_pem_key(key_data or data, secret), certs
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, secret)
    except ValueError as exc:
        raise ValidationError("Not a PKCS#12 file, or the password is wrong.") from exc
    if key is None or cert is None:
        raise ValidationError("The PKCS#12 file must hold the CA certificate and its key.")
    return key, [cert, *extra]


def _load_pem_key(pem: bytes, secret: bytes | None):
    try:
        return serialization.load_pem_private_key(pem, password=secret)
    except TypeError as exc:
        if secret is None:
            raise ValidationError("The private key is encrypted: enter its password.") from exc
        # A password was given for a key that has none: read it without.
        return _load_pem_key(pem, None)
    except ValueError as exc:
        raise ValidationError("No private key could be read (wrong password?).") from exc


def _check_importable(cert: x509.Certificate) -> None:
    if crypto.key_algorithm_of(cert.public_key()) is None:
        raise ValidationError("Only RSA 2048/3072/4096 and EC P-256/P-384 CA keys are supported.")
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise ValidationError("The certificate is not a CA certificate (basicConstraints CA:TRUE).")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise ValidationError("The CA certificate's key usage does not allow certificate signing.")
    if cert.not_valid_after_utc <= timezone.now():
        raise ValidationError("The CA certificate has expired.")


def _known_issuer(cert: x509.Certificate) -> CertificateAuthority | None:
    if cert.issuer == cert.subject:
        return None
    for candidate in CertificateAuthority.objects.filter(kind=CAKind.LOCAL):
        try:
            cert.verify_directly_issued_by(candidate.certificate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


RA_VALIDITY = datetime.timedelta(days=730)
RA_RENEW_BEFORE = datetime.timedelta(days=30)


def ensure_ra(ca: CertificateAuthority) -> CertificateAuthority:
    """Give a local CA a valid SCEP RA certificate (RSA 2048, digitalSignature +
    keyEncipherment, signed by the CA), making a new one when missing or expiring.

    RSA because CMS key transport (how SCEP clients encrypt to the RA) needs it.
    """
    now = timezone.now()
    if _ra_is_current(ca, now):
        return ca
    with transaction.atomic():
        ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
        current = ca.ra_certificate
        if _ra_is_current(ca, now):
            return ca  # another process made it meanwhile
        key = crypto.generate_private_key(KeyAlgorithm.RSA_2048)
        ca.set_ra_identity(_sign_ra(ca, key, now), key)
        ca.save(update_fields=["ra_certificate_pem", "ra_private_key", "updated_at"])
        record_event(
            action=AuditAction.UPDATE,
            obj=ca,
            message="SCEP RA certificate issued",
            changes={
                "ra_certificate": [
                    crypto.fingerprint_sha256(current) if current else None,
                    crypto.fingerprint_sha256(ca.ra_certificate),
                ]
            },
        )
    return ca


def _ra_is_current(ca: CertificateAuthority, now) -> bool:
    """An RA is kept while valid, and until its last month unless it already lasts as long
    as its CA (a new one could not outlive the CA either: replacing it would only change
    the key clients just fetched)."""
    ra = ca.ra_certificate
    if ra is None or ra.not_valid_after_utc <= now:
        return False
    return ra.not_valid_after_utc - now > RA_RENEW_BEFORE or ra.not_valid_after_utc >= ca.not_after


def sign_service_certificate(
    ca: CertificateAuthority,
    key,
    now,
    *,
    role: str,
    validity: datetime.timedelta,
    key_usage: x509.KeyUsage,
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> x509.Certificate:
    """A certificate for one of mdmcerts' own services under ``ca`` (SCEP RA, OCSP signer,
    profile signer): "<CA name> <role>", never a CA, never outliving its CA."""
    name = x509.Name(
        [
            *ca.certificate.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)[:1],
            x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, f"{ca.name} {role}"[:64]),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - BACKDATE, ca.not_before))
        .not_valid_after(min(now + validity, ca.not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    ).add_extension(crypto.authority_key_identifier(ca.certificate), critical=False)
    return builder.sign(ca.load_private_key(), crypto.signature_hash(ca.signature_hash))


def _sign_ra(ca: CertificateAuthority, key, now) -> x509.Certificate:
    return sign_service_certificate(
        ca,
        key,
        now,
        role="SCEP RA",
        validity=RA_VALIDITY,
        key_usage=crypto.key_usage(digital_signature=True, key_encipherment=True),
    )


CRL_VALIDITY = datetime.timedelta(days=7)


def sign_crl(
    ca: CertificateAuthority,
    *,
    number: int,
    revoked: Iterable[tuple[str, datetime.datetime, str]],
    now: datetime.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL of ``revoked`` (serial hex, revocation time, RevocationReason value), valid
    from ``now`` (backdated a minute) for ``CRL_VALIDITY``."""
    now = now or timezone.now()
    reasons = {
        reason: x509.CRLReason(x509.ReasonFlags[reason])
        for reason in RevocationReason.values
        if reason != RevocationReason.UNSPECIFIED
    }
    entries = []
    for serial, revoked_at, reason in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(serial, 16))
            .revocation_date(revoked_at)
        )
        if reason in reasons:
            entry = entry.add_extension(reasons[reason], critical=False)
        entries.append(entry.build())
    # The builder is made in one go: add_revoked_certificate() copies the list at each call,
    # which is quadratic in the number of entries. Its constructor takes naive UTC times.
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=ca.certificate.subject,
        last_update=_naive_utc(now - BACKDATE),
        next_update=_naive_utc(now + CRL_VALIDITY),
        extensions=[
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
            x509.Extension(
                x509.AuthorityKeyIdentifier.oid,
                False,
                crypto.authority_key_identifier(ca.certificate),
            ),
        ],
        revoked_certificates=entries,
    )
    return builder.sign(ca.load_private_key(), crypto.signature_hash(ca.signature_hash))


def _naive_utc(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)


OCSP_SIGNER_VALIDITY = datetime.timedelta(days=30)
OCSP_SIGNER_RENEW_BEFORE = datetime.timedelta(days=7)


def ensure_ocsp_signer(ca: CertificateAuthority) -> CertificateAuthority:
    """Give a local CA a valid delegated OCSP signing certificate, making a new one when
    missing or in its last week.

    The signer carries id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): clients do not check its
    revocation, so it lives a month only. Its key has the CA's key type (RSA 2048 for RSA
    CAs: responses are signed per request and bigger keys only slow them down).
    """
    now = timezone.now()
    if _ocsp_signer_is_current(ca, now):
        return ca
    with transaction.atomic():
        ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
        current = ca.ocsp_certificate
        if _ocsp_signer_is_current(ca, now):
            return ca  # another process made it meanwhile
        key = crypto.generate_private_key(_ocsp_key_algorithm(ca))
        ca.set_ocsp_identity(_sign_ocsp_signer(ca, key, now), key)
        ca.save(update_fields=["ocsp_certificate_pem", "ocsp_private_key", "updated_at"])
        record_event(
            action=AuditAction.UPDATE,
            obj=ca,
            message="OCSP signing certificate issued",
            changes={
                "ocsp_certificate": [
                    crypto.fingerprint_sha256(current) if current else None,
                    crypto.fingerprint_sha256(ca.ocsp_certificate),
                ]
            },
        )
    return ca


def _ocsp_key_algorithm(ca: CertificateAuthority) -> str:
    if ca.key_algorithm in (KeyAlgorithm.EC_P256, KeyAlgorithm.EC_P384):
        return ca.key_algorithm
    return KeyAlgorithm.RSA_2048


def _ocsp_signer_is_current(ca: CertificateAuthority, now) -> bool:
    # Same rule as the RA: a signer that already lasts as long as its CA is kept.
    signer = ca.ocsp_certificate
    if signer is None or signer.not_valid_after_utc <= now:
        return False
    return (
        signer.not_valid_after_utc - now > OCSP_SIGNER_RENEW_BEFORE
        or signer.not_valid_after_utc >= ca.not_after
    )


def _sign_ocsp_signer(ca: CertificateAuthority, key, now) -> x509.Certificate:
    return sign_service_certificate(
        ca,
        key,
        now,
        role="OCSP signer",
        validity=OCSP_SIGNER_VALIDITY,
        key_usage=crypto.key_usage(digital_signature=True),
        extensions=(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]),
            x509.OCSPNoCheck(),
        ),
    )
