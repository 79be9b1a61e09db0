"""Issuing, recording and revoking certificates, and their lifecycle: renewal, revocation
with grace periods, expiry and the expiry digest (the sweeps the Celery tasks run)."""

import datetime
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from asn1crypto.core import UTF8String
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Cast
from django.db.models.lookups import LessThanOrEqual
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.models import AuditEvent
from apps.audit.services import build_event, record_event
from apps.certificates.choices import CertificateSource, CertificateStatus, RevocationCause
from apps.certificates.models import Certificate, CertificateRequest, LifecycleSettings
from apps.devices.choices import DeviceStatus
from apps.enrollment.choices import KeyGeneration
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.rendering import (
    UPN_OID,
    RequestedNames,
    TemplateRequestError,
    build_issuance_spec,
    check_request,
)
from apps.enrollment.variables import VariableValueMissing, values_for
from apps.pki import crypto
from apps.pki.backends import IssuanceError, backend_for
from apps.pki.choices import CAKind, RevocationReason
from apps.pki.models import CertificateAuthority, CertificateRevocationList
from apps.pki.revocation import publish_crl, publish_due_crls, published_crl
from apps.profiles.choices import DeliveryStatus
from apps.profiles.models import Delivery, ProfileAssignment

logger = logging.getLogger(__name__)
SERIAL_ATTEMPTS = 3
REVOKE_AT_CA_NOTE = (
    "{ca} is an external SCEP CA, which cannot be asked to revoke over SCEP: revoke it "
    "there, then mark it revoked at the CA (Certificates to revoke at the CA)"
)


class AlreadyRevoked(Exception):
    """The certificate is revoked already; revocation happens once."""


class IssuanceRefused(Exception):
    """The certificate was not issued; ``str()`` is a reason safe to show and to audit."""


def describe_sans(cert: x509.Certificate) -> str:
    """SANs as lines of ``TYPE:value`` (email, DNS, URI, UPN, IP, other)."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    lines = []
    for name in names:
        if isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
            lines.append(f"UPN:{UTF8String.load(name.value).native}")
        elif isinstance(name, x509.OtherName):
            lines.append(f"othername:{name.type_id.dotted_string}")
        else:
            label = {
                x509.RFC822Name: "email",
                x509.DNSName: "DNS",
                x509.UniformResourceIdentifier: "URI",
                x509.IPAddress: "IP",
            }.get(type(name))
            lines.append(f"{label or type(name).__name__}:{name.value}")
    return "\n".join(lines)


def record_certificate(**fields) -> Certificate:
    """Insert the inventory row for a certificate the caller just obtained (the arguments
    of ``certificate_row``)."""
    row = certificate_row(**fields)
    row.save(force_insert=True)
    return row


def certificate_row(
    *,
    cert: x509.Certificate,
    template: CertificateTemplate | None,
    source: str,
    user=None,
    device=None,
    replaces: Certificate | None = None,
    profile=None,
    ca: CertificateAuthority | None = None,
) -> Certificate:
    """The inventory row for ``cert``, not saved. Its CA server is the template's, or
    ``ca`` without a template (single file identities; none for user-provided ones)."""
    return Certificate(
        ca=template.ca if template is not None else ca,
        template=template,
        serial=crypto.serial_hex(cert),
        subject=crypto.format_name(cert.subject),
        subject_alt_names=describe_sans(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=crypto.fingerprint_sha256(cert),
        certificate_pem=crypto.cert_pem(cert),
        source=source,
        user=user,
        device=device,
        replaces=replaces,
        profile=profile,
    )


REFUSALS = (VariableValueMissing, TemplateRequestError, IssuanceError)


def check_csr(
    csr: x509.CertificateSigningRequest, template: CertificateTemplate, values: Mapping[str, str]
) -> RequestedNames:
    """Proof of possession and the template's request policy; ``IssuanceRefused`` if not."""
    if not csr.is_signature_valid:
        raise IssuanceRefused("the request's signature does not verify (proof of possession)")
    try:
        return check_request(template, csr, values)
    except REFUSALS as exc:
        raise IssuanceRefused(str(exc)) from exc


def sign_and_record(
    *,
    template: CertificateTemplate,
    public_key,
    values: Mapping[str, str],
    requested: RequestedNames | None,
    source: str,
    user=None,
    device=None,
    replaces: Certificate | None = None,
    actor=None,
    request=None,
    profile=None,
) -> Certificate:
    """Sign as the template says and record the row and its audit event (in the caller's
    transaction, if any). Refusals are ``IssuanceRefused``.

    The certificate it ``replaces`` (a RenewalReq's), or else the device's certificate of
    the same template and profile whose renewal the sweep re-triggered, is superseded: it
    is revoked when its grace period ends (``supersede``)."""
    try:
        spec = build_issuance_spec(
            template=template, public_key=public_key, values=values, requested=requested
        )
        backend = backend_for(template.ca)
        for attempt in range(SERIAL_ATTEMPTS):
            cert = backend.issue(spec)
            try:
                with transaction.atomic():
                    previous = replaces or renewal_predecessor(
                        template=template, device=device, profile=profile
                    )
                    row = record_certificate(
                        cert=cert,
                        template=template,
                        source=source,
                        user=user,
                        device=device,
                        replaces=previous,
                        profile=profile,
                    )
                    if previous is not None:
                        supersede(certificate=previous)
                    record_event(
                        action=AuditAction.ISSUE,
                        obj=row,
                        actor=actor,
                        request=request,
                        message=f"issued by {template.ca} from template {template}",
                    )
                    return row
            except IntegrityError:
                # A random 159-bit serial collided with one already issued by this CA.
                logger.warning(
                    "serial collision on CA %s (attempt %d)", template.ca.pk, attempt + 1
                )
    except REFUSALS as exc:
        raise IssuanceRefused(str(exc)) from exc
    raise IssuanceRefused("no unique serial number could be assigned")


def record_refusal(*, template: CertificateTemplate, reason: str, actor=None, request=None) -> None:
    """The audit event of a refused enrollment: the only trace it leaves (with counters)."""
    record_event(
        action=AuditAction.ISSUE_FAILED, obj=template, actor=actor, request=request, message=reason
    )


def issue_certificate(
    csr: x509.CertificateSigningRequest,
    template: CertificateTemplate,
    context: Mapping[str, str],
    *,
    user=None,
    device=None,
    source: str = CertificateSource.SCEP,
    actor=None,
    request=None,
) -> Certificate:
    """Issue a certificate for ``csr`` as ``template`` says, record it and audit it.

    ``context`` holds the lookup-variable values for the device and user. Every refusal is
    an ``IssuanceRefused`` with a reason, recorded as an audit event; nothing else changes.
    """
    try:
        requested = check_csr(csr, template, context)
        return sign_and_record(
            template=template,
            public_key=csr.public_key(),
            values=context,
            requested=requested,
            source=source,
            user=user,
            device=device,
            actor=actor,
            request=request,
        )
    except IssuanceRefused as refusal:
        record_refusal(template=template, reason=str(refusal), actor=actor, request=request)
        raise


def revoke_certificate(
    *,
    certificate: Certificate,
    reason: str = RevocationReason.UNSPECIFIED,
    actor=None,
    request=None,
) -> Certificate:
    """Revoke now with an RFC 5280 reason. Revoking twice raises ``AlreadyRevoked``.

    A certificate of an external SCEP CA is revoked in mdmcerts only (SCEP cannot ask a
    CA to revoke): it joins the "revoke at the CA" list for an administrator to revoke it
    there (``mark_revoked_at_ca``)."""
    if reason not in RevocationReason.values:
        raise ValidationError({"reason": f"Unknown revocation reason {reason!r}."})
    with transaction.atomic():
        row = Certificate.objects.select_for_update(of=("self",)).select_related("ca")
        row = row.get(pk=certificate.pk)
        if row.status == CertificateStatus.REVOKED:
            raise AlreadyRevoked(f"Certificate {row.serial} is already revoked.")
        before = row.status
        row.status = CertificateStatus.REVOKED
        row.revoked_at = timezone.now()
        row.revocation_reason = reason
        changes = {"status": [before, row.status], "revocation_reason": ["", reason]}
        fields = ["status", "revoked_at", "revocation_reason"]
        external = row.ca is not None and row.ca.kind == CAKind.SCEP
        if external:
            row.revoke_at_ca_requested_at = row.revoked_at
            changes["revoke_at_ca_requested_at"] = [None, str(row.revoked_at)]
            fields.append("revoke_at_ca_requested_at")
        row.save(update_fields=fields)
        record_event(
            action=AuditAction.REVOKE,
            obj=row,
            actor=actor,
            request=request,
            changes=changes,
            message=REVOKE_AT_CA_NOTE.format(ca=row.ca) if external else "",
        )
        # After commit, so the revocation's transaction does not wait for the CRL signature;
        # robust: the revocation stands if signing fails (logged); the next publication covers it.
        # Only a local CA has a CRL of ours: not an external SCEP CA (revoked there by an
        # administrator), not a certificate mdmcerts was given (uploaded).
        if row.ca is not None and row.ca.kind == CAKind.LOCAL:
            transaction.on_commit(lambda: publish_crl(row.ca), robust=True)
    return row


def mark_revoked_at_ca(
    *, certificates: QuerySet[Certificate], actor=None, request: HttpRequest | None = None
) -> int:
    """An administrator revoked these certificates at their external CA: those on the
    "revoke at the CA" list leave it, audited; the others stay as they are. Returns how
    many."""
    now = timezone.now()
    todo = certificates.filter(
        revoke_at_ca_requested_at__isnull=False, revoke_at_ca_done_at__isnull=True
    )
    marked = 0
    while True:
        with transaction.atomic():
            rows = _lock_batch(todo, "ca__name")
            if not rows:
                return marked
            Certificate.objects.filter(pk__in=_ids(rows)).update(revoke_at_ca_done_at=now)
            for ca_name, group in _grouped(rows).items():
                _record_certificate_events(
                    group,
                    action=AuditAction.UPDATE,
                    changes={"revoke_at_ca_done_at": [None, str(now)]},
                    message=f"marked revoked at the CA server {ca_name}",
                    actor=actor,
                    request=request,
                )
        marked += len(rows)


def current_crl(ca) -> bytes:
    """The CA's published CRL (DER), as the CRL URL serves it; one is published first if
    there is none yet or it is past its nextUpdate."""
    return bytes(published_crl(ca).der)


class RequestNotPending(Exception):
    """The request was decided already."""


def approve_request(*, certificate_request, actor=None, request=None) -> Certificate:
    """Issue the certificate a pending request asked for; its CertPoll then gets it.

    A refusal at this point (a variable lost its value, the CA expired) rejects the
    request with that reason instead.
    """
    with transaction.atomic():
        row = _lock_pending(certificate_request)
        public_key = serialization.load_der_public_key(bytes(row.public_key_der))
        values = values_for(user=row.user, device=row.device)
        try:
            certificate = sign_and_record(
                template=row.template,
                public_key=public_key,
                values=values,
                requested=row.requested_names,
                source=CertificateSource.SCEP,
                user=row.user,
                device=row.device,
                profile=row.profile,
                actor=actor,
                request=request,
            )
        except IssuanceRefused as refusal:
            _decide(row, CertificateRequest.Status.REJECTED, actor, reason=str(refusal))
            record_refusal(template=row.template, reason=str(refusal), actor=actor, request=request)
            failure = refusal
        else:
            row.certificate = certificate
            _decide(row, CertificateRequest.Status.ISSUED, actor)
            return certificate
    raise failure


def reject_request(*, certificate_request, reason: str = "", actor=None, request=None) -> None:
    """Refuse a pending request; its CertPoll then gets FAILURE."""
    with transaction.atomic():
        row = _lock_pending(certificate_request)
        _decide(
            row,
            CertificateRequest.Status.REJECTED,
            actor,
            reason=reason or "rejected by an administrator",
        )
        record_event(
            action=AuditAction.ISSUE_FAILED,
            obj=row,
            actor=actor,
            request=request,
            message=row.reason,
        )


def _lock_pending(certificate_request) -> CertificateRequest:
    # Only the request row is locked: PostgreSQL cannot lock the nullable side of the outer
    # joins that fetch its user and device.
    row = (
        CertificateRequest.objects.select_for_update(of=("self",))
        .select_related("template__ca", "user", "device")
        .get(pk=certificate_request.pk)
    )
    if row.status != CertificateRequest.Status.PENDING:
        raise RequestNotPending(f"{row} was decided already")
    return row


def _decide(row: CertificateRequest, status: str, actor, reason: str = "") -> None:
    row.status, row.reason = status, reason
    row.decided_at, row.decided_by = timezone.now(), actor
    row.save()


# --- lifecycle: renewal, revocation with grace periods, expiry, digest ---------------------
#
# The sweeps run from Celery beat (``tasks.py``) and from ``manage.py lifecycle run``. Each
# claims its rows in batches (SELECT ... FOR UPDATE SKIP LOCKED, then an UPDATE of exactly
# those rows in the same transaction), so runs at the same time share the work and none
# repeats another's; and each is keyed on the rows' state, so a rerun finds nothing left.

LIFECYCLE_BATCH = 1000
DAY = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)
# A superseded certificate keeps that status (the SCEP renewal sets it) while its grace
# period runs; every other cause makes it "pending revocation".
GRACE_STATUSES = (CertificateStatus.PENDING_REVOCATION, CertificateStatus.SUPERSEDED)
EXPIRING_STATUSES = (CertificateStatus.ACTIVE, *GRACE_STATUSES)
WITHDRAWN_DELIVERIES = (DeliveryStatus.REMOVAL_PENDING, DeliveryStatus.REMOVED)
RENEWABLE_SOURCES = {
    KeyGeneration.DEVICE: CertificateSource.SCEP,
    KeyGeneration.SERVER: CertificateSource.SERVER_GENERATED,
}
DEVICE_CAUSES = {
    DeviceStatus.UNENROLLED: RevocationCause.UNENROLLED,
    DeviceStatus.WIPED: RevocationCause.WIPED,
    DeviceStatus.RETIRED: RevocationCause.RETIRED,
}
# RFC 5280 reason published when a grace period ends; every other cause means the device
# or the purpose went away: cessationOfOperation.
CAUSE_REASONS = {
    RevocationCause.SUPERSEDED: RevocationReason.SUPERSEDED,
    RevocationCause.OWNER_DEACTIVATED: RevocationReason.AFFILIATION_CHANGED,
}
DIGEST_KEY = "expiry digest of {day}"
# Certificates mdmcerts was given with their key rather than issued: no CA of ours revokes
# or renews them.
GIVEN_SOURCES = (CertificateSource.USER_PROVIDED, CertificateSource.SINGLE_FILE)

CertificateRow = tuple  # (pk, subject, serial, *fields) from ``_lock_batch``


def lifecycle_settings() -> LifecycleSettings:
    """The lifecycle settings row (``LifecycleSettings.load``)."""
    return LifecycleSettings.load()


def revocation_reason_for(cause: str) -> str:
    """The RFC 5280 reason of a revocation that ends a grace period started for ``cause``."""
    return CAUSE_REASONS.get(cause, RevocationReason.CESSATION_OF_OPERATION)


def _lock_batch(
    certificates: QuerySet[Certificate], *fields: str, skip_locked: bool = False
) -> list[CertificateRow]:
    """Up to ``LIFECYCLE_BATCH`` rows of ``certificates`` as (pk, subject, serial, *fields),
    locked until the end of the transaction. With ``skip_locked`` rows another run holds are
    left to it; without, this waits for them."""
    _no_jit()
    return list(
        certificates.select_for_update(skip_locked=skip_locked, of=("self",))
        .order_by("pk")
        .values_list("pk", "subject", "serial", *fields)[:LIFECYCLE_BATCH]
    )


def _no_jit() -> None:
    """PostgreSQL's JIT compiles a sweep's batch query (its estimated cost passes
    ``jit_above_cost`` on large inventories) at every batch, for more time than the query
    then saves: off for the rest of this transaction."""
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")


def _record_certificate_events(
    rows: Iterable[CertificateRow],
    *,
    action: str,
    changes: dict,
    message: str,
    actor=None,
    request: HttpRequest | None = None,
) -> None:
    """``record_event`` for many certificates in one INSERT (a sweep touches thousands)."""
    events = [
        build_event(
            action=action,
            obj=Certificate(pk=pk, subject=subject, serial=serial),
            actor=actor,
            request=request,
            changes=changes,
            message=message,
        )
        for pk, subject, serial, *_ in rows
    ]
    AuditEvent.objects.bulk_create(events, batch_size=LIFECYCLE_BATCH)


def _ids(rows: Iterable[CertificateRow]) -> list[int]:
    return [row[0] for row in rows]


def _grouped(rows: Iterable[CertificateRow]) -> dict[Any, list[CertificateRow]]:
    """``rows`` grouped by their first field after (pk, subject, serial)."""
    groups: dict[Any, list[CertificateRow]] = defaultdict(list)
    for row in rows:
        groups[row[3]].append(row)
    return groups


# --- pending revocation ------------------------------------------------------------------


def start_pending_revocation(
    *,
    certificates: QuerySet[Certificate],
    cause: str,
    now: datetime.datetime | None = None,
    actor=None,
    request: HttpRequest | None = None,
) -> int:
    """Start the grace period of every active certificate among ``certificates`` for
    ``cause``: revocation is due after the template's grace period, or the global one
    (Lifecycle settings). Certificates not active (pending already, revoked, expired) stay
    as they are. Returns how many started."""
    now = now or timezone.now()
    status = (
        CertificateStatus.SUPERSEDED
        if cause == RevocationCause.SUPERSEDED
        else CertificateStatus.PENDING_REVOCATION
    )
    default_hours = lifecycle_settings().revocation_grace_hours
    label = RevocationCause(cause).label
    started = 0
    while True:
        with transaction.atomic():
            active = certificates.filter(status=CertificateStatus.ACTIVE)
            rows = _lock_batch(active, "template__revocation_grace_hours")
            if not rows:
                return started
            by_grace = defaultdict(list)
            for row in rows:
                by_grace[default_hours if row[3] is None else row[3]].append(row)
            for hours, group in by_grace.items():
                due = now + hours * HOUR
                Certificate.objects.filter(pk__in=_ids(group)).update(
                    status=status,
                    pending_revocation_cause=cause,
                    pending_revocation_since=now,
                    revoke_after=due,
                )
                _record_certificate_events(
                    group,
                    action=AuditAction.UPDATE,
                    changes={
                        "status": [CertificateStatus.ACTIVE, status],
                        "pending_revocation_cause": ["", cause],
                        "revoke_after": [None, str(due)],
                    },
                    message=f"pending revocation ({label}); due at {due:%Y-%m-%d %H:%M} UTC",
                    actor=actor,
                    request=request,
                )
            started += len(rows)


def cancel_pending_revocation(
    *,
    certificates: QuerySet[Certificate],
    causes: Iterable[str],
    now: datetime.datetime | None = None,
    actor=None,
    request: HttpRequest | None = None,
) -> int:
    """The cause cleared within the grace period: certificates among ``certificates``
    pending revocation for one of ``causes`` are active again. Returns how many."""
    cancelled = 0
    while True:
        with transaction.atomic():
            pending = certificates.filter(
                status=CertificateStatus.PENDING_REVOCATION, pending_revocation_cause__in=causes
            )
            rows = _lock_batch(pending, "pending_revocation_cause")
            if not rows:
                return cancelled
            Certificate.objects.filter(pk__in=_ids(rows)).update(
                status=CertificateStatus.ACTIVE,
                pending_revocation_cause="",
                pending_revocation_since=None,
                revoke_after=None,
            )
            for cause, group in _grouped(rows).items():
                _record_certificate_events(
                    group,
                    action=AuditAction.UPDATE,
                    changes={
                        "status": [CertificateStatus.PENDING_REVOCATION, CertificateStatus.ACTIVE],
                        "pending_revocation_cause": [cause, ""],
                    },
                    message=f"pending revocation cancelled: {RevocationCause(cause).label} "
                    "no longer holds",
                    actor=actor,
                    request=request,
                )
            cancelled += len(rows)


def renewal_predecessor(
    *, template: CertificateTemplate | None, device, profile
) -> Certificate | None:
    """The certificate a new enrollment of ``device`` for ``template`` and ``profile``
    renews: the active one whose renewal the sweep re-triggered. Locked, so that two
    enrollments at once do not both take it (the later one finds none)."""
    if template is None or device is None:
        return None
    return (
        Certificate.objects.select_for_update(of=("self",))
        .filter(
            device=device,
            template=template,
            profile=profile,
            status=CertificateStatus.ACTIVE,
            renewal_triggered_at__isnull=False,
        )
        .order_by("-not_after", "-pk")
        .first()
    )


def supersede(*, certificate: Certificate, now: datetime.datetime | None = None) -> int:
    """A renewal replaced ``certificate``: it is superseded, and revoked (or marked removed)
    once the grace period lets the device install its successor."""
    return start_pending_revocation(
        certificates=Certificate.objects.filter(pk=certificate.pk),
        cause=RevocationCause.SUPERSEDED,
        now=now,
    )


def device_certificates_gone(
    *, device, cause: str, actor=None, request: HttpRequest | None = None
) -> int:
    """The device was unenrolled, wiped, retired or is being deleted: the grace period of
    each of its active certificates starts."""
    return start_pending_revocation(
        certificates=Certificate.objects.filter(device=device),
        cause=cause,
        actor=actor,
        request=request,
    )


def inventory_reported(
    *, device, missing: Iterable[int], seen: Iterable[int], now: datetime.datetime | None = None
) -> None:
    """A device reported its installed certificates: its certificates it reported before
    and no longer does (``missing``) start their grace period; those it reports again
    (``seen``) that were pending for that reason are active again."""
    mine = Certificate.objects.filter(device=device)
    missing, seen = list(missing), list(seen)
    if missing:
        start_pending_revocation(
            certificates=mine.filter(pk__in=missing), cause=RevocationCause.MISSING, now=now
        )
    if seen:
        cancel_pending_revocation(
            certificates=mine.filter(pk__in=seen), causes=[RevocationCause.MISSING], now=now
        )


def _assigned_to_device() -> tuple[Exists, Exists]:
    """Whether a certificate's profile is assigned to its device directly, or to one of the
    device's groups (two tests, so that "neither" is two anti-joins)."""
    assignments = ProfileAssignment.objects.filter(profile=OuterRef("profile"))
    return (
        Exists(assignments.filter(device=OuterRef("device"))),
        Exists(assignments.filter(group__devices=OuterRef("device"))),
    )


def reconcile_assignments(
    *,
    profile=None,
    devices: Iterable | None = None,
    now: datetime.datetime | None = None,
    actor=None,
    request: HttpRequest | None = None,
) -> tuple[int, int]:
    """Certificates a profile brought to an enrolled device (all, or of ``profile`` or
    ``devices``): their grace period starts once the profile no longer targets the device
    (unassigned from it or its group, the device left the group), and it is cancelled when
    the profile targets it again. Returns (started, cancelled)."""
    scope = Certificate.objects.filter(profile__isnull=False, device__status=DeviceStatus.ENROLLED)
    if profile is not None:
        scope = scope.filter(profile=profile)
    if devices is not None:
        scope = scope.filter(device__in=list(devices))
    direct, grouped = _assigned_to_device()
    common = {"now": now, "actor": actor, "request": request}
    started = start_pending_revocation(
        certificates=scope.filter(~direct, ~grouped), cause=RevocationCause.UNASSIGNED, **common
    )
    cancelled = cancel_pending_revocation(
        certificates=scope.filter(direct | grouped), causes=[RevocationCause.UNASSIGNED], **common
    )
    return started, cancelled


def detect_revocation_causes(*, now: datetime.datetime | None = None) -> tuple[int, int]:
    """Start or cancel the pending revocations whose cause no service call saw: a device's
    status changed (unenrolled, wiped, retired), an owner was deactivated or reactivated
    (Django's user admin), group members or assignments changed in the console.
    Returns (started, cancelled)."""
    started = sum(
        start_pending_revocation(
            certificates=Certificate.objects.filter(device__status=status), cause=cause, now=now
        )
        for status, cause in DEVICE_CAUSES.items()
    )
    started += start_pending_revocation(
        certificates=Certificate.objects.filter(user__is_active=False),
        cause=RevocationCause.OWNER_DEACTIVATED,
        now=now,
    )
    cancelled = cancel_pending_revocation(
        certificates=Certificate.objects.filter(user__is_active=True).filter(
            Q(device__isnull=True) | Q(device__status=DeviceStatus.ENROLLED)
        ),
        causes=[RevocationCause.OWNER_DEACTIVATED],
        now=now,
    )
    more_started, more_cancelled = reconcile_assignments(now=now)
    return started + more_started, cancelled + more_cancelled


# --- sweeps ------------------------------------------------------------------------------


def sweep_revocations(now: datetime.datetime | None = None) -> dict[str, int]:
    """Detect causes that came or went (``detect_revocation_causes``), then end every grace
    period that is over: the certificate is revoked with the RFC 5280 reason of its cause
    when its template has revocation enabled, else only marked removed. Each CA whose CRL
    lacks a revocation publishes once, after the sweep. A certificate of an external SCEP
    CA goes on the "revoke at the CA" list instead; no CRL of mdmcerts changes for it."""
    now = now or timezone.now()
    started, cancelled = detect_revocation_causes(now=now)
    due = Certificate.objects.filter(
        status__in=GRACE_STATUSES, revoke_after__lte=now, not_after__gt=now
    )
    revoked = removed = 0
    while True:
        with transaction.atomic():
            rows = _lock_batch(
                due,
                "status",
                "pending_revocation_cause",
                "template__revocation_enabled",
                "ca",
                "source",
                skip_locked=True,
            )
            if not rows:
                break
            batch_revoked, batch_removed = _end_grace_periods(rows, now)
        revoked, removed = revoked + batch_revoked, removed + batch_removed
    return {
        "revocations started": started,
        "pending revocations cancelled": cancelled,
        "revoked": revoked,
        "removed": removed,
        "CRLs published": publish_stale_crls(),
    }


def _end_grace_periods(rows: list[CertificateRow], now: datetime.datetime) -> tuple[int, int]:
    """Revoke (or mark removed) locked rows of (pk, subject, serial, status, cause,
    revocation enabled, CA server id, source); a certificate whose template is gone is
    revoked, one that mdmcerts was given (uploaded) is marked removed: no CA of ours can
    revoke it."""
    external_cas = set(
        CertificateAuthority.objects.filter(kind=CAKind.SCEP).values_list("pk", flat=True)
    )
    groups = defaultdict(list)
    for row in rows:
        revoke = row[5] is not False and row[7] not in GIVEN_SOURCES
        groups[(row[3], row[4], revoke, row[6] in external_cas)].append(row)
    revoked = removed = 0
    for (before, cause, revoke, external), group in groups.items():
        label = RevocationCause(cause).label if cause else "unknown cause"
        if revoke:
            _revoke_ended(
                group, before=before, cause=cause, label=label, now=now, external=external
            )
            revoked += len(group)
        else:
            Certificate.objects.filter(pk__in=_ids(group)).update(
                status=CertificateStatus.REMOVED, removed_at=now
            )
            _record_certificate_events(
                group,
                action=AuditAction.UPDATE,
                changes={"status": [before, CertificateStatus.REMOVED]},
                message=f"grace period over ({label}): marked removed, "
                "the template does not revoke",
            )
            removed += len(group)
    return revoked, removed


def _revoke_ended(
    group: list[CertificateRow],
    *,
    before: str,
    cause: str,
    label: str,
    now: datetime.datetime,
    external: bool,
) -> None:
    """Revoke certificates whose grace period ended. Those of an external SCEP CA are
    revoked in mdmcerts and put on the "revoke at the CA" list: SCEP cannot ask the CA to
    revoke (the profile that installed them is removed from the device meanwhile)."""
    reason = revocation_reason_for(cause)
    fields = {"status": CertificateStatus.REVOKED, "revoked_at": now, "revocation_reason": reason}
    changes = {"status": [before, CertificateStatus.REVOKED], "revocation_reason": ["", reason]}
    message = f"grace period over ({label}): revoked"
    if external:
        fields["revoke_at_ca_requested_at"] = now
        changes["revoke_at_ca_requested_at"] = [None, str(now)]
        message += " in mdmcerts; to be revoked at its external CA by an administrator"
    Certificate.objects.filter(pk__in=_ids(group)).update(**fields)
    _record_certificate_events(group, action=AuditAction.REVOKE, changes=changes, message=message)


def publish_stale_crls() -> int:
    """Publish a CRL for every local CA whose published CRL lacks some of its revoked
    certificates (or that has none yet while it revoked some). Keyed on the counts, so
    a sweep that died before publishing is made good by the next one. Returns how many."""
    revoked = dict(
        Certificate.objects.filter(status=CertificateStatus.REVOKED)
        .values_list("ca")
        .annotate(count=Count("pk"))
        .order_by()
    )
    published = dict(CertificateRevocationList.objects.values_list("ca", "revoked_count"))
    stale = [pk for pk, count in revoked.items() if published.get(pk) != count]
    cas = CertificateAuthority.objects.filter(pk__in=stale, kind=CAKind.LOCAL).exclude(
        private_key=""
    )
    count = 0
    for ca in cas.order_by("pk"):
        publish_crl(ca)
        count += 1
    return count


def sweep_crls(now: datetime.datetime | None = None) -> dict[str, int]:
    """Republish every local CA's CRL that reaches its nextUpdate soon."""
    return {"CRLs published": len(publish_due_crls(now))}


def sweep_expired(now: datetime.datetime | None = None) -> dict[str, int]:
    """Mark expired every certificate past its notAfter that is active, pending revocation
    or superseded."""
    now = now or timezone.now()
    past = Certificate.objects.filter(status__in=EXPIRING_STATUSES, not_after__lte=now)
    expired = 0
    while True:
        with transaction.atomic():
            rows = _lock_batch(past, "status", skip_locked=True)
            if not rows:
                break
            Certificate.objects.filter(pk__in=_ids(rows)).update(status=CertificateStatus.EXPIRED)
            for before, group in _grouped(rows).items():
                _record_certificate_events(
                    group,
                    action=AuditAction.UPDATE,
                    changes={"status": [before, CertificateStatus.EXPIRED]},
                    message="expired",
                )
        expired += len(rows)
    return {"expired": expired}


# --- renewal -----------------------------------------------------------------------------


def renewable() -> Q:
    """Certificates that renew by themselves: auto-renewing template, enrolled device, and
    either a device key delivered by a live profile delivery (the device enrolls again) or
    a server-generated key (the server generates the replacement)."""
    live = Delivery.objects.filter(device=OuterRef("device")).exclude(
        status__in=WITHDRAWN_DELIVERIES
    )
    carried = (Q(profile__isnull=False) & Exists(live.filter(profile=OuterRef("profile")))) | (
        Q(profile__isnull=True)
        & Exists(live.filter(profile__payloads__template=OuterRef("template")))
    )
    device_key = Q(
        template__key_generation=KeyGeneration.DEVICE,
        source=RENEWABLE_SOURCES[KeyGeneration.DEVICE],
    )
    server_key = Q(
        template__key_generation=KeyGeneration.SERVER,
        source=RENEWABLE_SOURCES[KeyGeneration.SERVER],
    )
    return Q(template__auto_renew=True, device__status=DeviceStatus.ENROLLED) & (
        (device_key & carried) | server_key
    )


def renewal_window(now: datetime.datetime) -> Q:
    """Certificates inside their template's renewal window at ``now``: "renew N days before
    expiry", from half-life when the validity is shorter than twice N days (the rule of
    ``apps.scep.services.renewal_opens``). Inside it, the time left is at most N days and
    at most the time elapsed. Durations only (differences of two times): SQLite and
    PostgreSQL compare them alike."""
    remaining = F("not_after") - Value(now)
    elapsed = Value(now) - F("not_before")
    # Cast: SQLite multiplies durations by IntegerField only, not PositiveIntegerField.
    window = Cast("template__renew_before_days", IntegerField()) * Value(DAY)
    return Q(LessThanOrEqual(remaining, window)) & Q(LessThanOrEqual(remaining, elapsed))


def renewals_due(now: datetime.datetime) -> QuerySet[Certificate]:
    """Active certificates that renew by themselves, inside their renewal window, whose
    renewal was not re-triggered yet."""
    longest = CertificateTemplate.objects.filter(auto_renew=True).aggregate(
        days=Max("renew_before_days")
    )["days"]
    if longest is None:
        return Certificate.objects.none()
    return Certificate.objects.filter(
        renewable(),
        renewal_window(now),
        status=CertificateStatus.ACTIVE,
        renewal_triggered_at__isnull=True,
        not_after__gt=now,
        not_after__lte=now + longest * DAY,  # narrows the scan by the expiry index
    )


def sweep_renewals(now: datetime.datetime | None = None) -> dict[str, int]:
    """Re-trigger the renewal of each certificate due (``renewals_due``), once: the profile
    that carries it is delivered to its device again (the next generation, with a fresh
    challenge at the next check-in); for server-generated keys the replacement identity is
    generated and delivered (``identities.renew_identity``)."""
    now = now or timezone.now()
    due = renewals_due(now)
    triggered, after, redelivered = 0, 0, set()
    while True:
        with transaction.atomic():
            # Each batch starts after the last one (keyset): asking for the whole due set
            # again each time made the sweep quadratic in the number due.
            rows = _lock_batch(
                due.filter(template__key_generation=KeyGeneration.DEVICE, pk__gt=after),
                skip_locked=True,
            )
            if not rows:
                break
            ids = _ids(rows)
            after = ids[-1]
            Certificate.objects.filter(pk__in=ids).update(renewal_triggered_at=now)
            redelivered |= _redeliver_carriers(ids, now, skip=redelivered)
            _record_certificate_events(
                rows,
                action=AuditAction.UPDATE,
                changes={"renewal_triggered_at": [None, str(now)]},
                message="renewal re-triggered: the profile that carries it is delivered again",
            )
        triggered += len(rows)
    triggered += _renew_server_identities(
        due.filter(template__key_generation=KeyGeneration.SERVER), now
    )
    return {"renewals re-triggered": triggered}


def _redeliver_carriers(
    ids: list[int], now: datetime.datetime, *, skip: set[int] = frozenset()
) -> set[int]:
    """``delivery.redeliver`` for many certificates in one UPDATE: the next generation of
    each live delivery that carries one of them (its profile, or for a certificate without
    a profile, the device's profiles with a payload of its template), except those in
    ``skip`` (moved on already by this sweep). The deliveries are found by index lookups
    of (device, profile) pairs: a correlated subquery per delivery row costs seconds on a
    large inventory. Returns the deliveries moved on."""
    certificates = Certificate.objects.filter(pk__in=ids)
    pairs = set(certificates.filter(profile__isnull=False).values_list("device", "profile"))
    by_template = set(certificates.filter(profile__isnull=True).values_list("device", "template"))
    live = Delivery.objects.exclude(status__in=WITHDRAWN_DELIVERIES)
    candidates = live.filter(
        device__in={device for device, _ in pairs}, profile__in={profile for _, profile in pairs}
    ).values_list("pk", "device", "profile")
    chosen = [pk for pk, device, profile in candidates if (device, profile) in pairs]
    if by_template:
        carrying = live.filter(
            device__in={device for device, _ in by_template},
            profile__payloads__template__in={template for _, template in by_template},
        ).values_list("pk", "device", "profile__payloads__template")
        chosen += [pk for pk, device, template in carrying if (device, template) in by_template]
    chosen_set = set(chosen) - skip
    Delivery.objects.filter(pk__in=chosen_set).exclude(status__in=WITHDRAWN_DELIVERIES).update(
        generation=F("generation") + 1, status=DeliveryStatus.PENDING, updated_at=now
    )
    return chosen_set


def _renew_server_identities(due: QuerySet[Certificate], now: datetime.datetime) -> int:
    """One at a time (each is a key generation and a signature). ``renew_identity`` is the
    claim: it renews under the device's row lock and refuses a certificate renewed already,
    so the mark is set by the one run that renewed, in the same transaction. No
    certificate lock is taken first: check-ins lock the device, then certificates."""
    from apps.certificates import identities  # it imports this module

    pks = list(due.order_by("pk").values_list("pk", flat=True))
    renewed = 0
    for pk in pks:
        with transaction.atomic():
            certificate = Certificate.objects.select_related("template", "device").get(pk=pk)
            if not identities.renew_identity(certificate):
                continue
            Certificate.objects.filter(pk=pk).update(renewal_triggered_at=now)
            _record_certificate_events(
                [(pk, certificate.subject, certificate.serial)],
                action=AuditAction.UPDATE,
                changes={"renewal_triggered_at": [None, str(now)]},
                message="renewal re-triggered: a replacement identity is delivered",
            )
        renewed += 1
    return renewed


# --- expiry digest -----------------------------------------------------------------------


def expiring_without_renewal(*, now: datetime.datetime, days: int) -> QuerySet[Certificate]:
    """Active certificates expiring within ``days`` that will not renew by themselves."""
    return (
        Certificate.objects.filter(
            status=CertificateStatus.ACTIVE, not_after__gt=now, not_after__lte=now + days * DAY
        )
        .annotate(
            renews=Case(
                When(renewable(), then=Value(True)),
                default=Value(False),
                output_field=BooleanField(),
            )
        )
        .filter(renews=False)
        .select_related("template", "device", "user", "ca")
        .order_by("not_after", "pk")
    )


def why_not_renewing(certificate: Certificate) -> str:
    """Why a certificate of the digest will not renew by itself, in a few words."""
    template, device = certificate.template, certificate.device
    if certificate.source == CertificateSource.USER_PROVIDED:
        return "uploaded by its owner: they upload a renewed one in the portal"
    if certificate.source == CertificateSource.SINGLE_FILE:
        return f"single file identity of CA server {certificate.ca}: upload a renewed file"
    if template is None or not template.auto_renew:
        return "no automatic renewal"
    if certificate.source != RENEWABLE_SOURCES.get(template.key_generation):
        return f"{certificate.get_source_display()} certificates do not renew"
    if device is None:
        return "on no managed device"
    if device.status != DeviceStatus.ENROLLED:
        return f"device {device.get_status_display().lower()}"
    return "no profile delivers it to its device any more"


def digest_recipients(config: LifecycleSettings) -> list[str]:
    """The configured addresses, or every active superuser's with an email address."""
    listed = [line.strip() for line in config.expiry_notice_recipients.splitlines()]
    if any(listed):
        return [address for address in listed if address]
    superusers = get_user_model().objects.filter(is_superuser=True, is_active=True)
    return sorted(superusers.exclude(email="").values_list("email", flat=True))


def send_expiry_digest(now: datetime.datetime | None = None) -> dict[str, int]:
    """Email the day's digest of certificates expiring within the notice window that will
    not renew by themselves; nothing when there are none. Once a day: the digest is keyed
    by the date in an audit event, checked under the settings row's lock."""
    now = now or timezone.now()
    config = lifecycle_settings()
    certificates = list(expiring_without_renewal(now=now, days=config.expiry_notice_days))
    recipients = digest_recipients(config)
    if not certificates or not recipients:
        return {"digests sent": 0, "certificates listed": 0}
    key = DIGEST_KEY.format(day=timezone.localdate(now).isoformat())
    with transaction.atomic():
        LifecycleSettings.objects.select_for_update().get(pk=config.pk)
        if AuditEvent.objects.filter(
            action=AuditAction.CREATE, content_type=None, object_repr=key
        ).exists():
            return {"digests sent": 0, "certificates listed": 0}
        subject, body = _digest_message(certificates, days=config.expiry_notice_days)
        send_mail(subject, body, None, recipients)
        record_event(
            action=AuditAction.CREATE,
            object_repr=key,
            message=f"{len(certificates)} certificate(s), sent to {len(recipients)} recipient(s)",
        )
    return {"digests sent": 1, "certificates listed": len(certificates)}


def _digest_message(certificates: list[Certificate], *, days: int) -> tuple[str, str]:
    count = len(certificates)
    subject = f"[mdmcerts] {count} certificate(s) expire within {days} days without renewal"
    lines = [
        f"{count} certificate(s) expire within {days} days and will not renew by themselves.",
        "",
    ]
    for cert in certificates:
        where = f"device {cert.device}" if cert.device else f"user {cert.user or '-'}"
        lines.append(
            f"{cert.not_after:%Y-%m-%d %H:%M} UTC  {cert.subject}  serial {cert.serial}  "
            f"template {cert.template or '-'}  {where}  ({why_not_renewing(cert)})"
        )
    url = settings.PUBLIC_BASE_URL + reverse("admin:certificates_certificate_changelist")
    lines += ["", f"The certificate inventory: {url}?status__exact=active"]
    return subject, "\n".join(lines)
