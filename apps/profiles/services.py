"""Editing profiles, their payloads and their assignments: versioned and audited.

Every change to a profile or its payloads increments ``Profile.version`` (so devices get the
profile again) and records one audit event on the profile, whose diff shows the payloads and
assignments before and after (``Profile.audit_extra``). A change of assignments alone is
audited but keeps the version: only the devices it adds or removes are concerned, and the
others must not enroll again for nothing. Delivery to
devices is ``apps.profiles.delivery``'s business.
"""

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest

from apps.audit.choices import AuditAction
from apps.audit.services import diff, record_change, record_deletion, record_event, snapshot
from apps.certificates import identities
from apps.certificates.services import reconcile_assignments
from apps.devices.models import Device, DeviceGroup
from apps.profiles.choices import IDENTITY_PAYLOAD_KINDS, DeliveryStatus
from apps.profiles.models import (
    PAYLOAD_FIELDS,
    Profile,
    ProfileAssignment,
    ProfilePayload,
)

EDITABLE_PAYLOAD_FIELDS = sorted({name for names in PAYLOAD_FIELDS.values() for name in names})


def save_profile(
    *,
    profile: Profile,
    before: dict[str, Any] | None,
    payloads: Sequence[Mapping[str, Any]] | None = None,
    actor=None,
    request: HttpRequest | None = None,
) -> Profile:
    """Validate and save ``profile`` and, when given, its payloads; bump the version if
    anything changed and record the audit event.

    ``before`` is ``audit.services.snapshot(profile)`` taken before the caller changed the
    profile, or None for a new one. ``payloads`` replace the current ones, in order: each is
    a mapping of ``ProfilePayload`` fields (``kind``, ``display_name`` and the fields of its
    kind; absent fields take their defaults) with an optional ``uuid`` — the uuid of a
    current payload updates that payload and keeps its Apple PayloadUUID; a new uuid names
    a new payload — and ``identity`` as the uuid of a SCEP payload in the same list.
    Current payloads not listed are deleted. Anything invalid raises ``ValidationError``
    and nothing is saved.
    """
    profile.full_clean()
    with transaction.atomic():
        profile.save()
        if payloads is not None:
            _replace_payloads(profile, payloads)
        else:
            _check_payloads(profile)
        record_profile_edit(profile=profile, before=before, actor=actor, request=request)
    return profile


def _check_payloads(profile: Profile) -> None:
    """The current payloads must still suit the profile (its platform may have changed)."""
    errors = []
    for position, payload in enumerate(profile.payloads.select_related("template", "identity")):
        payload.profile = profile
        try:
            payload.full_clean()
        except ValidationError as exc:
            errors.extend(_payload_errors(position, payload, exc))
    if errors:
        raise ValidationError({"payloads": errors})


def record_profile_edit(
    *,
    profile: Profile,
    before: dict[str, Any] | None,
    actor=None,
    request: HttpRequest | None = None,
    message: str = "",
) -> bool:
    """After ``profile``, its payloads or assignments were saved: increment the version if
    anything changed since ``before`` (None: the profile is new, version 1) and record the
    audit event. Returns whether anything changed. Call inside the saving transaction."""
    if before is None:
        record_change(obj=profile, before=None, actor=actor, request=request, message=message)
        return True
    changes = diff(before, snapshot(profile))
    if not changes:
        return False
    if set(changes) - {"assignments"}:
        _bump_version(profile)
    record_change(obj=profile, before=before, actor=actor, request=request, message=message)
    return True


def _bump_version(profile: Profile) -> None:
    # An update with F(): two edits at once both count, neither overwrites the other.
    Profile.objects.filter(pk=profile.pk).update(version=F("version") + 1)
    profile.refresh_from_db(fields=["version", "updated_at"])


def _replace_payloads(profile: Profile, items: Sequence[Mapping[str, Any]]) -> None:
    current = {payload.uuid: payload for payload in profile.payloads.all()}
    rows = [_payload_row(profile, position, item, current) for position, item in enumerate(items)]
    by_uuid = {row.uuid: row for row in rows}
    errors = _link_identities(rows, items, by_uuid)
    for position, row in enumerate(rows):
        try:
            row.full_clean(exclude=["profile", "identity", "uuid"])
        except ValidationError as exc:
            errors.extend(_payload_errors(position, row, exc))
    if len(by_uuid) != len(rows):
        errors.append("Two payloads have the same uuid.")
    if errors:
        raise ValidationError({"payloads": errors})
    ProfilePayload.objects.filter(pk__in=[p.pk for p in current.values()]).delete()
    # Identity payloads (SCEP, PKCS#12) first: the others point at them as their identity.
    for row in sorted(rows, key=lambda r: r.kind not in IDENTITY_PAYLOAD_KINDS):
        row.save()
    getattr(profile, "_prefetched_objects_cache", {}).pop("payloads", None)


def _payload_row(
    profile: Profile,
    position: int,
    item: Mapping[str, Any],
    current: dict[uuid.UUID, ProfilePayload],
) -> ProfilePayload:
    wanted = _as_uuid(item.get("uuid"))
    row = current.pop(wanted, None) if wanted else None
    if row is None:
        row = ProfilePayload(profile=profile)
        if wanted:
            row.uuid = wanted
    defaults = {f.name: f.get_default() for f in ProfilePayload._meta.concrete_fields}
    for name in ["kind", "display_name", *EDITABLE_PAYLOAD_FIELDS]:
        if name != "identity":
            setattr(row, name, item.get(name, defaults[name]))
    row.position = position
    return row


def _as_uuid(value) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value else None


def _link_identities(
    rows: list[ProfilePayload],
    items: Sequence[Mapping[str, Any]],
    by_uuid: dict[uuid.UUID, ProfilePayload],
) -> list[str]:
    errors = []
    for position, (row, item) in enumerate(zip(rows, items, strict=True)):
        wanted = _as_uuid(item.get("identity"))
        row.identity = by_uuid.get(wanted) if wanted else None
        if wanted and row.identity is None:
            errors.append(
                f"Payload {position + 1}: identity {wanted} is not a payload of this list."
            )
        if row.pk is None and ProfilePayload.objects.filter(uuid=row.uuid).exists():
            errors.append(f"Payload {position + 1}: uuid {row.uuid} belongs to another profile.")
    return errors


def _payload_errors(position: int, row: ProfilePayload, exc: ValidationError) -> list[str]:
    label = f"Payload {position + 1} ({row.get_kind_display() or row.kind})"
    return [
        f"{label}: {_field_label(name)}: {message}"
        for name, messages in exc.message_dict.items()
        for message in messages
    ]


def _field_label(name: str) -> str:
    if name == "__all__":
        return "payload"
    return str(ProfilePayload._meta.get_field(name).verbose_name)


class ProfileInUse(Exception):
    """The profile is still on devices; deleting it would leave it there for good."""


ON_DEVICE = (DeliveryStatus.DELIVERED, DeliveryStatus.INSTALLED, DeliveryStatus.REMOVAL_PENDING)


def devices_holding(profile: Profile) -> int:
    return profile.deliveries.filter(status__in=ON_DEVICE).count()


def delete_profile(*, profile: Profile, actor=None, request: HttpRequest | None = None) -> None:
    """Delete a profile no device holds any more, with its payloads and records, audited.

    A profile still on devices raises ``ProfileInUse``: unassign it first, so the devices
    are told to remove it, then delete it.
    """
    with transaction.atomic():
        holding = devices_holding(profile)
        if holding:
            raise ProfileInUse(
                f"{profile} is still on {holding} device(s): unassign it, and "
                "delete it once the devices have removed it."
            )
        record_deletion(obj=profile, actor=actor, request=request)
        profile.delete()


def assign(
    *,
    profile: Profile,
    group: DeviceGroup | None = None,
    device: Device | None = None,
    actor=None,
    request: HttpRequest | None = None,
) -> ProfileAssignment:
    """Assign ``profile`` to a group or to one device (exactly one of them).

    Records the assignment's creation (the version stays: devices already holding the
    profile keep it as it is) and cancels the pending revocations of certificates the
    profile brought to the devices it targets again. Neither or both
    targets, or a target the profile is already assigned to, raise ``ValidationError``.
    """
    if (group is None) == (device is None):
        raise ValidationError("Assign the profile to a group or to a device (one of them).")
    with transaction.atomic():
        profile = Profile.objects.select_for_update().get(pk=profile.pk)
        before = snapshot(profile)
        assignment = ProfileAssignment(profile=profile, group=group, device=device)
        already = f"{profile} is already assigned to {assignment.target_label()}."
        if _assigned(assignment):
            raise ValidationError(already)
        try:
            with transaction.atomic():
                assignment.save()
        except IntegrityError as exc:  # the same assignment made at the same moment
            raise ValidationError(already) from exc
        record_change(obj=assignment, before=None, actor=actor, request=request)
        record_profile_edit(
            profile=profile,
            before=before,
            actor=actor,
            request=request,
            message=f"assigned to {assignment.target_label()}",
        )
        reconcile_assignments(profile=profile, actor=actor, request=request)
        identities.generate_early(profile=profile)
    return assignment


def _assigned(assignment: ProfileAssignment) -> bool:
    return ProfileAssignment.objects.filter(
        profile=assignment.profile, group=assignment.group, device=assignment.device
    ).exists()


def unassign(
    *, assignment: ProfileAssignment, actor=None, request: HttpRequest | None = None
) -> None:
    """Remove an assignment and record it; the version stays. The certificates the profile
    brought to devices it no longer targets start their revocation grace period."""
    with transaction.atomic():
        profile = Profile.objects.select_for_update().get(pk=assignment.profile_id)
        before = snapshot(profile)
        label = assignment.target_label()
        record_deletion(obj=assignment, actor=actor, request=request)
        assignment.delete()
        record_profile_edit(
            profile=profile,
            before=before,
            actor=actor,
            request=request,
            message=f"unassigned from {label}",
        )
        reconcile_assignments(profile=profile, actor=actor, request=request)


def record_download(
    *, profile: Profile, device: Device, actor=None, request: HttpRequest | None = None
) -> None:
    """Audit a .mobileconfig rendered by hand for ``device`` (it may hold a challenge)."""
    record_event(
        action=AuditAction.DOWNLOAD,
        obj=profile,
        actor=actor,
        request=request,
        message=f".mobileconfig for device {device} (#{device.pk}), version {profile.version}",
    )
