"""Server-generated identities: keys mdmcerts generates for a device, delivered as PKCS#12.

For a request template whose key generation location is the server, mdmcerts generates the
key, has the template's CA sign the certificate (``sign_and_record``, source
server-generated) and keeps the key encrypted under the KEK in an ``Identity``. A device
has at most one current identity per template, however many profiles carry a PKCS#12
payload of that template: every generation takes the device's row lock and looks again,
and the unique constraint on current identities stands behind it.

Identities are generated early (``generate_pending_identities``, enqueued when a profile
is assigned and run by beat) or on demand when a delivery renders the payload
(``current_identity``). One not delivered in time is deleted and its certificate revoked
(``purge_undelivered_identities``); the next delivery generates a new one. Renewal
generates the replacement and redelivers the profiles that carry it (``renew_identity``).

The key is decrypted only to build the PKCS#12 of one check-in response, in memory; it is
never logged, audited, cached or shown.
"""

import contextlib
import datetime
import logging
import secrets as token_secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import record_event
from apps.certificates.choices import CertificateSource, CertificateStatus, RevocationCause
from apps.certificates.models import Certificate, Identity
from apps.certificates.services import (
    AlreadyRevoked,
    IssuanceRefused,
    lifecycle_settings,
    record_certificate,
    record_refusal,
    renewal_predecessor,
    revoke_certificate,
    sign_and_record,
    supersede,
)
from apps.core import secrets
from apps.core.fields import secret_context
from apps.devices.choices import APPLE_PLATFORMS, DeviceStatus
from apps.devices.models import Device
from apps.enrollment.choices import KeyGeneration
from apps.enrollment.models import CertificateTemplate, ExternalEnrollment
from apps.enrollment.rendering import TemplateRequestError, build_issuance_spec
from apps.enrollment.variables import VariableValueMissing, values_for
from apps.pki import crypto
from apps.pki.backends.scep import EnrollmentRefused, PendingRequest, UpstreamError, upstream_for
from apps.pki.choices import RevocationReason
from apps.profiles.choices import DeliveryStatus, PayloadKind, ProfilePlatform
from apps.profiles.models import Profile, ProfilePayload
from apps.scep.protocol import client

logger = logging.getLogger(__name__)

KEY_CONTEXT = secret_context(Identity, "private_key")
EXTERNAL_KEY_CONTEXT = secret_context(ExternalEnrollment, "private_key")
# Certificates still worth delivering: a pending revocation may yet be cancelled.
DELIVERABLE = (CertificateStatus.ACTIVE, CertificateStatus.PENDING_REVOCATION)
PASSWORD_BYTES = 24  # 192 random bits per delivery, beyond any guessing whatever the KDF
FRIENDLY_NAME = b"mdmcerts identity"
PBKDF2_ROUNDS = 20_000
LEGACY_ROUNDS = 2048


class IdentityNotIssued(Exception):
    """The identity could not be generated (a variable without a value, a CA that cannot
    sign); the message is safe to show and nothing was stored."""


class IdentityNotRequested(IdentityNotIssued):
    """No enrollment with the template's external CA was started for the device yet: the
    generation task starts it (``request_generation``)."""


# --- generation ---------------------------------------------------------------------------


def current_identity(
    *, device: Device, template: CertificateTemplate, profile: Profile | None = None
) -> Identity:
    """The device's current identity for ``template``, generated now if it has none or its
    certificate can no longer be delivered (revoked, expired). ``IdentityNotIssued`` if it
    cannot be generated. Takes the device's row lock until the caller's transaction ends."""
    if template is not None and template.uses_external_ca:
        return _ensure_external(device=device, template=template, profile=profile, enroll=False)[0]
    return _ensure(device=device, template=template, profile=profile)[0]


def _ensure(
    *,
    device: Device,
    template: CertificateTemplate,
    profile: Profile | None,
    now: datetime.datetime | None = None,
) -> tuple[Identity, bool]:
    now = now or timezone.now()
    with transaction.atomic():
        _lock_device(device)
        identity = _current(device, template)
        if identity is not None and _deliverable(identity, now):
            return identity, False
        if identity is not None:
            _retire(identity)
        return _generate(device=device, template=template, profile=profile, now=now), True


def _lock_device(device: Device) -> Device:
    """The device row, locked until the end of the transaction: one generation at a time
    per device (a check-in holds the same lock)."""
    return Device.objects.select_for_update(of=("self",)).get(pk=device.pk)


def _current(device: Device, template: CertificateTemplate | None) -> Identity | None:
    if template is None:
        return None
    return (
        Identity.objects.select_related("certificate")
        .filter(device=device, template=template, current=True)
        .first()
    )


def _deliverable(identity: Identity, now: datetime.datetime) -> bool:
    certificate = identity.certificate
    return certificate.status in DELIVERABLE and certificate.not_after > now


def _retire(identity: Identity) -> None:
    identity.current = False
    identity.save(update_fields=["current"])


def _generate(
    *,
    device: Device,
    template: CertificateTemplate,
    profile: Profile | None,
    now: datetime.datetime,
    replaces: Certificate | None = None,
) -> Identity:
    """A new key, its certificate signed as the template says, and the current identity
    holding both. Call with the device row locked."""
    if template is None:
        raise IdentityNotIssued("no request template to generate it with")
    if template.key_generation != KeyGeneration.SERVER:
        raise IdentityNotIssued(f"template {template} does not generate keys on the server")
    key = crypto.generate_private_key(template.key_algorithm)
    try:
        with transaction.atomic():
            certificate = sign_and_record(
                template=template,
                public_key=key.public_key(),
                values=values_for(device=device),
                requested=None,
                source=CertificateSource.SERVER_GENERATED,
                user=device.owner,
                device=device,
                profile=profile,
                replaces=replaces,
            )
            identity = Identity(
                certificate=certificate,
                template=template,
                device=device,
                chain_pem=template.ca.chain_pem_bundle(),
                current=True,
                created_at=now,
            )
            store_key(identity, key)
            identity.save()
    except (IssuanceRefused, VariableValueMissing) as exc:
        raise IdentityNotIssued(f"identity for template {template}: {exc}") from exc
    except IntegrityError as exc:
        # Only without the device lock (a caller that skipped it): the other one stands.
        raise IdentityNotIssued(f"device {device.pk} got its identity meanwhile") from exc
    return identity


def store_key(identity: Identity, key: crypto.PrivateKey) -> None:
    """Keep ``key`` in ``identity``, encrypted under the KEK (the row is not saved)."""
    identity.private_key = secrets.encrypt(crypto.private_key_der(key), context=KEY_CONTEXT)


def load_key(identity: Identity) -> crypto.PrivateKey:
    """The identity's private key, decrypted in memory for one use."""
    # Not crypto.load_stored_key: that cache suits a CA's few keys, not every device's.
    der = secrets.decrypt(identity.private_key, context=KEY_CONTEXT)
    return serialization.load_der_private_key(der, password=None)


# --- early generation ---------------------------------------------------------------------


def generate_early(*, profile: Profile) -> None:
    """After ``profile`` was assigned: if it carries a PKCS#12 identity payload, enqueue
    the generation task once the assignment commits. Call inside the assigning transaction.

    The request never fails for it: with the broker down the failure is logged and the
    beat sweep generates the identities later (or the delivery, on demand)."""
    if profile.payloads.filter(kind=PayloadKind.PKCS12).exists():
        transaction.on_commit(request_generation, robust=True)


def request_generation() -> None:
    """Enqueue the generation task now (call it through ``transaction.on_commit``). Never
    raises: with the broker down the beat sweep generates the identities later."""
    try:
        # Imported here: tasks import this module.
        from apps.certificates import tasks

        tasks.generate_identities.apply_async(retry=False)  # no publish retries in a request
    except Exception as exc:  # the broker is down or misconfigured: beat catches up
        logger.warning(
            "identity generation not enqueued (%s); the beat sweep will generate them", exc
        )


def generate_pending_identities(now: datetime.datetime | None = None) -> int:
    """Early generation: an identity for every enrolled device targeted by an assigned
    profile with a PKCS#12 payload that has no current identity for its template. Returns
    how many were generated. Safe to run twice at once (device row locks).

    A device whose last identity for a template was purged undelivered is left to on-demand
    generation at its next delivery, so an absent device does not get a new key every
    purge period. One that cannot get an identity (a variable without a value) is logged
    and skipped; its delivery will fail with the reason.
    """
    now = now or timezone.now()
    generated = 0
    for device, template, profile in _pending():
        ensure = _ensure_external if template.uses_external_ca else _ensure
        try:
            _, created = ensure(device=device, template=template, profile=profile, now=now)
        except IdentityNotIssued as exc:
            logger.warning("early generation for device %s skipped: %s", device.pk, exc)
            continue
        generated += created
    return generated


def _pending():
    """(device, template, first profile) for each device and template lacking an identity."""
    seen: set[tuple[int, int]] = set()
    payloads = (
        ProfilePayload.objects.filter(
            kind=PayloadKind.PKCS12,
            template__key_generation=KeyGeneration.SERVER,
            profile__assignments__isnull=False,
        )
        .select_related("profile", "template__ca")
        .order_by("profile_id", "position", "pk")
        .distinct()
    )
    for payload in payloads:
        for device in _lacking(payload.profile, payload.template):
            if (device.pk, payload.template_id) not in seen:
                seen.add((device.pk, payload.template_id))
                yield device, payload.template, payload.profile


def _lacking(profile: Profile, template: CertificateTemplate) -> QuerySet[Device]:
    """Enrolled devices the profile targets with no current identity for the template, and
    whose last one for it was not purged undelivered."""
    devices = Device.objects.filter(status=DeviceStatus.ENROLLED).filter(
        Q(assignments__profile=profile) | Q(groups__assignments__profile=profile)
    )
    if profile.platform == ProfilePlatform.APPLE:
        devices = devices.filter(platform__in=APPLE_PLATFORMS)
    current = Identity.objects.filter(device=OuterRef("pk"), template=template, current=True)
    last_cause = (
        Certificate.objects.filter(
            device=OuterRef("pk"), template=template, source=CertificateSource.SERVER_GENERATED
        )
        .order_by("-created_at", "-pk")
        .values("pending_revocation_cause")[:1]
    )
    return (
        devices.annotate(last_cause=Coalesce(Subquery(last_cause), Value("")))
        .exclude(Exists(current))
        .exclude(last_cause=RevocationCause.UNDELIVERED)
        .select_related("owner")
        .distinct()
        .order_by("pk")
    )


# --- purge --------------------------------------------------------------------------------


def purge_undelivered_identities(now: datetime.datetime | None = None) -> int:
    """Delete every server-generated identity not delivered within the lifecycle settings'
    ``identity_purge_days`` (its key goes with it) and revoke its certificate
    (cessationOfOperation, cause "undelivered"). Returns how many. Idempotent and safe to
    run twice at once: each identity is claimed under its device's row lock, and one whose
    device is busy (a check-in) is left to the next run.

    An identity that went out in a delivery the device has not answered (still
    "delivered") is kept: the device may hold it, and its acknowledgement may yet come.
    """
    now = now or timezone.now()
    days = lifecycle_settings().identity_purge_days
    candidates = _undelivered(now - datetime.timedelta(days=days))
    purged = 0
    for pk, device_id in candidates.values_list("pk", "device_id"):
        purged += _purge_one(pk, device_id, candidates, days)
    return purged


def _undelivered(cutoff: datetime.datetime) -> QuerySet[Identity]:
    sent = Identity.deliveries.through.objects.filter(
        identity=OuterRef("pk"),
        delivery__status__in=(DeliveryStatus.DELIVERED, DeliveryStatus.INSTALLED),
    )
    return (
        Identity.objects.filter(
            certificate__source=CertificateSource.SERVER_GENERATED,
            delivered_at__isnull=True,
            created_at__lte=cutoff,
        )
        .exclude(Exists(sent))
        .order_by("pk")
    )


def _purge_one(pk: int, device_id: int | None, candidates: QuerySet[Identity], days: int) -> bool:
    with transaction.atomic():
        if device_id is not None and _try_lock_device(device_id) is None:
            return False
        identity = (
            candidates.select_for_update(of=("self",)).select_related("certificate").filter(pk=pk)
        ).first()
        if identity is None:  # delivered or purged meanwhile
            return False
        certificate = identity.certificate
        record_event(
            action=AuditAction.DELETE,
            obj=identity,
            message=f"server-generated identity not delivered within {days} days: key deleted",
        )
        identity.delete()
        Certificate.objects.filter(pk=certificate.pk).update(
            pending_revocation_cause=RevocationCause.UNDELIVERED
        )
        # Revoked already for another cause: the key is gone all the same.
        with contextlib.suppress(AlreadyRevoked):
            revoke_certificate(
                certificate=certificate, reason=RevocationReason.CESSATION_OF_OPERATION
            )
    return True


def _try_lock_device(device_id: int) -> Device | None:
    """The device row locked, or None if another transaction holds it. For work that may
    wait for the next run, and for callers holding other locks already (the renewal
    sweep holds the certificate's): they must not wait for a check-in, which locks the
    device first."""
    return (
        Device.objects.select_for_update(of=("self",), skip_locked=True)
        .select_related("owner")
        .filter(pk=device_id)
        .first()
    )


# --- renewal ------------------------------------------------------------------------------


def renew_identity(certificate: Certificate) -> bool:
    """Renew the server-generated identity of ``certificate``: generate its replacement
    (which ``replaces`` it, so ``sign_and_record`` supersedes it), make that the current
    identity and redeliver the device's profiles that carry the template's PKCS#12
    payload. True when renewed. False when there is nothing to renew (no current identity
    of an active certificate, renewed already, device no longer enrolled), when the device
    is busy (a check-in holds it: the next sweep renews it), or when the replacement
    cannot be issued (logged and audited); then nothing changed."""
    from apps.profiles.delivery import redeliver  # imported here: delivery imports this module

    if certificate.template is not None and certificate.template.uses_external_ca:
        return _renew_external(certificate)
    try:
        with transaction.atomic():
            old = _renewable(certificate)
            if old is None:
                return False
            _retire(old)
            new = _generate(
                device=old.device,
                template=old.template,
                profile=old.certificate.profile,
                now=timezone.now(),
                replaces=old.certificate,
            )
            for profile in carrying_profiles(device=new.device, template=new.template):
                redeliver(new.device, profile=profile)
    except IdentityNotIssued as exc:
        logger.warning("identity of certificate %s not renewed: %s", certificate.pk, exc)
        if certificate.template is not None:
            record_refusal(template=certificate.template, reason=f"renewal: {exc}")
        return False
    return True


def _renewable(certificate: Certificate) -> Identity | None:
    """The certificate's current identity, locked with its device, if it is to be renewed."""
    row = Identity.objects.filter(certificate=certificate).values("device_id").first()
    if row is None or row["device_id"] is None:
        return None
    device = _try_lock_device(row["device_id"])
    if device is None:
        logger.info("certificate %s: device busy, renewal left to the next sweep", certificate.pk)
        return None
    identity = (
        Identity.objects.select_for_update(of=("self",))
        .select_related("certificate__profile", "template__ca")
        .filter(certificate=certificate, current=True, template__isnull=False)
        .first()
    )
    if (
        identity is None
        or device.status != DeviceStatus.ENROLLED
        or identity.certificate.status != CertificateStatus.ACTIVE
        or Certificate.objects.filter(replaces=identity.certificate).exists()
    ):
        return None
    identity.device = device
    return identity


# --- external SCEP CAs ---------------------------------------------------------------------
#
# Server-side delivery from an external SCEP CA: mdmcerts generates the key, enrolls with
# the CA as a SCEP client and keeps the identity like any other. Only the sweeps enroll
# (early generation, renewal): a delivery never waits for an external CA, it fails with
# where the enrollment stands and the next check-in after the sweep carries the identity.
# The ``ExternalEnrollment`` row (key and transactionID) is committed before the request
# leaves, and no lock is held while the CA is asked, except the device's lock the renewal
# sweep holds (bounded by the CA server's timeout and retries).


def _ensure_external(
    *,
    device: Device,
    template: CertificateTemplate,
    profile: Profile | None,
    now: datetime.datetime | None = None,
    enroll: bool = True,
) -> tuple[Identity, bool]:
    """The current identity for an external CA template, enrolled now when ``enroll``."""
    now = now or timezone.now()
    with transaction.atomic():
        _lock_device(device)
        identity = _current(device, template)
        if identity is not None and _deliverable(identity, now):
            return identity, False
        if not enroll:
            raise _not_issued_yet(device, template)
        pending = _claim_enrollment(device=device, template=template, profile=profile)
    certificate = _enroll_upstream(pending)
    with transaction.atomic():
        _lock_device(device)
        identity = _current(device, template)
        if identity is not None and _deliverable(identity, now):
            return identity, False  # another run recorded this very enrollment
        if identity is not None:
            _retire(identity)
        return _record_external(pending, certificate, now=now), True


def _renew_external(certificate: Certificate) -> bool:
    """``renew_identity`` for an external CA: enroll the replacement, then swap it in."""
    from apps.profiles.delivery import redeliver  # imported here: delivery imports this module

    with transaction.atomic():
        old = _renewable(certificate)
        if old is None:
            return False
        pending = _claim_enrollment(
            device=old.device,
            template=old.template,
            profile=old.certificate.profile,
            replaces=old.certificate,
        )
    try:
        issued = _enroll_upstream(pending)
    except IdentityNotIssued as exc:
        logger.warning("identity of certificate %s not renewed: %s", certificate.pk, exc)
        return False
    with transaction.atomic():
        old = _renewable(certificate)
        if old is None:
            return False
        _retire(old)
        new = _record_external(pending, issued, now=timezone.now())
        for profile in carrying_profiles(device=new.device, template=new.template):
            redeliver(new.device, profile=profile)
    return True


def _not_issued_yet(device: Device, template: CertificateTemplate) -> IdentityNotIssued:
    """Where the device's enrollment with the template's external CA stands, for a
    delivery that cannot carry the identity yet: ``IdentityNotRequested`` when it was
    never started (one started is retried by the sweep, not at every check-in)."""
    ca = template.ca
    row = ExternalEnrollment.objects.filter(device=device, template=template).first()
    if row is None:
        return IdentityNotRequested(
            f"the identity is requested from external CA server {ca} by the next generation"
        )
    if row.last_error:
        state = f"enrollment with external CA server {ca} failed, retried later: {row.last_error}"
    elif row.pending_since is not None:
        state = f"external CA server {ca} has the request pending since {row.pending_since:%c}"
    else:
        state = f"enrollment with external CA server {ca} is in progress"
    return IdentityNotIssued(state)


def _claim_enrollment(
    *,
    device: Device,
    template: CertificateTemplate,
    profile: Profile | None,
    replaces: Certificate | None = None,
) -> ExternalEnrollment:
    """The device's unfinished enrollment for ``template``, or a new one with a fresh key
    and transactionID. Call with the device row locked."""
    existing = ExternalEnrollment.objects.filter(device=device, template=template).first()
    if existing is not None:
        return existing
    key = crypto.generate_private_key(template.key_algorithm)
    row = ExternalEnrollment(
        device=device,
        template=template,
        profile=profile,
        replaces=replaces,
        transaction_id=client.transaction_id_for(key.public_key()),
        csr_der=b"",
        private_key=secrets.encrypt(crypto.private_key_der(key), context=EXTERNAL_KEY_CONTEXT),
    )
    row.save(force_insert=True)
    return row


def _enroll_upstream(row: ExternalEnrollment) -> x509.Certificate:
    """Ask the external CA (PKCSReq while unanswered, CertPoll once PENDING). The
    certificate, or ``IdentityNotIssued`` (still pending, refused, CA unreachable); a
    refusal ends the enrollment, anything else leaves it for the next sweep. Each outcome
    is saved on the row and every failure audited."""
    template = row.template
    key = _load_enrollment_key(row)
    row.attempts += 1
    row.last_attempt_at = timezone.now()
    try:
        certificate = _ask_upstream(row, key)
    except EnrollmentRefused as exc:
        row.delete()
        return _enrollment_failed(template, row, str(exc))
    except (UpstreamError, VariableValueMissing, TemplateRequestError) as exc:
        row.last_error = str(exc)[:500]
        row.save()
        return _enrollment_failed(template, row, str(exc))
    if certificate is None:
        row.pending_since = row.pending_since or row.last_attempt_at
        row.last_error = ""
        row.save()
        raise IdentityNotIssued(
            f"external CA server {template.ca} has the request pending; "
            "the next generation sweep polls it again"
        )
    return certificate


def _ask_upstream(row: ExternalEnrollment, key: crypto.PrivateKey) -> x509.Certificate | None:
    template = row.template
    upstream = upstream_for(template.ca)
    if row.pending_since is not None:
        csr = x509.load_der_x509_csr(bytes(row.csr_der))
        return upstream.poll(PendingRequest(key, csr, row.transaction_id))
    spec = build_issuance_spec(
        template=template, public_key=key.public_key(), values=values_for(device=row.device)
    )
    csr = client.certificate_request(
        key=key,
        subject=spec.subject,
        sans=spec.sans,
        challenge_password=upstream.challenge(),  # an NDES one is fetched just now
        extensions=_requested_extensions(spec),
    )
    row.csr_der = csr.public_bytes(serialization.Encoding.DER)
    row.save(update_fields=["csr_der"])  # CertPoll names its subject, even after a crash
    return upstream.enroll(PendingRequest(key, csr, row.transaction_id))


def _requested_extensions(spec) -> tuple[tuple[x509.ExtensionType, bool], ...]:
    """Key usage and EKUs the template wants; the external CA's own template decides."""
    extensions = []
    if spec.digital_signature or spec.key_encipherment:
        usage = crypto.key_usage(
            digital_signature=spec.digital_signature, key_encipherment=spec.key_encipherment
        )
        extensions.append((usage, True))
    if spec.extended_key_usages:
        extensions.append((x509.ExtendedKeyUsage(list(spec.extended_key_usages)), False))
    return tuple(extensions)


def _enrollment_failed(template: CertificateTemplate, row: ExternalEnrollment, reason: str):
    message = f"server-side enrollment for device {row.device_id}: {reason}"
    record_refusal(template=template, reason=message)
    raise IdentityNotIssued(message)


def _load_enrollment_key(row: ExternalEnrollment) -> crypto.PrivateKey:
    der = secrets.decrypt(row.private_key, context=EXTERNAL_KEY_CONTEXT)
    return serialization.load_der_private_key(der, password=None)


def _record_external(
    row: ExternalEnrollment, issued: x509.Certificate, *, now: datetime.datetime
) -> Identity:
    """The certificate the external CA issued, recorded as ``sign_and_record`` records a
    local one (superseding its predecessor), and the identity holding it. The enrollment
    row goes: its key now lives in the identity. Call with the device row locked."""
    template, device = row.template, row.device
    previous = row.replaces or renewal_predecessor(
        template=template, device=device, profile=row.profile
    )
    certificate = record_certificate(
        cert=issued,
        template=template,
        source=CertificateSource.SERVER_GENERATED,
        user=device.owner,
        device=device,
        replaces=previous,
        profile=row.profile,
    )
    if previous is not None:
        supersede(certificate=previous)
    record_event(
        action=AuditAction.ISSUE,
        obj=certificate,
        message=f"issued by external CA server {template.ca} (SCEP transaction "
        f"{row.transaction_id}) from template {template}",
    )
    identity = Identity(
        certificate=certificate,
        template=template,
        device=device,
        chain_pem=_external_chain_pem(template.ca),
        current=True,
        created_at=now,
    )
    store_key(identity, _load_enrollment_key(row))
    identity.save()
    row.delete()
    return identity


def _external_chain_pem(ca) -> str:
    """The issuing CA and the CA certificates above it (not GetCACert's RA certificates)."""
    return "".join(crypto.cert_pem(c) for c in ca.chain() if _is_ca_certificate(c))


def _is_ca_certificate(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def carrying_profiles(*, device: Device, template: CertificateTemplate) -> QuerySet[Profile]:
    """The profiles delivered to ``device`` with a PKCS#12 payload of ``template``."""
    return Profile.objects.filter(
        deliveries__device=device,
        payloads__kind=PayloadKind.PKCS12,
        payloads__template=template,
    ).distinct()


# --- delivery -----------------------------------------------------------------------------


def new_password() -> str:
    """A fresh random password for one delivery of one PKCS#12."""
    return token_secrets.token_urlsafe(PASSWORD_BYTES)


def pkcs12_bundle(identity: Identity, *, password: str, for_apple: bool) -> bytes:
    """The identity as a PKCS#12 protected by ``password``, built in memory for one
    response.

    Apple devices get the leaf alone (their payload holds one certificate; the chain comes
    with trusted-certificate payloads), under pbeWithSHAAnd3-KeyTripleDES-CBC with a
    SHA-1 MAC: the encryption every iOS and macOS version imports, where AES-256/PBKDF2
    files fail on many of them (SecPKCS12Import "wrong password"). Everyone else gets the
    leaf and its issuers under PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) with an HMAC-SHA256
    MAC. Either way the password travels beside the file, so the check-in's TLS, not the
    PBE, is what protects the key in transit.
    """
    key = load_key(identity)
    chain = [] if for_apple else _issuers(identity)
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if for_apple:
        builder = (
            builder.kdf_rounds(LEGACY_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 (what Apple devices verify)
        )
    else:
        builder = (
            builder.kdf_rounds(PBKDF2_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
        )
    return pkcs12.serialize_key_and_certificates(
        name=FRIENDLY_NAME,
        key=key,
        cert=identity.certificate.certificate,
        cas=chain or None,
        encryption_algorithm=builder.build(password.encode()),
    )


def _issuers(identity: Identity) -> list[x509.Certificate]:
    if not identity.chain_pem:
        return []
    return x509.load_pem_x509_certificates(identity.chain_pem.encode())


def mark_delivered(identities: QuerySet[Identity], *, now: datetime.datetime) -> int:
    """The device acknowledged installing these identities; returns how many changed."""
    return identities.filter(delivered_at__isnull=True).update(delivered_at=now)
