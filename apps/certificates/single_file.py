"""Single file identities: one PKCS#12 an administrator uploads to a CA server of kind
``single_file``, delivered as the same identity to every device a profile targets.

The file is validated as a user's upload is (``uploads.validate_pkcs12``). The CA server
row describes the identity's certificate (subject, validity, fingerprint) so the CA list
shows what it holds; the key lives in the one current ``Identity`` (source single-file)
whose certificate names that CA server, encrypted under the KEK. Uploading a new file to
the same CA server replaces the identity and redelivers the profiles that carry it.
"""

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import record_change, record_event
from apps.certificates.choices import CertificateSource, CertificateStatus
from apps.certificates.identities import IdentityNotIssued, store_key
from apps.certificates.models import Identity
from apps.certificates.services import certificate_row
from apps.certificates.uploads import ValidatedBundle, check_not_recorded, validate_pkcs12
from apps.pki import crypto
from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority


def single_file_identity(*, ca: CertificateAuthority) -> Identity:
    """The identity a single-file CA server delivers; ``IdentityNotIssued`` saying what to
    do when it has none that can be delivered."""
    identity = current_single_file_identity(ca)
    if identity is None:
        raise IdentityNotIssued(
            f"CA server {ca} holds no identity file: upload one on its page in the admin"
        )
    certificate = identity.certificate
    if certificate.status != CertificateStatus.ACTIVE or certificate.not_after <= timezone.now():
        raise IdentityNotIssued(
            f"the identity of CA server {ca} expired on {certificate.not_after:%Y-%m-%d}: "
            "upload a renewed file on its page in the admin"
        )
    return identity


def current_single_file_identity(ca: CertificateAuthority) -> Identity | None:
    return (
        Identity.objects.select_related("certificate")
        .filter(
            certificate__ca=ca,
            certificate__source=CertificateSource.SINGLE_FILE,
            current=True,
        )
        .first()
    )


def store_single_file_identity(
    *,
    ca: CertificateAuthority,
    data: bytes,
    password: str,
    actor=None,
    request: HttpRequest | None = None,
) -> Identity:
    """Validate the PKCS#12 and make it the identity of ``ca``: a new CA server (unsaved)
    of kind single file is created with it; an existing one has its identity replaced (the
    old key deleted, its certificate removed) and the profiles carrying it redelivered.
    ``UploadRejected`` leaves everything as it was."""
    bundle = validate_pkcs12(data=data, password=password)
    is_new = ca.pk is None
    with transaction.atomic():
        old = None
        if not is_new:
            ca = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
            old = current_single_file_identity(ca)
        check_not_recorded(bundle.certificate)
        _describe(ca, bundle)
        ca.save()
        if old is not None:
            _retire(old)
        identity = _create(ca, bundle, replaces=old)
        if is_new:
            record_change(
                obj=ca,
                before=None,
                actor=actor,
                request=request,
                message="single file identity uploaded",
            )
        else:
            record_event(
                action=AuditAction.UPDATE,
                obj=ca,
                actor=actor,
                request=request,
                message=f"identity file replaced: now {ca.subject}, valid until "
                f"{ca.not_after:%Y-%m-%d}",
            )
            from apps.profiles.delivery import redeliver_single_file  # delivery imports us

            redeliver_single_file(ca=ca)
    return identity


def _describe(ca: CertificateAuthority, bundle: ValidatedBundle) -> None:
    """The CA server row shows the identity's certificate; it holds no CA key."""
    cert = bundle.certificate
    ca.kind = CAKind.SINGLE_FILE
    ca.parent = None
    ca.certificate_pem = crypto.cert_pem(cert)
    ca.__dict__.pop("certificate", None)
    ca.chain_pem = "".join(crypto.cert_pem(c) for c in bundle.chain)
    ca.subject = crypto.format_name(cert.subject)
    ca.serial = crypto.serial_hex(cert)
    ca.fingerprint_sha256 = crypto.fingerprint_sha256(cert)
    ca.not_before = cert.not_valid_before_utc
    ca.not_after = cert.not_valid_after_utc
    ca.key_algorithm = crypto.key_algorithm_of(cert.public_key()) or ""
    ca.path_length = None
    ca.private_key = ""


def _create(
    ca: CertificateAuthority, bundle: ValidatedBundle, *, replaces: Identity | None
) -> Identity:
    certificate = certificate_row(
        cert=bundle.certificate,
        template=None,
        ca=ca,
        source=CertificateSource.SINGLE_FILE,
        replaces=replaces.certificate if replaces else None,
    )
    certificate.save(force_insert=True)
    identity = Identity(certificate=certificate, chain_pem=ca.chain_pem)
    store_key(identity, bundle.key)
    identity.save(force_insert=True)
    return identity


def _retire(identity: Identity) -> None:
    identity.current = False
    identity.private_key = ""  # deleted: devices that hold it keep their copy
    identity.save(update_fields=["current", "private_key"])
    certificate = identity.certificate
    if certificate.status == CertificateStatus.ACTIVE:
        certificate.status = CertificateStatus.REMOVED
        certificate.removed_at = timezone.now()
        certificate.save(update_fields=["status", "removed_at"])
