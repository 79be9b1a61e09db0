"""What the self-service portal shows a signed-in user, and the upload that waits for a
replace confirmation.

Everything here is scoped to one user: a row of anyone else never leaves these functions,
so a view that looks a row up through them answers 404 for another user's id.
"""

import base64
import dataclasses
import datetime
import json
from dataclasses import dataclass, field

from django.contrib.sessions.backends.base import SessionBase
from django.db.models import Prefetch, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import record_event
from apps.certificates.choices import IdentityPurpose
from apps.certificates.models import Certificate, Identity
from apps.certificates.uploads import user_identities, validate_pkcs12
from apps.core import secrets
from apps.devices.models import Device
from apps.pki import crypto
from apps.profiles.choices import DeliveryStatus, PayloadKind
from apps.profiles.models import Delivery, ProfilePayload

PENDING_UPLOAD_KEY = "portal_pending_upload"
# Long enough to read the confirmation page and decide; an older held upload is dropped
# at the next look instead of being used (it is encrypted in the session meanwhile).
PENDING_UPLOAD_TTL = datetime.timedelta(minutes=15)
# Deliveries that no longer put anything on the device are not worth showing.
GONE = (DeliveryStatus.REMOVED,)


def my_certificates(user) -> QuerySet[Certificate]:
    """Certificates issued to ``user`` or to one of the devices ``user`` owns, and the
    ones ``user`` uploaded; nothing of anyone else."""
    return Certificate.objects.filter(Q(user=user) | Q(device__owner=user)).select_related("device")


def my_uploads(user) -> QuerySet[Identity]:
    """The user's current uploaded identities, one at most per purpose."""
    return user_identities(user).select_related("certificate").order_by("purpose")


@dataclass(frozen=True)
class MissingUpload:
    """A purpose a profile for the device needs and the owner has no usable upload for:
    none yet, or only an expired one (``expired_on``)."""

    purpose: str
    label: str
    expired_on: datetime.datetime | None = None


@dataclass
class DeviceSummary:
    """One device of the user, with its profiles and what they still miss."""

    device: Device
    deliveries: list[Delivery] = field(default_factory=list)
    missing: list[MissingUpload] = field(default_factory=list)

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status == DeliveryStatus.FAILED]


def my_devices(user) -> list[DeviceSummary]:
    """The devices ``user`` owns, their deliveries (profile, state, error) and the uploads
    their user-provided payloads wait for."""
    payloads = ProfilePayload.objects.filter(kind=PayloadKind.USER_PROVIDED)
    deliveries = (
        Delivery.objects.exclude(status__in=GONE)
        .select_related("profile")
        .prefetch_related(Prefetch("profile__payloads", queryset=payloads, to_attr="asks"))
        .order_by("profile__name")
    )
    devices = Device.objects.filter(owner=user).prefetch_related(
        Prefetch("deliveries", queryset=deliveries, to_attr="current_deliveries")
    )
    uploads = {identity.purpose: identity for identity in my_uploads(user)}
    return [_summary(device, uploads) for device in devices]


def _summary(device: Device, uploads: dict[str, Identity]) -> DeviceSummary:
    asked = {
        payload.user_identity_purpose
        for delivery in device.current_deliveries
        for payload in delivery.profile.asks
    }
    missing = [
        _missing(purpose, uploads.get(purpose))
        for purpose in sorted(asked)
        if purpose in IdentityPurpose.values
    ]
    return DeviceSummary(
        device=device,
        deliveries=device.current_deliveries,
        missing=[item for item in missing if item is not None],
    )


def _missing(purpose: str, upload: Identity | None) -> MissingUpload | None:
    """What the owner must do for ``purpose``: nothing (a valid upload), or upload one."""
    label = IdentityPurpose(purpose).label
    if upload is None:
        return MissingUpload(purpose=purpose, label=label)
    if upload.certificate.is_expired:
        return MissingUpload(purpose=purpose, label=label, expired_on=upload.certificate.not_after)
    return None


def missing_uploads(devices: list[DeviceSummary]) -> list[tuple[MissingUpload, list[str]]]:
    """Each missing upload once, with the names of the devices waiting for it."""
    waiting: dict[MissingUpload, list[str]] = {}
    for summary in devices:
        for missing in summary.missing:
            waiting.setdefault(missing, []).append(summary.device.name)
    return sorted(waiting.items(), key=lambda item: item[0].purpose)


def record_password_change(*, user, request: HttpRequest) -> None:
    """Audit a password changed by its owner (the hash is nobody's business)."""
    record_event(
        action=AuditAction.UPDATE,
        obj=user,
        request=request,
        message="Password changed in the self-service portal.",
    )


@dataclass(frozen=True)
class PendingUpload:
    """An upload held while its owner confirms replacing the current one for its purpose.
    ``data`` and ``password`` are only set by ``take_pending_upload``."""

    purpose: str
    filename: str
    subject: str
    not_after: datetime.datetime
    held_at: datetime.datetime
    data: bytes = b""
    password: str = ""

    @property
    def purpose_label(self) -> str:
        return IdentityPurpose(self.purpose).label


def _context(user) -> str:
    # Bound to the user: a sealed upload copied into another user's session won't open.
    return f"portal.pending_upload:{user.pk}"


def hold_pending_upload(
    *, session: SessionBase, user, purpose: str, filename: str, data: bytes, password: str
) -> PendingUpload:
    """Keep a validated upload in the session until its owner confirms the replacement.

    The file and its password are sealed together under the KEK: the session table never
    holds either in clear. Only the subject and expiry (public) are kept readable, for
    the confirmation page.
    """
    bundle = validate_pkcs12(data=data, password=password)
    secret = json.dumps({"data": base64.b64encode(data).decode(), "password": password})
    session[PENDING_UPLOAD_KEY] = {
        "sealed": secrets.encrypt(secret.encode(), context=_context(user)),
        "purpose": purpose,
        "filename": filename[:200],
        "subject": crypto.format_name(bundle.certificate.subject),
        "not_after": bundle.certificate.not_valid_after_utc.isoformat(),
        "held_at": timezone.now().isoformat(),
    }
    return pending_upload(session=session, user=user)


def pending_upload(*, session: SessionBase, user) -> PendingUpload | None:
    """The held upload's public details, or None (nothing held, or held too long ago)."""
    held = session.get(PENDING_UPLOAD_KEY)
    if not held:
        return None
    held_at = datetime.datetime.fromisoformat(held["held_at"])
    if timezone.now() - held_at > PENDING_UPLOAD_TTL:
        drop_pending_upload(session=session)
        return None
    return PendingUpload(
        purpose=held["purpose"],
        filename=held["filename"],
        subject=held["subject"],
        not_after=datetime.datetime.fromisoformat(held["not_after"]),
        held_at=held_at,
    )


def take_pending_upload(*, session: SessionBase, user) -> PendingUpload | None:
    """Remove the held upload from the session and return it with its file and password."""
    pending = pending_upload(session=session, user=user)
    if pending is None:
        return None
    held = session.pop(PENDING_UPLOAD_KEY)
    try:
        secret = json.loads(secrets.decrypt(held["sealed"], context=_context(user)))
    except secrets.SecretError:
        return None
    return dataclasses.replace(
        pending, data=base64.b64decode(secret["data"]), password=secret["password"]
    )


def drop_pending_upload(*, session: SessionBase) -> None:
    session.pop(PENDING_UPLOAD_KEY, None)
