"""Saving and deleting request templates with their SAN rows, audited."""

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError, RestrictedError
from django.http import HttpRequest

from apps.audit.services import record_change, record_deletion
from apps.enrollment.models import CertificateTemplate, TemplateSubjectAltName


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
