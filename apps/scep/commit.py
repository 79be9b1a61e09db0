"""A successful enrollment committed in one SQL statement (PostgreSQL).

The general path in ``services`` writes an enrollment with the ORM: the request row, the
certificate, its audit event and the attempt counters, twelve round trips with BEGIN and
COMMIT. For the common case, a PKCSReq that passed every check on a template without
approval and without a dynamic challenge (so without a device, and nothing a renewal
would supersede), this module writes the same rows with the same
values in one data-modifying ``WITH`` statement, which PostgreSQL runs atomically. The
statement writes nothing, and the caller falls back to the general path, when:

- the request row exists already (a replay, or a duplicate racing this one: ``ON
  CONFLICT DO NOTHING`` waits for the other transaction, as the unique index does on the
  general path);
- the source is locked out (an unexpired ``locked_until`` on one of its counters);
- the template or its CA changed since the caller loaded them (``updated_at`` differs), so
  a cached endpoint never issues under a policy an administrator has replaced.

Column lists and values come from the models (``pre_save`` and ``get_db_prep_save`` on
unsaved instances), so a new field gets its default here as it does on the general path.
"""

from __future__ import annotations

import datetime
import time
from functools import cache

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, models
from django.db.models import Model

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate, CertificateRequest
from apps.enrollment.models import AttemptCounter, CertificateTemplate
from apps.pki.models import CertificateAuthority


def available() -> bool:
    """On (``MDMCERTS_SCEP_ONE_STATEMENT``) and on PostgreSQL: the statement needs its
    data-modifying WITH and ON CONFLICT."""
    return settings.MDMCERTS_SCEP_ONE_STATEMENT and connection.vendor == "postgresql"


@cache
def _columns(model: type[Model], *, without: tuple[str, ...]) -> tuple:
    """Concrete fields written by an INSERT of ``model`` (no primary key, none of
    ``without``, which the statement fills from other rows)."""
    return tuple(
        f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in without
    )


# Fields whose Python value psycopg adapts as it is on PostgreSQL (what their
# ``get_db_prep_save`` returns unchanged there); any other field, including subclasses
# of these, is prepared by Django.
AS_IS = (
    models.CharField,
    models.TextField,
    models.BooleanField,
    models.IntegerField,
    models.BigIntegerField,
    models.PositiveIntegerField,
    models.PositiveSmallIntegerField,
    models.SmallIntegerField,
    models.ForeignKey,
    models.OneToOneField,
)


@cache
def _preparers(model: type[Model], without: tuple[str, ...]) -> tuple:
    """(attname, field or None) per column: None where the value goes as it is."""
    return tuple(
        (f.attname, None if type(f) in AS_IS else f) for f in _columns(model, without=without)
    )


def _values(instance: Model, model: type[Model], without: tuple[str, ...]) -> list:
    values = []
    for attname, field in _preparers(model, without):
        if field is None:
            values.append(getattr(instance, attname))
        else:
            values.append(field.get_db_prep_save(field.pre_save(instance, True), connection))
    return values


def _insert_list(fields: tuple, values: list) -> tuple[str, str]:
    """Column names and the SELECT list: a parameter per value, NULL written out (fewer
    parameters keep the statement within psycopg's cache of converted queries)."""
    quote = connection.ops.quote_name
    names = ", ".join(quote(f.column) for f in fields)
    select = ", ".join("NULL" if value is None else "%s" for value in values)
    return names, select


NEVER_BY_COUNT = 2**31 - 1  # psycopg's threshold for preparing a query by itself

ROWS = (
    (CertificateRequest, ("certificate_id",)),
    (Certificate, ()),
    (AuditEvent, ("object_id",)),
)


@cache
def _statement(nulls: tuple[tuple[bool, ...], ...]) -> str:
    """The statement for rows whose None values are where ``nulls`` says."""
    quote = connection.ops.quote_name
    lists = [
        _insert_list(_columns(model, without=without), [None if n else 0 for n in row_nulls])
        for (model, without), row_nulls in zip(ROWS, nulls, strict=True)
    ]
    (request_names, request_select), (cert_names, cert_select), (audit_names, audit_select) = lists
    counters = quote(AttemptCounter._meta.db_table)
    certificates = quote(Certificate._meta.db_table)
    # Names come from the models, quoted; every value is a parameter. The parameters are,
    # in order: template, now, scope, identifier (locked); template, version, CA,
    # version (fresh); the three rows' values; template, scope, identifier (cleared).
    return f"""
WITH locked AS (
    SELECT 1 FROM {counters}
    WHERE template_id = %s AND locked_until > %s AND scope = %s AND identifier = %s
), fresh AS (
    SELECT 1 FROM {quote(CertificateTemplate._meta.db_table)} t
    JOIN {quote(CertificateAuthority._meta.db_table)} ca ON ca.id = t.ca_id
    WHERE t.id = %s AND t.updated_at = %s AND ca.id = %s AND ca.updated_at = %s
), allocated AS (
    SELECT nextval(pg_get_serial_sequence('{certificates}', 'id')) AS id
    WHERE EXISTS (SELECT 1 FROM fresh) AND NOT EXISTS (SELECT 1 FROM locked)
), request AS (
    INSERT INTO {quote(CertificateRequest._meta.db_table)} ({request_names}, certificate_id)
    SELECT {request_select}, allocated.id FROM allocated
    ON CONFLICT (template_id, transaction_id) DO NOTHING
    RETURNING certificate_id
), certificate AS (
    INSERT INTO {certificates} (id, {cert_names})
    SELECT request.certificate_id, {cert_select} FROM request
    RETURNING id
), audit AS (
    INSERT INTO {quote(AuditEvent._meta.db_table)} ({audit_names}, object_id)
    SELECT {audit_select}, certificate.id::text FROM certificate
), cleared AS (
    UPDATE {counters} SET failures = 0
    WHERE template_id = %s AND scope = %s AND identifier = %s
      AND failures > 0 AND EXISTS (SELECT 1 FROM certificate)
)
SELECT id FROM certificate
"""  # noqa: S608


def record_enrollment(
    *,
    template: CertificateTemplate,
    request_row: CertificateRequest,
    certificate: Certificate,
    audit_event: AuditEvent,
    source_scope: str,
    source_identifier: str,
    now: datetime.datetime,
) -> int | None:
    """Insert the three rows and clear the source's failures in one statement; the new
    certificate's id, or None when the statement wrote nothing (see the module)."""
    identifier = source_identifier[:128]
    rows = [
        _values(instance, model, without)
        for instance, (model, without) in zip(
            (request_row, certificate, audit_event), ROWS, strict=True
        )
    ]
    nulls = tuple(tuple(value is None for value in row) for row in rows)
    params = [template.pk, now, source_scope, identifier]
    params += [template.pk, template.updated_at, template.ca.pk, template.ca.updated_at]
    for row in rows:
        params += [value for value in row if value is not None]
    params += [template.pk, source_scope, identifier]
    sql = _statement(nulls)
    for attempt in (1, 2):
        try:
            row = _execute(sql, params)
            break
        except (OperationalError, InterfaceError):
            # The connection this process kept died (a database restart): the statement
            # either committed or not, and a second try (a replay if it did) settles it.
            if attempt == 2 or connection.in_atomic_block:
                raise
            connection.close()
    return row[0] if row else None


def _execute(sql: str, params: list):
    """Run the statement as a prepared statement of this connection.

    Django's cursor binds values on the client and PostgreSQL parses and plans the
    statement each time; a psycopg server-side cursor lets it prepare once per connection.
    The health check Django would make first (``SELECT 1``) is skipped: ``record_enrollment``
    retries once on a dead connection instead."""
    connection.health_check_done = True
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns psycopg's prepared statements off (its own cursors bind on the
        # client and never prepare); ``prepare=True`` below needs them on. No other
        # query is affected: only server-side cursors prepare, and only this one exists.
        raw.prepare_threshold = NEVER_BY_COUNT
    started = time.monotonic()
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        row = cursor.fetchone()
    if connection.queries_logged:
        connection.queries_log.append(
            {"sql": sql, "time": f"{time.monotonic() - started:.3f}", "one_statement": True}
        )
    return row
