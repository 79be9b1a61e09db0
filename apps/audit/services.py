"""Recording audit events and field-level diffs."""

import datetime
import decimal
import hashlib
import uuid
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.http import HttpRequest

from apps.audit.choices import AuditAction
from apps.audit.models import AuditEvent
from apps.core.fields import EncryptedSecretField
from apps.core.net import client_ip

REDACTED = "(secret)"


def secret_marker(token: str) -> str:
    """Stands for a stored secret in a diff: a different ciphertext gives a different
    marker, so a replaced secret shows as a change, and nothing about the value leaks."""
    if not token:
        return ""
    return f"(secret {hashlib.sha256(token.encode()).hexdigest()[:8]})"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | uuid.UUID | decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return REDACTED
    return value


def snapshot(instance: models.Model) -> dict[str, Any]:
    """The instance's concrete field values, secrets replaced by a marker."""
    data: dict[str, Any] = {}
    for f in instance._meta.concrete_fields:
        if getattr(f, "auto_now", False):
            continue  # bookkeeping, not a change anyone made
        if isinstance(f, EncryptedSecretField):
            data[f.name] = secret_marker(getattr(instance, f.attname))
        else:
            data[f.name] = _plain(getattr(instance, f.attname))
    extra = getattr(instance, "audit_extra", None)
    if extra is not None:
        data.update(extra())
    return data


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, list]:
    """Field name -> [old, new] for every field that differs."""
    before, after = before or {}, after or {}
    return {
        name: [before.get(name), after.get(name)]
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


def record_event(
    *,
    action: str,
    obj: models.Model | None = None,
    actor=None,
    request: HttpRequest | None = None,
    changes: dict | None = None,
    message: str = "",
    object_repr: str | None = None,
) -> AuditEvent:
    """Append one audit event. ``actor`` defaults to the request's user."""
    event = build_event(
        action=action,
        obj=obj,
        actor=actor,
        request=request,
        changes=changes,
        message=message,
        object_repr=object_repr,
    )
    event.save(force_insert=True)
    return event


def build_event(
    *,
    action: str,
    obj: models.Model | None = None,
    actor=None,
    request: HttpRequest | None = None,
    changes: dict | None = None,
    message: str = "",
    object_repr: str | None = None,
) -> AuditEvent:
    """The event ``record_event`` appends, not saved (for callers that insert it in bulk
    or in a statement of their own; an unsaved ``obj`` leaves ``object_id`` empty)."""
    if actor is None and request is not None and request.user.is_authenticated:
        actor = request.user
    actor_repr = actor.get_username() if actor is not None else "system"
    return AuditEvent(
        actor=actor,
        actor_repr=actor_repr,
        action=action,
        content_type=ContentType.objects.get_for_model(obj) if obj is not None else None,
        object_id=str(obj.pk) if obj is not None and obj.pk is not None else "",
        object_repr=(object_repr if object_repr is not None else str(obj or ""))[:255],
        changes=changes or {},
        message=message,
        source_ip=client_ip(request),
    )


def record_change(
    *,
    obj: models.Model,
    before: dict[str, Any] | None,
    actor=None,
    request: HttpRequest | None = None,
    message: str = "",
) -> AuditEvent | None:
    """Record a create (``before`` is None) or an update with its diff; no-op updates are
    not recorded."""
    after = snapshot(obj)
    changes = diff(before, after)
    if before is not None and not changes:
        return None
    action = AuditAction.CREATE if before is None else AuditAction.UPDATE
    return record_event(
        action=action, obj=obj, actor=actor, request=request, changes=changes, message=message
    )


def record_deletion(
    *, obj: models.Model, actor=None, request: HttpRequest | None = None
) -> AuditEvent:
    """Record a deletion with the object's last values; call before deleting it."""
    changes = diff(snapshot(obj), None)
    return record_event(
        action=AuditAction.DELETE, obj=obj, actor=actor, request=request, changes=changes
    )


def history_for(obj: models.Model) -> models.QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(
        content_type=ContentType.objects.get_for_model(obj), object_id=str(obj.pk)
    ).select_related("actor")
