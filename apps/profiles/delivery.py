"""Which profiles a device gets, and where each of them stands on it.

One ``Delivery`` row per device and profile. The device needs a profile (again) while the
row's ``delivered_version`` lags the profile's version or ``delivered_generation`` lags
``generation`` ("redeliver" and renewal bump it). Two check-ins of one device can race (a
retry, a copied token): every change to a delivery is made under its row lock and decided
again once the lock is held, so any of these functions can run twice at once.
"""

import base64
import logging
import uuid

from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import record_event
from apps.certificates.identities import (
    IdentityNotIssued,
    IdentityNotRequested,
    current_identity,
    mark_delivered,
    request_generation,
)
from apps.certificates.models import Identity
from apps.certificates.single_file import single_file_identity
from apps.certificates.uploads import user_identity_for
from apps.devices.choices import DeviceStatus
from apps.devices.models import Device
from apps.enrollment.choices import ChallengeType
from apps.enrollment.services import mint_challenge
from apps.enrollment.variables import VariableValueMissing
from apps.pki.backends.scep import UpstreamError, upstream_for
from apps.pki.choices import CAKind, ExternalChallengeType
from apps.profiles.choices import (
    PKCS12_PAYLOAD_KINDS,
    DeliveryStatus,
    PayloadKind,
    ProfilePlatform,
)
from apps.profiles.models import Delivery, Profile, ProfileAssignment, ProfilePayload
from apps.profiles.rendering import ProfileNotRenderable, mobileconfig, neutral_profile

logger = logging.getLogger(__name__)

# Deliveries the device is to remove, or has removed: never sent again as they are.
WITHDRAWN = (DeliveryStatus.REMOVAL_PENDING, DeliveryStatus.REMOVED)
SENT = (DeliveryStatus.DELIVERED, DeliveryStatus.INSTALLED)
MAX_ERROR = 4000  # characters of a device's error message kept
ACK_STATUSES = (DeliveryStatus.INSTALLED, DeliveryStatus.FAILED, DeliveryStatus.REMOVED)
NEEDS_SENDING = (
    Q(delivered_version__isnull=True)
    | Q(delivered_generation__isnull=True)
    | ~Q(delivered_version=F("profile__version"))
    | ~Q(delivered_generation=F("generation"))
)


class ExternalCAFailure(Exception):
    """An external CA did not give what a delivery needs; the message says which and why."""


class IdentityAwaited(ProfileNotRenderable):
    """A PKCS#12 payload's identity comes from an external CA that was not asked for it
    yet: the generation task enrolls it, and the next check-in delivers it."""


class AckRefused(Exception):
    """The acknowledgement does not match what the device was given; nothing changed."""


def targeted_profiles(device: Device) -> QuerySet[Profile]:
    """Profiles assigned to the device or to one of its groups that its platform takes:
    Apple-only profiles go to iOS, iPadOS and macOS devices only. None once the device is
    no longer enrolled."""
    if device.status != DeviceStatus.ENROLLED:
        return Profile.objects.none()
    assigned = ProfileAssignment.objects.filter(Q(device=device) | Q(group__devices=device))
    profiles = Profile.objects.filter(pk__in=assigned.values("profile"))
    if not device.is_apple:
        profiles = profiles.exclude(platform=ProfilePlatform.APPLE)
    return profiles


def sync_deliveries(device: Device) -> None:
    """Bring the device's deliveries in line with what is targeted at it.

    A newly targeted profile gets a pending delivery; one targeted again after its removal
    is delivered again (next generation); one no longer targeted is to be removed from
    the device, or is simply removed if it never reached it.
    """
    targeted = set(targeted_profiles(device).values_list("pk", flat=True))
    now = timezone.now()
    with transaction.atomic():
        existing = {row.profile_id: row for row in _lock_deliveries(device)}
        Delivery.objects.bulk_create(
            [Delivery(device=device, profile_id=pk) for pk in targeted - existing.keys()],
            ignore_conflicts=True,  # a check-in that raced this one created it first
        )
        mine = Delivery.objects.filter(device=device)
        mine.filter(profile_id__in=targeted, status__in=WITHDRAWN).update(
            status=DeliveryStatus.PENDING, generation=F("generation") + 1, error="", updated_at=now
        )
        mine.filter(profile_id__in=targeted, status__in=SENT).filter(NEEDS_SENDING).update(
            status=DeliveryStatus.PENDING, updated_at=now
        )
        gone = mine.exclude(profile_id__in=targeted).exclude(status__in=WITHDRAWN)
        gone.filter(delivered_version__isnull=True).update(
            status=DeliveryStatus.REMOVED, updated_at=now
        )
        gone.update(status=DeliveryStatus.REMOVAL_PENDING, updated_at=now)


def deliveries_to_send(device: Device) -> QuerySet[Delivery]:
    """The device's deliveries whose current version and generation it has not been given."""
    return (
        Delivery.objects.filter(device=device)
        .exclude(status__in=WITHDRAWN)
        .filter(NEEDS_SENDING)
        .select_related("profile")
        .order_by("profile__name", "pk")
    )


def deliveries_to_remove(device: Device) -> QuerySet[Delivery]:
    """The deliveries the device is to remove (until it acknowledges the removal)."""
    return (
        Delivery.objects.filter(device=device, status=DeliveryStatus.REMOVAL_PENDING)
        .select_related("profile")
        .order_by("profile__name", "pk")
    )


def removal_item(delivery: Delivery) -> dict:
    """The ``remove`` item of the check-in response for one delivery."""
    profile = delivery.profile
    return {"profile_id": profile.pk, "identifier": profile.identifier, "uuid": str(profile.uuid)}


def render_delivery(delivery: Delivery) -> dict | None:
    """The ``install`` item of the check-in response for one delivery, and the delivery
    marked delivered with the version and generation sent.

    Each dynamic SCEP payload gets a challenge minted now, bound to the device, its owner,
    the template and the profile (or, for an external SCEP CA that hands out dynamic
    challenges, one fetched from it now); each PKCS#12 payload the device's current
    identity for its template, generated now if it has none. A profile that cannot be
    rendered for the device (a variable without a value, a template Apple devices cannot
    use, an external CA that gives no challenge) is not sent: the delivery becomes
    ``failed`` with the reason, its challenges and any identity generated for it are
    discarded, and None is returned (an external CA's failure is audited too; an identity
    never yet asked of an external CA is asked of the generation task at once). None too
    when another check-in sent this delivery first.
    """
    with transaction.atomic():
        delivery = _lock_delivery(pk=delivery.pk)
        if delivery is None or not _needs_sending(delivery):
            return None
        try:
            with transaction.atomic():  # the minted challenges (and identities) go if it fails
                item = _render(delivery)
        except (VariableValueMissing, ProfileNotRenderable) as exc:
            _mark_failed(delivery, str(exc))
            if isinstance(exc, IdentityAwaited):
                # Here, outside the rolled-back savepoint, so that it survives: the device
                # need not wait for the hourly sweep.
                transaction.on_commit(request_generation, robust=True)
            return None
        except ExternalCAFailure as exc:
            _mark_failed(delivery, str(exc))
            _audit_upstream_failure(delivery, str(exc))
            return None
        _mark_delivered(delivery)
        return item


def _render(delivery: Delivery) -> dict:
    profile, device = delivery.profile, delivery.device
    challenges = {**_mint_challenges(delivery), **_external_challenges(delivery)}
    identities = _current_identities(delivery)
    item = {
        "profile_id": profile.pk,
        "identifier": profile.identifier,
        "uuid": str(profile.uuid),
        "version": profile.version,
        "generation": delivery.generation,
    }
    if device.is_apple:
        document = mobileconfig(
            profile, device=device, challenges=challenges, identities=identities
        )
        encoded = base64.b64encode(document).decode()
        return {**item, "format": "mobileconfig", "mobileconfig": encoded}
    return {
        **item,
        "format": "json",
        "profile": neutral_profile(
            profile, device=device, challenges=challenges, identities=identities
        ),
    }


def _mint_challenges(delivery: Delivery) -> dict[uuid.UUID, str]:
    """A fresh dynamic challenge per SCEP payload with a dynamic template, by payload UUID."""
    payloads = (
        delivery.profile.payloads.filter(
            kind=PayloadKind.SCEP, template__challenge_type=ChallengeType.DYNAMIC
        )
        .exclude(template__ca__kind=CAKind.SCEP)  # the external CA checks its own challenge
        .select_related("template")
    )
    challenges = {}
    for payload in payloads:
        challenge, value = mint_challenge(
            template=payload.template, device=delivery.device, user=delivery.device.owner
        )
        # mint_challenge knows nothing of profiles; the SCEP enrollment reads this link to
        # tie the certificate to the profile.
        challenge.profile = delivery.profile
        challenge.save(update_fields=["profile"])
        challenges[payload.uuid] = value
    return challenges


def _external_challenges(delivery: Delivery) -> dict[uuid.UUID, str]:
    """A challenge fetched now from its external CA (NDES) per SCEP payload whose CA
    hands out dynamic ones, by payload UUID. ``ExternalCAFailure`` if a CA gives none:
    the profile is not sent without it."""
    payloads = delivery.profile.payloads.filter(
        kind=PayloadKind.SCEP,
        template__ca__kind=CAKind.SCEP,
        template__ca__scep_challenge_type=ExternalChallengeType.DYNAMIC,
    ).select_related("template__ca")
    challenges = {}
    for payload in payloads:
        ca = payload.template.ca
        try:
            challenges[payload.uuid] = upstream_for(ca).challenge()
        except UpstreamError as exc:
            raise ExternalCAFailure(
                f"SCEP payload {payload.display_name!r}: CA server {ca} gave no challenge: {exc}"
            ) from exc
    return challenges


def _audit_upstream_failure(delivery: Delivery, reason: str) -> None:
    """An external CA failed a delivery: the administrator finds it in the audit log."""
    record_event(
        action=AuditAction.ISSUE_FAILED,
        obj=delivery.device,
        message=f"profile {delivery.profile} not delivered: {reason}",
    )


def _current_identities(delivery: Delivery) -> dict[uuid.UUID, Identity]:
    """The identity of each PKCS#12-delivered payload, by payload UUID: the device's
    server-generated one for the template (generated on demand), its owner's upload for the
    purpose, or the single-file CA's. The delivery remembers which identities it carries,
    for the acknowledgement and the inventory."""
    payloads = delivery.profile.payloads.filter(kind__in=PKCS12_PAYLOAD_KINDS).select_related(
        "template__ca", "ca"
    )
    identities = {}
    for payload in payloads:
        try:
            identities[payload.uuid] = _identity_for(payload, delivery)
        except IdentityNotIssued as exc:
            failure = (
                IdentityAwaited if isinstance(exc, IdentityNotRequested) else ProfileNotRenderable
            )
            raise failure(f"{payload.label()}: {exc}") from exc
    delivery.identities.set(identities.values())
    return identities


def _identity_for(payload: ProfilePayload, delivery: Delivery) -> Identity:
    if payload.kind == PayloadKind.USER_PROVIDED:
        return user_identity_for(device=delivery.device, purpose=payload.user_identity_purpose)
    if payload.kind == PayloadKind.SINGLE_FILE:
        return single_file_identity(ca=payload.ca)
    return current_identity(
        device=delivery.device, template=payload.template, profile=delivery.profile
    )


def _needs_sending(delivery: Delivery) -> bool:
    return delivery.status not in WITHDRAWN and (
        delivery.delivered_version != delivery.profile.version
        or delivery.delivered_generation != delivery.generation
    )


def _mark_delivered(delivery: Delivery) -> None:
    delivery.status = DeliveryStatus.DELIVERED
    delivery.delivered_version = delivery.profile.version
    delivery.delivered_generation = delivery.generation
    delivery.delivered_at = timezone.now()
    delivery.error = ""
    delivery.save()


def _mark_failed(delivery: Delivery, reason: str) -> None:
    logger.warning(
        "profile %s not delivered to device %s: %s",
        delivery.profile_id,
        delivery.device_id,
        reason,
    )
    delivery.status = DeliveryStatus.FAILED
    delivery.error = reason
    delivery.save()


def acknowledge(
    *,
    device: Device,
    profile_id: int,
    status: str,
    version: int | None = None,
    generation: int | None = None,
    error: str = "",
) -> Delivery:
    """Record what the device says it did with a profile: ``installed`` or ``failed`` (for
    the version and generation it was given) or ``removed`` (after it was asked to).

    ``AckRefused`` when the device was not given that profile, that version or that
    removal. An install acknowledged after the profile was withdrawn leaves the
    withdrawal as it is.
    """
    if status not in ACK_STATUSES:
        raise AckRefused(f"unknown acknowledgement status {status!r}")
    with transaction.atomic():
        delivery = _lock_delivery(device=device, profile_id=profile_id)
        if delivery is None:
            raise AckRefused(f"profile {profile_id} was never given to this device")
        if status == DeliveryStatus.REMOVED:
            _acknowledge_removal(delivery)
        else:
            _acknowledge_install(delivery, status, version, generation, error)
    return delivery


def _acknowledge_removal(delivery: Delivery) -> None:
    if delivery.status == DeliveryStatus.REMOVED:
        return
    if delivery.status != DeliveryStatus.REMOVAL_PENDING:
        raise AckRefused(
            f"profile {delivery.profile_id} is still assigned to this device; "
            "it was not asked to remove it"
        )
    delivery.status = DeliveryStatus.REMOVED
    delivery.acknowledged_at = timezone.now()
    delivery.save()


def _acknowledge_install(
    delivery: Delivery, status: str, version: int | None, generation: int | None, error: str
) -> None:
    if delivery.delivered_version is None:
        raise AckRefused(f"profile {delivery.profile_id} was not delivered to this device yet")
    given = (delivery.delivered_version, delivery.delivered_generation)
    if (version, generation) != given:
        raise AckRefused(
            f"profile {delivery.profile_id} version {version} generation {generation} is not "
            f"what this device was given last (version {given[0]}, generation {given[1]})"
        )
    now = timezone.now()
    if status == DeliveryStatus.INSTALLED:
        # Even for a withdrawn profile: the device did install these keys.
        mark_delivered(delivery.identities.all(), now=now)
    if delivery.status in WITHDRAWN:
        return
    delivery.status = status
    delivery.error = error[:MAX_ERROR] if status == DeliveryStatus.FAILED else ""
    delivery.acknowledged_at = now
    delivery.save()


def redeliver(device: Device, *, profile: Profile | None = None) -> int:
    """Send the device its current profiles (or just ``profile``) again at its next
    check-in, with fresh challenges: the next generation. Returns how many."""
    deliveries = Delivery.objects.filter(device=device).exclude(status__in=WITHDRAWN)
    if profile is not None:
        deliveries = deliveries.filter(profile=profile)
    return deliveries.update(
        generation=F("generation") + 1, status=DeliveryStatus.PENDING, updated_at=timezone.now()
    )


def redeliver_user_identity(*, user, purpose: str) -> int:
    """The owner's upload for ``purpose`` changed (new, replaced, deleted): every profile
    of their devices with a user-provided payload for it goes out again, failed ones
    included. Returns how many deliveries."""
    deliveries = Delivery.objects.filter(
        device__owner=user,
        profile__payloads__kind=PayloadKind.USER_PROVIDED,
        profile__payloads__user_identity_purpose=purpose,
    )
    return _redeliver_all(deliveries)


def redeliver_single_file(*, ca) -> int:
    """The identity file of single-file CA server ``ca`` was replaced: every profile with a
    payload of it goes out again. Returns how many deliveries."""
    deliveries = Delivery.objects.filter(
        profile__payloads__kind=PayloadKind.SINGLE_FILE, profile__payloads__ca=ca
    )
    return _redeliver_all(deliveries)


def _redeliver_all(deliveries: QuerySet[Delivery]) -> int:
    # By primary key: an UPDATE cannot take the joins that chose them.
    chosen = deliveries.exclude(status__in=WITHDRAWN).values("pk")
    return Delivery.objects.filter(pk__in=chosen).update(
        generation=F("generation") + 1, status=DeliveryStatus.PENDING, updated_at=timezone.now()
    )


def mark_all_removed(device: Device) -> int:
    """Every profile is gone from the device (it was wiped). Returns how many changed."""
    return (
        Delivery.objects.filter(device=device)
        .exclude(status=DeliveryStatus.REMOVED)
        .update(status=DeliveryStatus.REMOVED, updated_at=timezone.now())
    )


def _lock_deliveries(device: Device) -> list[Delivery]:
    """The device's deliveries, locked until the end of the transaction."""
    return list(Delivery.objects.select_for_update().filter(device=device).order_by("pk"))


def _lock_delivery(*, pk: int | None = None, device=None, profile_id=None) -> Delivery | None:
    """One delivery with its device and profile, locked until the end of the transaction."""
    rows = Delivery.objects.select_for_update(of=("self",)).select_related(
        "profile", "device__owner"
    )
    if pk is not None:
        return rows.filter(pk=pk).first()
    return rows.filter(device=device, profile_id=profile_id).first()
