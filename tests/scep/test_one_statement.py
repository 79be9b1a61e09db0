"""The one-statement enrollment (apps/scep/commit.py) on PostgreSQL: a successful PKCSReq
writes the same rows as the general path, in one statement, and whenever it must not
decide (lockout, an endpoint changed since this process loaded it, a replay, a dead
connection) the general path answers as it always does.

Needs PostgreSQL (the statement uses a data-modifying WITH); CI runs these there. On
SQLite every enrollment takes the general path, which the rest of tests/scep covers.
"""

import datetime

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import snapshot
from apps.certificates.models import Certificate, CertificateRequest
from apps.enrollment.models import AttemptCounter
from apps.enrollment.services import save_template
from apps.scep import services
from apps.scep.protocol import FailInfo, PKIStatus
from tests.factories import force_ca
from tests.scep.client import make_csr, rsa_key
from tests.scep.conftest import STATIC_CHALLENGE, nothing_issued

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="needs PostgreSQL (DATABASE_URL): the one-statement enrollment exists only there",
    ),
]
SOURCE = "192.0.2.10"


@pytest.fixture(autouse=True)
def fresh_endpoints():
    """Each test starts with no endpoint loaded in this process."""
    services._loaded.clear()
    yield
    services._loaded.clear()


def enroll(scep, template, *, challenge=STATIC_CHALLENGE, remote_addr=SOURCE):
    key = rsa_key()
    return key, scep(template, remote_addr=remote_addr).pkcs_req(
        make_csr(key, challenge=challenge), key
    )


def test_a_successful_pkcsreq_is_written_in_one_statement(scep, template_static):
    client = scep(template_static)
    first_key, second_key = rsa_key(), rsa_key()
    client.pkcs_req(make_csr(first_key, challenge=STATIC_CHALLENGE), first_key)  # loads it
    with CaptureQueriesContext(connection) as queries:
        result = client.pkcs_req(make_csr(second_key, challenge=STATIC_CHALLENGE), second_key)

    assert result.status is PKIStatus.SUCCESS
    assert [q.get("one_statement") for q in queries.captured_queries] == [True]
    serial = format(result.certificates[0].serial_number, "x")
    row = CertificateRequest.objects.get(certificate__serial=serial)
    assert row.status == "issued" and row.certificate.certificate == result.certificates[0]
    assert (
        AuditEvent.objects.filter(
            action="issue", object_id=str(row.certificate_id), content_type__model="certificate"
        ).count()
        == 1
    )


def comparable(instance, ignore: set[str]) -> dict:
    return {k: v for k, v in snapshot(instance).items() if k not in ignore}


def test_it_writes_exactly_the_rows_the_general_path_writes(scep, template_static):
    enroll(scep, template_static)
    _, fast = enroll(scep, template_static)
    with override_settings(MDMCERTS_SCEP_ONE_STATEMENT=False):
        _, general = enroll(scep, template_static)

    def rows(result):
        cert = Certificate.objects.get(serial=format(result.certificates[0].serial_number, "x"))
        request_row = CertificateRequest.objects.get(certificate=cert)
        event = AuditEvent.objects.get(
            action="issue", object_id=str(cert.pk), content_type__model="certificate"
        )
        return cert, request_row, event

    varying = {
        "id",
        "serial",
        "fingerprint_sha256",
        "certificate_pem",
        "not_before",
        "not_after",
        "created_at",
        "transaction_id",
        "public_key_sha256",
        "public_key_der",
        "certificate",
        "object_id",
        "object_repr",
        "decided_at",
    }
    for fast_row, general_row in zip(rows(fast), rows(general), strict=True):
        assert comparable(fast_row, varying) == comparable(general_row, varying)
    cert_fast, request_fast, event_fast = rows(fast)
    assert request_fast.created_at == cert_fast.created_at == event_fast.created_at
    assert event_fast.object_repr == str(cert_fast)


def test_a_changed_static_challenge_applies_at_once_in_a_process_that_loaded_the_old(
    scep, template_static
):
    enroll(scep, template_static)
    before = snapshot(template_static)
    save_template(template=template_static, before=before, static_challenge="the-new-one-9")

    _, old = enroll(scep, template_static)
    _, new = enroll(scep, template_static, challenge="the-new-one-9")

    assert (old.status, old.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert old.fail_info_text == "the challenge password is wrong"
    assert new.status is PKIStatus.SUCCESS
    assert Certificate.objects.count() == 2


def test_a_changed_subject_applies_at_once_in_a_process_that_loaded_the_old(scep, template_static):
    enroll(scep, template_static)
    before = snapshot(template_static)
    template_static.subject = "O=mdmcerts tests,CN=renamed"
    save_template(template=template_static, before=before)

    _, result = enroll(scep, template_static)

    assert result.certificates[0].subject.rfc4514_string() == "CN=renamed,O=mdmcerts tests"


def test_a_locked_out_source_is_refused_and_nothing_is_written(scep, template_static):
    enroll(scep, template_static)
    Certificate.objects.all().delete()
    CertificateRequest.objects.all().delete()
    AttemptCounter.objects.create(
        template=template_static,
        scope="source",
        identifier=SOURCE,
        failures=0,
        locked_until=timezone.now() + datetime.timedelta(seconds=90),
    )

    _, result = enroll(scep, template_static)
    _, elsewhere = enroll(scep, template_static, remote_addr="192.0.2.99")

    assert (result.status, result.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert result.fail_info_text.startswith("too many failed attempts; try again in")
    assert elsewhere.status is PKIStatus.SUCCESS
    assert Certificate.objects.count() == 1


def test_a_success_clears_the_sources_failed_attempts(scep, template_static):
    enroll(scep, template_static)
    enroll(scep, template_static, challenge="wrong")
    enroll(scep, template_static, challenge="wrong")
    counter = AttemptCounter.objects.get(template=template_static, identifier=SOURCE)
    assert counter.failures == 2

    enroll(scep, template_static)

    counter.refresh_from_db()
    assert counter.failures == 0


def test_a_replayed_pkcsreq_gets_the_first_certificate(scep, template_static):
    enroll(scep, template_static)
    key = rsa_key()
    client = scep(template_static)
    csr = make_csr(key, challenge=STATIC_CHALLENGE)
    first = client.pkcs_req(csr, key)
    again = client.pkcs_req(csr, key)

    assert first.status is again.status is PKIStatus.SUCCESS
    assert again.certificates == first.certificates
    assert CertificateRequest.objects.filter(certificate__isnull=False).count() == 2


def test_a_refused_request_writes_nothing(scep, template_static):
    enroll(scep, template_static)
    Certificate.objects.all().delete()
    CertificateRequest.objects.all().delete()

    issued_events = AuditEvent.objects.filter(action="issue").count()

    _, result = enroll(scep, template_static, challenge="not it")

    assert result.status is PKIStatus.FAILURE
    assert nothing_issued()
    assert AuditEvent.objects.filter(action="issue").count() == issued_events
    assert AttemptCounter.objects.get(template=template_static, identifier=SOURCE).failures == 1


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_database_dropped_is_replaced_and_the_request_succeeds(
    scep, make_template
):
    template = make_template("static")
    client = scep(template)
    first_key, second_key = rsa_key(), rsa_key()
    client.pkcs_req(make_csr(first_key, challenge=STATIC_CHALLENGE), first_key)
    pid = connection.connection.info.backend_pid
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        # The server ends the session this process kept, as a restart would.
        other.execute("SELECT pg_terminate_backend(%s)", [pid])

    result = client.pkcs_req(make_csr(second_key, challenge=STATIC_CHALLENGE), second_key)

    assert result.status is PKIStatus.SUCCESS
    assert connection.connection.info.backend_pid != pid
    assert Certificate.objects.filter(template=template).count() == 2


def test_an_endpoint_loaded_as_its_ra_is_made_carries_the_ca_row_as_saved(make_template):
    """The statement compares the CA's updated_at with the loaded one: loading the
    endpoint of a CA without an RA saves the CA, and the template must see that row."""
    ca = force_ca()
    template = make_template("static", ca=ca)
    assert ca.ra_certificate_pem == ""

    endpoint = services.endpoint_for(template.slug)

    assert endpoint.ca.ra_certificate is not None
    assert endpoint.template.ca is endpoint.ca
    assert endpoint.ca.updated_at == type(ca).objects.get(pk=ca.pk).updated_at
