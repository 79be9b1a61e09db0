"""Enrollment codes, device enrollment and tokens, check-ins with inventory (learning the
certificates external SCEP CAs issued to devices), and the device lifecycle (scan,
redeliver, unenroll, wipe), audited."""

import datetime
import logging
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import diff, record_change, record_deletion, record_event, snapshot
from apps.certificates import services as lifecycle
from apps.certificates.choices import CertificateSource, CertificateStatus, RevocationCause
from apps.certificates.models import Certificate
from apps.core.models import hash_token
from apps.devices.choices import DeviceStatus
from apps.devices.models import (
    REPORTED_FACTS,
    Device,
    DeviceGroup,
    DeviceToken,
    EnrollmentCode,
    InstalledCertificate,
)
from apps.enrollment.choices import ExternalDelivery
from apps.enrollment.models import CertificateTemplate
from apps.enrollment.rendering import render_subject
from apps.enrollment.variables import VariableValueMissing, values_for
from apps.pki import crypto
from apps.pki.choices import CAKind
from apps.pki.models import CertificateAuthority
from apps.profiles import delivery
from apps.profiles.choices import PayloadKind
from apps.profiles.models import Profile, ProfilePayload

logger = logging.getLogger(__name__)

FACT_FIELDS = ("name", *REPORTED_FACTS)
CODE_REFUSALS = {
    "revoked": "this enrollment code was revoked; ask your administrator for a new one",
    "expired": "this enrollment code has expired; ask your administrator for a new one",
    "used up": "this enrollment code was used already; ask your administrator for a new one",
}
FINGERPRINT_SEPARATORS = re.compile(r"[\s:]")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class EnrollmentRefused(Exception):
    """The code does not enroll a device; ``str()`` says why. Nothing was created."""


class InvalidInventory(Exception):
    """An installed-certificate entry cannot be read; ``str()`` says which and why."""


# --- enrollment codes ------------------------------------------------------------------


def create_enrollment_code(
    *,
    name: str,
    owner=None,
    group: DeviceGroup | None = None,
    max_uses: int | None = 1,
    expires_at: datetime.datetime | None = None,
    actor=None,
    request: HttpRequest | None = None,
) -> tuple[EnrollmentCode, str]:
    """A new enrollment code and the code itself, which is shown this once only (only its
    SHA-256 is stored). ``max_uses`` 1 makes a one-time code, None an unlimited one.
    An invalid one raises ``ValidationError`` and nothing is saved."""
    row = EnrollmentCode(
        name=name, owner=owner, group=group, max_uses=max_uses, expires_at=expires_at
    )
    code = row.assign_code()
    row.full_clean()
    with transaction.atomic():
        row.save()
        record_change(obj=row, before=None, actor=actor, request=request)
    return row, code


def revoke_enrollment_code(
    *, code: EnrollmentCode, actor=None, request: HttpRequest | None = None
) -> bool:
    """Revoke the code now; False if it was revoked already."""
    with transaction.atomic():
        before = snapshot(code)
        now = timezone.now()
        done = EnrollmentCode.objects.filter(pk=code.pk, revoked_at__isnull=True).update(
            revoked_at=now
        )
        if done:
            code.revoked_at = now
            record_change(obj=code, before=before, actor=actor, request=request)
    return bool(done)


# --- enrollment and tokens -------------------------------------------------------------


def enroll(
    *, code: str, facts: Mapping[str, Any], request: HttpRequest | None = None
) -> tuple[Device, str]:
    """Enroll a device with an enrollment code: the device (owned by the code's owner,
    in the code's group) and its API token, shown this once only.

    A revoked, expired, used or unknown code raises ``EnrollmentRefused``; invalid facts
    raise ``ValidationError``. Either way nothing is created and the code is not used.
    """
    with transaction.atomic():
        enrollment_code = _claim_enrollment_code(code)
        device = Device(owner=enrollment_code.owner, **_facts(facts))
        device.full_clean()
        device.save()
        if enrollment_code.group is not None:
            enrollment_code.group.devices.add(device)
        token = issue_device_token(device)
        record_change(
            obj=device,
            before=None,
            request=request,
            message=f"enrolled with enrollment code {enrollment_code}",
        )
    return device, token


def _claim_enrollment_code(code: str) -> EnrollmentCode:
    """Count one use of the code, if it may be used now. The use is a conditional update,
    so a one-time code is used once however many devices present it at the same time."""
    row = (
        EnrollmentCode.objects.select_related("owner", "group")
        .filter(code_hash=hash_token(code))
        .first()
    )
    if row is None:
        raise EnrollmentRefused("unknown enrollment code; check it or ask your administrator")
    now = timezone.now()
    if row.state(now) != "usable":
        raise EnrollmentRefused(CODE_REFUSALS[row.state(now)])
    claimed = (
        EnrollmentCode.objects.filter(pk=row.pk, revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .filter(Q(max_uses__isnull=True) | Q(uses__lt=F("max_uses")))
        .update(uses=F("uses") + 1)
    )
    if claimed != 1:  # another device took the last use (or it was revoked) meanwhile
        row.refresh_from_db()
        raise EnrollmentRefused(CODE_REFUSALS.get(row.state(now), CODE_REFUSALS["used up"]))
    return row


def _facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    return {name: facts[name] for name in FACT_FIELDS if facts.get(name) is not None}


def issue_device_token(device: Device) -> str:
    """A new API token for the device, returned this once (only its SHA-256 is stored)."""
    key = secrets.token_urlsafe(32)
    DeviceToken.objects.create(device=device, key_hash=hash_token(key))
    return key


def token_for_key(key: str) -> DeviceToken | None:
    """The valid token with this key (its device enrolled), or None."""
    return (
        DeviceToken.objects.select_related("device__owner")
        .filter(key_hash=hash_token(key), revoked_at__isnull=True)
        .filter(device__status=DeviceStatus.ENROLLED)
        .first()
    )


def _revoke_tokens(device: Device) -> None:
    DeviceToken.objects.filter(device=device, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


# --- check-in and inventory ------------------------------------------------------------


@dataclass(frozen=True)
class ReportedCertificate:
    """One installed certificate as the device reported it (subject etc. from its PEM,
    and the certificate itself when it sent one)."""

    fingerprint_sha256: str
    subject: str = ""
    issuer: str = ""
    not_after: datetime.datetime | None = None
    certificate: x509.Certificate | None = field(default=None, compare=False, repr=False)


@dataclass
class CheckinResult:
    """What the check-in response tells the device."""

    scan_requested: bool
    install: list[dict] = field(default_factory=list)
    remove: list[dict] = field(default_factory=list)


def checkin(
    *,
    device: Device,
    facts: Mapping[str, Any] | None = None,
    installed_certificates: Sequence[Mapping[str, str]] | None = None,
) -> CheckinResult:
    """Record a check-in: the facts the device sent, its inventory when it sent one (None:
    no inventory this time; empty: none installed), then the profiles to install, each
    rendered with fresh challenges, and the profiles to remove.

    An unreadable inventory raises ``InvalidInventory``, invalid facts ``ValidationError``;
    either way nothing changes.
    """
    reported = None if installed_certificates is None else read_inventory(installed_certificates)
    with transaction.atomic():
        device = _lock_device(device)
        _update_facts(device, facts or {})
        now = timezone.now()
        if reported is not None:
            _record_inventory(device, reported, now)
        device.last_checkin_at = now
        device.save()
        delivery.sync_deliveries(device)
        install = [
            item
            for row in delivery.deliveries_to_send(device)
            if (item := delivery.render_delivery(row)) is not None
        ]
        remove = [delivery.removal_item(row) for row in delivery.deliveries_to_remove(device)]
    return CheckinResult(scan_requested=device.scan_requested, install=install, remove=remove)


def _update_facts(device: Device, facts: Mapping[str, Any]) -> None:
    """Take the facts the device sent; a change is audited (not the check-in itself)."""
    before = {name: getattr(device, name) for name in FACT_FIELDS}
    for name, value in _facts(facts).items():
        setattr(device, name, value)
    changes = diff(before, {name: getattr(device, name) for name in FACT_FIELDS})
    if changes:
        device.full_clean()
        record_event(
            action=AuditAction.UPDATE,
            obj=device,
            changes=changes,
            message="facts reported by the device at check-in",
        )


def read_inventory(entries: Iterable[Mapping[str, str]]) -> list[ReportedCertificate]:
    """Installed-certificate entries (``pem`` and/or ``fingerprint_sha256``) as reported
    certificates, one per fingerprint. ``InvalidInventory`` names the first bad entry."""
    reported: dict[str, ReportedCertificate] = {}
    for index, entry in enumerate(entries):
        item = _read_entry(entry, f"installed_certificates[{index}]")
        if item.fingerprint_sha256 not in reported or item.subject:
            reported[item.fingerprint_sha256] = item
    return list(reported.values())


def _read_entry(entry: Mapping[str, str], where: str) -> ReportedCertificate:
    pem, fingerprint = entry.get("pem") or "", entry.get("fingerprint_sha256") or ""
    if fingerprint:
        fingerprint = FINGERPRINT_SEPARATORS.sub("", fingerprint).lower()
        if not SHA256_HEX.fullmatch(fingerprint):
            raise InvalidInventory(f"{where}: fingerprint_sha256 is not 64 hexadecimal digits")
    if not pem:
        if not fingerprint:
            raise InvalidInventory(f"{where}: give pem or fingerprint_sha256")
        return ReportedCertificate(fingerprint_sha256=fingerprint)
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        item = ReportedCertificate(
            fingerprint_sha256=crypto.fingerprint_sha256(cert),
            subject=crypto.format_name(cert.subject)[:1000],
            issuer=crypto.format_name(cert.issuer)[:1000],
            not_after=cert.not_valid_after_utc,
            certificate=cert,
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInventory(f"{where}: pem is not a PEM-encoded X.509 certificate") from exc
    if fingerprint and fingerprint != item.fingerprint_sha256:
        raise InvalidInventory(f"{where}: fingerprint_sha256 is not the fingerprint of pem")
    return item


def _record_inventory(
    device: Device, reported: list[ReportedCertificate], now: datetime.datetime
) -> None:
    """Replace the device's inventory by what it reported, linked to the certificates
    mdmcerts knows by SHA-256 fingerprint (after learning those an external SCEP CA
    issued to it, ``learn_external_certificates``); the scan asked for is done. Its
    certificates that it reported before and no longer does start their revocation
    grace period."""
    fingerprints = [item.fingerprint_sha256 for item in reported]
    known = {
        cert.fingerprint_sha256: cert
        for cert in Certificate.objects.filter(fingerprint_sha256__in=fingerprints)
    }
    unknown = [item for item in reported if item.fingerprint_sha256 not in known]
    known.update(learn_external_certificates(device=device, reported=unknown))
    existing = {row.fingerprint_sha256: row for row in device.installed_certificates.all()}
    device.installed_certificates.exclude(fingerprint_sha256__in=fingerprints).delete()
    seen_before = {row.certificate_id for row in existing.values() if row.certificate_id}
    new, seen = [], []
    for item in reported:
        row = existing.get(item.fingerprint_sha256) or InstalledCertificate(
            device=device, fingerprint_sha256=item.fingerprint_sha256, first_seen_at=now
        )
        _describe(row, item, known.get(item.fingerprint_sha256))
        row.last_seen_at = now
        (seen if row.pk else new).append(row)
    InstalledCertificate.objects.bulk_create(new)
    InstalledCertificate.objects.bulk_update(
        seen, ["subject", "issuer", "not_after", "certificate", "last_seen_at"]
    )
    device.scan_requested = False
    device.last_inventory_at = now
    seen = {cert.pk for cert in known.values()}
    lifecycle.inventory_reported(device=device, missing=seen_before - seen, seen=seen, now=now)


def _describe(
    row: InstalledCertificate, item: ReportedCertificate, known: Certificate | None
) -> None:
    """Subject, issuer and expiry from the PEM, else from mdmcerts' row, else as they were."""
    row.certificate = known
    if item.subject:
        row.subject, row.issuer, row.not_after = item.subject, item.issuer, item.not_after
    elif known is not None:
        row.subject = known.subject
        row.issuer = crypto.format_name(known.certificate.issuer)[:1000]
        row.not_after = known.not_after


# --- certificates of external SCEP CAs, learned from inventories -----------------------
#
# In delegate and proxy mode the device enrolls with the external CA itself: mdmcerts never
# sees the certificate issued until the device reports it. A reported certificate is
# recorded when an external CA whose certificate mdmcerts pinned signed it and its subject
# is the one a profile targeting the device asks for (the template's subject rendered for
# the device, as delivery renders it). From then on it lives like any other: renewal,
# revocation (at the CA, by an administrator), expiry.


@dataclass(frozen=True)
class _Carrier:
    """A SCEP payload of an external CA's template in a profile that targets the device."""

    template: CertificateTemplate
    profile: Profile
    subject: x509.Name | None  # the template's subject for the device; None: not renderable


def learn_external_certificates(
    *, device: Device, reported: Sequence[ReportedCertificate]
) -> dict[str, Certificate]:
    """Record the certificates among ``reported`` (not known to mdmcerts yet) that an
    external SCEP CA issued to ``device`` for a template a targeting profile carries,
    each linked to its device, template and profile; by fingerprint. A certificate
    whose renewal the sweep re-triggered is superseded by the one that renews it."""
    candidates = [item.certificate for item in reported if _learnable(item.certificate)]
    carriers = _external_carriers(device) if candidates else []
    if not carriers:
        return {}
    issuers = _external_issuers({carrier.template.ca for carrier in carriers})
    learned = {}
    for cert in candidates:
        ca = _issuing_ca(cert, issuers)
        matching = [
            c for c in carriers if c.template.ca == ca and _same_name(c.subject, cert.subject)
        ]
        if ca is not None and matching:
            carrier = _likeliest(device, matching)
            learned[crypto.fingerprint_sha256(cert)] = _record_learned(device, cert, carrier)
    return learned


def _likeliest(device: Device, carriers: list[_Carrier]) -> _Carrier:
    """Of templates asking for the same subject, the first whose certificate the device
    does not have yet (or is renewing): the CA's certificate says no more about which."""
    if len(carriers) == 1:
        return carriers[0]
    for carrier in carriers:
        settled = Certificate.objects.filter(
            device=device,
            template=carrier.template,
            profile=carrier.profile,
            status=CertificateStatus.ACTIVE,
            renewal_triggered_at__isnull=True,
        )
        if not settled.exists():
            return carrier
    return carriers[0]


def _learnable(cert: x509.Certificate | None) -> bool:
    """An end-entity certificate (a trusted-certificate payload reports CAs too)."""
    if cert is None:
        return False
    try:
        return not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return True


def _external_carriers(device: Device) -> list[_Carrier]:
    """Each device-key template of an external CA (delegate or proxy) that a profile
    targeting the device carries in a SCEP payload, with its subject for the device."""
    payloads = (
        ProfilePayload.objects.filter(
            kind=PayloadKind.SCEP,
            profile__in=delivery.targeted_profiles(device),
            template__ca__kind=CAKind.SCEP,
            template__external_delivery__in=(ExternalDelivery.DELEGATE, ExternalDelivery.PROXY),
        )
        .select_related("template__ca", "profile")
        .order_by("profile_id", "position", "pk")
    )
    values, carriers = values_for(device=device), []
    for payload in payloads:
        try:
            subject = render_subject(payload.template, values)
        except (VariableValueMissing, crypto.NameSyntaxError):
            subject = None  # delivery fails the same way: no certificate to expect
        carriers.append(_Carrier(payload.template, payload.profile, subject))
    return carriers


def _external_issuers(
    cas: Iterable[CertificateAuthority],
) -> list[tuple[CertificateAuthority, x509.Certificate]]:
    """The certificates that may sign an external CA's certificates: the pinned CA
    certificate, and the CA certificates GetCACert returned beside it."""
    issuers = []
    for ca in cas:
        issuers.append((ca, ca.certificate))
        if ca.chain_pem:
            chain = x509.load_pem_x509_certificates(ca.chain_pem.encode())
            issuers.extend((ca, cert) for cert in chain if not _learnable(cert))
    return issuers


def _issuing_ca(
    cert: x509.Certificate, issuers: list[tuple[CertificateAuthority, x509.Certificate]]
) -> CertificateAuthority | None:
    """The external CA whose certificate signed ``cert``: the issuer's name must match
    and the signature verify, so a device cannot have a forged certificate recorded."""
    for ca, issuer in issuers:
        if cert.issuer != issuer.subject:
            continue
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return ca
    return None


def _same_name(expected: x509.Name | None, actual: x509.Name) -> bool:
    """The subject asked for, as a CA may write it back: the same attributes in the same
    order, compared without regard to case (a CA may re-encode a string type)."""
    if expected is None:
        return False
    return expected == actual or (
        crypto.format_name(expected).casefold() == crypto.format_name(actual).casefold()
    )


def _record_learned(device: Device, cert: x509.Certificate, carrier: _Carrier) -> Certificate:
    """The inventory row of a certificate learned from ``device``'s report, audited; the
    existing row if another report recorded it first."""
    template, profile = carrier.template, carrier.profile
    try:
        with transaction.atomic():  # a savepoint: a duplicate leaves the check-in whole
            previous = lifecycle.renewal_predecessor(
                template=template, device=device, profile=profile
            )
            row = lifecycle.record_certificate(
                cert=cert,
                template=template,
                source=CertificateSource.SCEP,
                user=device.owner,
                device=device,
                replaces=previous,
                profile=profile,
            )
            if previous is not None:
                lifecycle.supersede(certificate=previous)
            record_event(
                action=AuditAction.CREATE,
                obj=row,
                message=f"learned from the inventory of device {device} (#{device.pk}): "
                f"issued by external CA server {template.ca} for request template {template}, "
                f"profile {profile}",
            )
            return row
    except IntegrityError:
        return Certificate.objects.get(fingerprint_sha256=crypto.fingerprint_sha256(cert))


def _lock_device(device: Device) -> Device:
    """The device row, locked until the end of the transaction: one check-in at a time."""
    return Device.objects.select_for_update(of=("self",)).select_related("owner").get(pk=device.pk)


# --- lifecycle -------------------------------------------------------------------------


def save_device(
    *, device: Device, before: dict[str, Any], actor=None, request: HttpRequest | None = None
) -> Device:
    """Validate and save an administrator's change to a device, audited."""
    device.full_clean()
    with transaction.atomic():
        device.save()
        record_change(obj=device, before=before, actor=actor, request=request)
    return device


def request_scan(*, device: Device, actor=None, request: HttpRequest | None = None) -> None:
    """Ask the device for its installed certificates at its next check-in."""
    with transaction.atomic():
        Device.objects.filter(pk=device.pk).update(scan_requested=True)
        device.scan_requested = True
        record_event(
            action=AuditAction.UPDATE,
            obj=device,
            actor=actor,
            request=request,
            message="inventory scan requested for the next check-in",
        )


def redeliver_profiles(*, device: Device, actor=None, request: HttpRequest | None = None) -> int:
    """Send the device all its profiles again at its next check-in; returns how many."""
    with transaction.atomic():
        count = delivery.redeliver(device)
        record_event(
            action=AuditAction.UPDATE,
            obj=device,
            actor=actor,
            request=request,
            message=f"{count} profile(s) to be delivered again",
        )
    return count


def unenroll(*, device: Device, actor=None, request: HttpRequest | None = None) -> bool:
    """Unenroll an enrolled device: its tokens stop working, every profile it was given is
    to be removed and its certificates' revocation grace period starts. False (and nothing
    changes) if it was not enrolled."""
    return _take_out(
        device, DeviceStatus.UNENROLLED, RevocationCause.UNENROLLED, actor, request, "unenrolled"
    )


def retire(*, device: Device, actor=None, request: HttpRequest | None = None) -> bool:
    """Retire an enrolled device (taken out of service for good): as ``unenroll``, with
    the status retired. False (and nothing changes) if it was not enrolled."""
    return _take_out(
        device, DeviceStatus.RETIRED, RevocationCause.RETIRED, actor, request, "retired"
    )


def _take_out(device: Device, status: str, cause: str, actor, request, message: str) -> bool:
    with transaction.atomic():
        device = _lock_device(device)
        if device.status != DeviceStatus.ENROLLED:
            return False
        before = snapshot(device)
        _revoke_tokens(device)
        device.status = status
        device.save()
        # Certificates before deliveries: the lock order of check-ins and the sweeps.
        lifecycle.device_certificates_gone(device=device, cause=cause, actor=actor, request=request)
        delivery.sync_deliveries(device)  # a device out of service is targeted by nothing
        record_change(obj=device, before=before, actor=actor, request=request, message=message)
    return True


def mark_wiped(*, device: Device, actor=None, request: HttpRequest | None = None) -> bool:
    """The device was erased: its tokens stop working, it holds no profile any more and its
    certificates' revocation grace period starts. False (and nothing changes) if it was
    marked wiped already."""
    with transaction.atomic():
        device = _lock_device(device)
        if device.status == DeviceStatus.WIPED:
            return False
        before = snapshot(device)
        _revoke_tokens(device)
        device.status = DeviceStatus.WIPED
        device.save()
        lifecycle.device_certificates_gone(
            device=device, cause=RevocationCause.WIPED, actor=actor, request=request
        )
        delivery.mark_all_removed(device)
        record_change(
            obj=device, before=before, actor=actor, request=request, message="marked wiped"
        )
    return True


# --- groups ----------------------------------------------------------------------------


def save_group(
    *,
    group: DeviceGroup,
    before: dict[str, Any] | None,
    devices: Iterable[Device] | None = None,
    actor=None,
    request: HttpRequest | None = None,
) -> DeviceGroup:
    """Validate and save a group, replacing its members when ``devices`` is given; audited
    (the diff lists members that joined or left). Certificates that the group's profiles
    brought to devices that left start their revocation grace period (and those of devices
    back within it are active again)."""
    group.full_clean()
    with transaction.atomic():
        group.save()
        if devices is not None:
            members = set(group.devices.values_list("pk", flat=True))
            group.devices.set(devices)
            members |= set(group.devices.values_list("pk", flat=True))
            lifecycle.reconcile_assignments(devices=members, actor=actor, request=request)
        record_change(obj=group, before=before, actor=actor, request=request)
    return group


def delete_group(*, group: DeviceGroup, actor=None, request: HttpRequest | None = None) -> None:
    """Delete a group (its members stay; its assignments go, and with them the certificates
    the group's profiles brought start their revocation grace period), audited."""
    with transaction.atomic():
        members = list(group.devices.values_list("pk", flat=True))
        record_deletion(obj=group, actor=actor, request=request)
        group.delete()
        lifecycle.reconcile_assignments(devices=members, actor=actor, request=request)
