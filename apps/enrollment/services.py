"""Saving and deleting request templates with their SAN rows, audited."""

import datetime
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, ProtectedError, Q, RestrictedError
from django.http import HttpRequest
from django.utils import timezone

from apps.audit.services import record_change, record_deletion
from apps.enrollment.models import (
    AttemptCounter,
    CertificateTemplate,
    Challenge,
    TemplateSubjectAltName,
)


class TemplateInUse(Exception):
    """The template cannot be deleted: certificates (or other rows) still point at it."""


def save_template(
    *,
    template: CertificateTemplate,
    before: dict[str, Any] | None,
    san_rows: Sequence[tuple[str, str]] | None = None,
    static_challenge: str | None = None,
    actor=None,
    request: HttpRequest | None = None,
) -> CertificateTemplate:
    """Validate and save ``template`` with its SAN rows, and record the audit event.

    ``before`` is ``audit.services.snapshot(template)`` taken before the caller changed the
    template, or None for a new one. ``san_rows`` (``(san_type, value)`` pairs, in order)
    replace the current rows when given. ``static_challenge`` replaces the stored password
    when given; "" clears it. An invalid template raises ``ValidationError`` and nothing is
    saved.
    """
    if static_challenge is not None:
        template.set_static_challenge(static_challenge)
    rows = None if san_rows is None else _valid_san_rows(san_rows)
    template.full_clean()
    with transaction.atomic():
        template.save()
        if rows is not None:
            template.san_rows.all().delete()
            for row in rows:
                row.template = template
            TemplateSubjectAltName.objects.bulk_create(rows)
            # A prefetched list of the old rows would otherwise end up in the audit diff.
            getattr(template, "_prefetched_objects_cache", {}).pop("san_rows", None)
        record_change(obj=template, before=before, actor=actor, request=request)
    return template


def _valid_san_rows(pairs: Sequence[tuple[str, str]]) -> list[TemplateSubjectAltName]:
    rows, errors = [], []
    for position, (san_type, value) in enumerate(pairs):
        row = TemplateSubjectAltName(san_type=san_type, value=value, position=position)
        try:
            row.full_clean(exclude=["template"])
        except ValidationError as exc:
            errors.extend(f"Row {position + 1}: {message}" for message in exc.messages)
        rows.append(row)
    if errors:
        raise ValidationError({"subject_alternative_names": errors})
    return rows


def delete_template(
    *, template: CertificateTemplate, actor=None, request: HttpRequest | None = None
) -> None:
    """Delete a template no certificate points at, and record the deletion.

    Certificates keep their template for renewal and for the inventory, so a template in
    use raises ``TemplateInUse`` rather than leaving its certificates without one.
    """
    with transaction.atomic():
        in_use = template.certificates.count()
        if in_use:
            raise TemplateInUse(
                f"Template {template} has {in_use} certificate(s) and cannot be deleted."
            )
        record_deletion(obj=template, actor=actor, request=request)
        try:
            template.delete()
        except (ProtectedError, RestrictedError) as exc:
            raise TemplateInUse(
                f"Template {template} is still used by {len(exc.args[1])} object(s) "
                "and cannot be deleted."
            ) from exc


CHALLENGE_TTL = datetime.timedelta(minutes=60)
PUBLIC_ID_LENGTH = 12


def _challenge_digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def mint_challenge(
    *,
    template: CertificateTemplate,
    device=None,
    user=None,
    ttl: datetime.timedelta = CHALLENGE_TTL,
) -> tuple[Challenge, str]:
    """A new one-time challenge bound to the template and the device (or user).

    Returns the row and the challenge, which exists nowhere else: only its salted hash is
    stored.
    """
    public_id = secrets.token_hex(PUBLIC_ID_LENGTH // 2)
    secret = secrets.token_hex(16)
    salt = secrets.token_hex(16)
    challenge = Challenge.objects.create(
        public_id=public_id,
        salt=salt,
        digest=_challenge_digest(salt, secret),
        template=template,
        device=device,
        user=user or getattr(device, "owner", None),
        expires_at=timezone.now() + ttl,
    )
    return challenge, public_id + secret


def redeem_challenge(*, template: CertificateTemplate, value: str) -> Challenge | None:
    """Use up a dynamic challenge: the row if it was valid for this template, else None.

    Call inside the transaction that records the enrollment: the conditional update makes
    a challenge usable once, whatever runs at the same time.
    """
    public_id, secret = value[:PUBLIC_ID_LENGTH], value[PUBLIC_ID_LENGTH:]
    challenge = Challenge.objects.filter(public_id=public_id, template=template).first()
    if challenge is None or not hmac.compare_digest(
        challenge.digest, _challenge_digest(challenge.salt, secret)
    ):
        return None
    now = timezone.now()
    used = Challenge.objects.filter(
        pk=challenge.pk, used_at__isnull=True, expires_at__gt=now
    ).update(used_at=now)
    return challenge if used == 1 else None


def lockout_remaining(
    *, template: CertificateTemplate, keys: dict[str, str]
) -> datetime.timedelta | None:
    """How long a source or device that failed too often is still refused, if it is."""
    now = timezone.now()
    locked = (
        AttemptCounter.objects.filter(_keys_query(keys), template=template, locked_until__gt=now)
        .order_by("-locked_until")
        .values_list("locked_until", flat=True)
        .first()
    )
    return locked - now if locked else None


def _keys_query(keys: dict[str, str]) -> Q:
    query = Q(pk__in=[])
    for scope, identifier in keys.items():
        query |= Q(scope=scope, identifier=identifier[:128])
    return query


def record_failed_attempt(*, template: CertificateTemplate, keys: dict[str, str]) -> None:
    """Count a failure for each key; at the template's maximum, lock it for the interval."""
    now = timezone.now()
    for scope, identifier in keys.items():
        counter, _ = AttemptCounter.objects.get_or_create(
            template=template, scope=scope, identifier=identifier[:128]
        )
        AttemptCounter.objects.filter(pk=counter.pk).update(failures=F("failures") + 1)
        AttemptCounter.objects.filter(
            pk=counter.pk, failures__gte=template.max_failed_attempts
        ).update(
            failures=0,
            locked_until=now + datetime.timedelta(seconds=template.retry_interval_seconds),
        )


def clear_failed_attempts(*, template: CertificateTemplate, keys: dict[str, str]) -> None:
    """A success forgets earlier failures of its keys (locks still run out by themselves)."""
    AttemptCounter.objects.filter(_keys_query(keys), template=template, failures__gt=0).update(
        failures=0
    )
