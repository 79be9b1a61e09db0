"""User-provided identities: PKCS#12 files end users (or staff on their behalf) upload.

An upload is validated completely before anything is stored (``validate_pkcs12``): size,
PKCS#12 structure, the cost of its key derivations (refused before any is run), the
password, exactly one private key matching the leaf certificate, and the leaf's validity.
The key is then stored re-encrypted under the KEK in an ``Identity`` with the owner and
purpose; the password and the file are not kept. A user has at most one current identity
per purpose; a new upload replaces it only when the caller confirms (``replace=True``).

Messages of ``UploadRejected`` say what went wrong and what to do; they are safe to show
the uploader and never contain the password or key material.
"""

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import record_event
from apps.certificates import pkcs12_inspection
from apps.certificates.choices import CertificateSource, CertificateStatus, IdentityPurpose
from apps.certificates.identities import IdentityNotIssued, store_key
from apps.certificates.models import Certificate, Identity
from apps.certificates.services import certificate_row
from apps.pki import crypto

MAX_UPLOAD_BYTES = 100 * 1024
MIN_RSA_BITS = 2048
EXPORT_HINT = "Export the certificate together with its private key as a .p12 or .pfx file."


class UploadRejected(Exception):
    """The upload was refused and nothing was stored. ``message`` says what went wrong and
    what to do; it is safe to show the uploader."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ReplaceConfirmationNeeded(UploadRejected):
    """The user has a current identity for this purpose (``existing``); upload again with
    ``replace=True`` to replace it."""

    def __init__(self, existing: Identity) -> None:
        purpose = IdentityPurpose(existing.purpose).label
        certificate = existing.certificate
        super().__init__(
            f"You already have {_article(purpose)} {purpose} certificate "
            f"({certificate.subject}, valid until {certificate.not_after:%Y-%m-%d}). "
            "Confirm to replace it."
        )
        self.existing = existing


@dataclass(frozen=True)
class ValidatedBundle:
    """What a valid upload holds: the private key, its certificate and the other
    certificates of the file (issuers, as given)."""

    key: crypto.PrivateKey
    certificate: x509.Certificate
    chain: list[x509.Certificate]


# --- validation ---------------------------------------------------------------------------


def validate_pkcs12(
    *, data: bytes, password: str, now: datetime.datetime | None = None
) -> ValidatedBundle:
    """The key and certificates of a PKCS#12 upload, or ``UploadRejected`` with the first
    thing wrong, checked in this order: size, PKCS#12 structure, the iteration counts of
    its MAC and encryption (before any key derivation: a hostile count would cost minutes),
    password, exactly one private key, the key matching a certificate, that certificate
    valid ``now``."""
    _check_size(data)
    try:
        facts = pkcs12_inspection.inspect(data, password=password)
    except pkcs12_inspection.Pkcs12Refused as exc:
        raise UploadRejected(str(exc)) from exc
    _check_key_count(facts.private_keys)
    loaded = _load(data, password)
    key = _supported_key(loaded.key)
    leaf, chain = _split_leaf(key, loaded)
    _check_validity(leaf, now or timezone.now())
    return ValidatedBundle(key=key, certificate=leaf, chain=chain)


def _check_size(data: bytes) -> None:
    if not data:
        raise UploadRejected(f"The file is empty. {EXPORT_HINT}")
    check_upload_size(len(data))


def check_upload_size(size: int) -> None:
    """``UploadRejected`` for a file over ``MAX_UPLOAD_BYTES``: forms and the API call it
    with the upload's size before they read it."""
    if size > MAX_UPLOAD_BYTES:
        raise UploadRejected(
            f"The file is {size // 1024} KB; at most {MAX_UPLOAD_BYTES // 1024} KB is "
            "accepted. Export only your certificate, its private key and its issuers."
        )


def _check_key_count(count: int) -> None:
    if count == 0:
        raise UploadRejected(
            f"The file holds no private key, only certificates. {EXPORT_HINT} "
            "(choose 'export the private key' when you export it)."
        )
    if count > 1:
        raise UploadRejected(
            f"The file holds {count} private keys; exactly one is accepted. Export one "
            "certificate with its private key."
        )


def _load(data: bytes, password: str) -> pkcs12.PKCS12KeyAndCertificates:
    try:
        return pkcs12.load_pkcs12(data, password.encode() if password else None)
    except ValueError as exc:
        # The structure and algorithms were checked already: what is left is the password.
        raise UploadRejected(pkcs12_inspection.WRONG_UNLOCK_MESSAGE) from exc


def _supported_key(key) -> crypto.PrivateKey:
    if key is None:
        raise UploadRejected(f"The file holds no private key. {EXPORT_HINT}")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise UploadRejected(
                f"The private key is RSA {key.key_size} bits; at least {MIN_RSA_BITS} bits "
                "are required. Ask your certificate provider for a stronger certificate."
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key
    raise UploadRejected(
        "The private key is neither RSA nor elliptic-curve (EC); only those are accepted."
    )


def _split_leaf(
    key: crypto.PrivateKey, loaded: pkcs12.PKCS12KeyAndCertificates
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    certificates = [c.certificate for c in (loaded.cert, *loaded.additional_certs) if c]
    if not certificates:
        raise UploadRejected(f"The file holds a private key but no certificate. {EXPORT_HINT}")
    leaves = [cert for cert in certificates if crypto.public_key_matches(key, cert)]
    if not leaves:
        raise UploadRejected(
            "The private key in the file does not belong to its certificate. Export the "
            "certificate together with its own private key."
        )
    leaf = leaves[0]
    chain = []
    for cert in certificates:
        if cert not in chain and cert is not leaf and cert != leaf:
            chain.append(cert)
    return leaf, chain


def _check_validity(leaf: x509.Certificate, now: datetime.datetime) -> None:
    if now < leaf.not_valid_before_utc:
        raise UploadRejected(
            f"The certificate is not valid until {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} "
            "UTC. Upload it from that date, or check the date of the device that made it."
        )
    if now >= leaf.not_valid_after_utc:
        raise UploadRejected(
            f"The certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}. Renew it with "
            "your certificate provider and upload the new one."
        )


# --- storing, replacing, deleting -----------------------------------------------------------


def user_identities(user) -> QuerySet[Identity]:
    """The user's current uploaded identities, one per purpose at most."""
    return (
        Identity.objects.filter(
            user=user, current=True, certificate__source=CertificateSource.USER_PROVIDED
        )
        .exclude(purpose="")
        .select_related("certificate")
        .order_by("purpose")
    )


def store_user_identity(
    *,
    user,
    purpose: str,
    data: bytes,
    password: str,
    replace: bool = False,
    actor=None,
    request: HttpRequest | None = None,
) -> Identity:
    """Validate the upload and make it ``user``'s current identity for ``purpose``.

    ``ReplaceConfirmationNeeded`` when the user has one for that purpose and ``replace`` is
    false; with ``replace`` the old one is retired (its key deleted, its certificate
    removed) in the same transaction. The profiles of the user's devices that carry this
    purpose are redelivered. ``UploadRejected`` leaves everything as it was."""
    if purpose not in IdentityPurpose.values:
        choices = ", ".join(str(label) for label in IdentityPurpose.labels)
        raise UploadRejected(f"Choose what the certificate is for: {choices}.")
    bundle = validate_pkcs12(data=data, password=password)
    with transaction.atomic():
        _lock_user(user)
        earlier = _earlier_upload(bundle.certificate, user=user, purpose=purpose)
        existing = user_identities(user).filter(purpose=purpose).first()
        if existing is not None and not replace:
            raise ReplaceConfirmationNeeded(existing)
        if existing is not None:
            _retire(existing, actor=actor, request=request, why="replaced by a new upload")
        identity = _create(user, purpose, bundle, replaces=existing, earlier=earlier)
        record_event(
            action=AuditAction.CREATE,
            obj=identity.certificate,
            actor=actor,
            request=request,
            message=f"user-provided {IdentityPurpose(purpose).label} certificate of "
            f"{user.get_username()} uploaded",
        )
        _redeliver(user, purpose)
    return identity


def delete_user_identity(*, identity: Identity, actor=None, request: HttpRequest | None = None):
    """The owner (or staff) deletes an uploaded identity: it is no longer current, its key
    is deleted and its certificate is marked removed; devices that carry it get their
    profiles again (which then fail until a new upload)."""
    with transaction.atomic():
        _lock_user(identity.user)
        row = user_identities(identity.user).filter(pk=identity.pk).first()
        if row is None:
            return  # deleted meanwhile
        _retire(row, actor=actor, request=request, why="deleted")
        _redeliver(row.user, row.purpose)


def _lock_user(user) -> None:
    """One upload or deletion at a time per user (the unique constraint stands behind)."""
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()


def check_not_recorded(cert: x509.Certificate) -> None:
    """``UploadRejected`` if mdmcerts knows the certificate already (issued, uploaded)."""
    if Certificate.objects.filter(fingerprint_sha256=crypto.fingerprint_sha256(cert)).exists():
        raise UploadRejected(ALREADY_KNOWN)


ALREADY_KNOWN = (
    "This certificate is already in mdmcerts (uploaded before or issued here). Upload a "
    "different certificate, or ask your administrator."
)


def _earlier_upload(cert: x509.Certificate, *, user, purpose: str) -> Identity | None:
    """The user's own earlier upload of this very certificate, deleted or replaced since,
    to bring back; ``UploadRejected`` if the certificate is current or not theirs."""
    row = (
        Certificate.objects.select_related("identity")
        .filter(fingerprint_sha256=crypto.fingerprint_sha256(cert))
        .first()
    )
    if row is None:
        return None
    identity = getattr(row, "identity", None)
    if row.source != CertificateSource.USER_PROVIDED or row.user_id != user.pk or not identity:
        raise UploadRejected(ALREADY_KNOWN)
    if identity.current and identity.purpose == purpose:
        raise UploadRejected(
            f"This certificate is already your {IdentityPurpose(purpose).label} certificate; "
            "there is nothing to change."
        )
    if identity.current:
        raise UploadRejected(
            f"This certificate is already your {IdentityPurpose(identity.purpose).label} "
            "certificate, and a certificate serves one purpose here. Delete it there first, "
            "or upload a different certificate."
        )
    return identity


def _create(
    user,
    purpose: str,
    bundle: ValidatedBundle,
    *,
    replaces: Identity | None,
    earlier: Identity | None,
) -> Identity:
    """The new current identity, or the user's ``earlier`` upload of the same certificate
    brought back (a certificate is recorded once)."""
    if earlier is not None:
        certificate = earlier.certificate
        certificate.status, certificate.removed_at = CertificateStatus.ACTIVE, None
        certificate.save(update_fields=["status", "removed_at"])
        identity = earlier
        identity.delivered_at = None
    else:
        certificate = certificate_row(
            cert=bundle.certificate,
            template=None,
            source=CertificateSource.USER_PROVIDED,
            user=user,
            replaces=replaces.certificate if replaces else None,
        )
        certificate.save(force_insert=True)
        identity = Identity(certificate=certificate, user=user)
    identity.purpose, identity.current, identity.created_at = purpose, True, timezone.now()
    identity.chain_pem = "".join(crypto.cert_pem(cert) for cert in bundle.chain)
    store_key(identity, bundle.key)
    identity.save()
    return identity


def _retire(identity: Identity, *, actor, request, why: str) -> None:
    now = timezone.now()
    identity.current = False
    identity.private_key = ""  # the key is deleted; the row stays for the inventory
    identity.save(update_fields=["current", "private_key"])
    certificate = identity.certificate
    before = certificate.status
    if before == CertificateStatus.ACTIVE:
        certificate.status = CertificateStatus.REMOVED
        certificate.removed_at = now
        certificate.save(update_fields=["status", "removed_at"])
    record_event(
        action=AuditAction.DELETE,
        obj=certificate,
        actor=actor,
        request=request,
        changes={"status": [before, certificate.status]},
        message=f"user-provided {IdentityPurpose(identity.purpose).label} certificate {why}; "
        "key deleted",
    )


def _redeliver(user, purpose: str) -> None:
    from apps.profiles.delivery import redeliver_user_identity  # delivery imports this module

    redeliver_user_identity(user=user, purpose=purpose)


# --- delivery -------------------------------------------------------------------------------

UPLOAD_PATH = "/portal/upload/"


def user_identity_for(*, device, purpose: str) -> Identity:
    """The current uploaded identity of ``device``'s owner for ``purpose``, to deliver;
    ``IdentityNotIssued`` saying what is missing (shown to the admin and on the owner's
    "My devices") when there is none that can be delivered."""
    label = IdentityPurpose(purpose).label
    owner = device.owner
    if owner is None:
        raise IdentityNotIssued(
            f"device {device} has no owner to take a user-provided {label} certificate "
            "from: assign the device to a user"
        )
    name = owner.get_full_name() or owner.get_username()
    identity = user_identities(owner).filter(purpose=purpose).first()
    if identity is None:
        raise IdentityNotIssued(
            f"{name} has not uploaded {_article(label)} {label} certificate: ask them to "
            f"upload one at {UPLOAD_PATH}"
        )
    if not _deliverable(identity):
        raise IdentityNotIssued(
            f"{name}'s {label} certificate expired on "
            f"{identity.certificate.not_after:%Y-%m-%d}: ask them to upload a new one at "
            f"{UPLOAD_PATH}"
        )
    return identity


def _article(label: str) -> str:
    return "an" if label[:1] in "AEIOUS" else "a"  # "an S/MIME ...", "an Identity ..."


def _deliverable(identity: Identity) -> bool:
    certificate = identity.certificate
    return certificate.status == CertificateStatus.ACTIVE and certificate.not_after > timezone.now()
