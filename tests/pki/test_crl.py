"""CRL publication: the stored CRL, its number, its public URLs, and openssl's view."""

import datetime
import re
import threading
import time

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from apps.certificates.choices import CertificateSource, CertificateStatus
from apps.certificates.models import Certificate
from apps.certificates.services import current_crl, revoke_certificate
from apps.pki.models import CertificateRevocationList
from apps.pki.revocation import publish_crl, publish_due_crls, published_crl
from apps.pki.services import CRL_VALIDITY
from tests.factories import force_ca, force_certificate, force_template
from tests.openssl import openssl

pytestmark = pytest.mark.django_db


@pytest.fixture
def template():
    return force_template()


def crl_text(der: bytes) -> str:
    run = openssl("crl", "-inform", "DER", "-noout", "-text", input=der)
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout.decode()


def openssl_serial(serial_hex: str) -> str:
    digits = serial_hex.upper()
    return digits.rjust(len(digits) + len(digits) % 2, "0")


def listed_serials(text: str) -> list[str]:
    return re.findall(r"Serial Number: ([0-9A-F]+)", text)


def crl_number(text: str) -> int:
    return int(re.search(r"X509v3 CRL Number: *\n\s*(\d+)", text).group(1))


def revoke(certificate: Certificate, reason: str, capture) -> None:
    with capture(execute=True):
        revoke_certificate(certificate=certificate, reason=reason)


def test_revoking_publishes_a_crl_of_exactly_the_revoked_serials_with_their_reasons(
    template, django_capture_on_commit_callbacks
):
    compromised, superseded, good = (force_certificate(template=template) for _ in range(3))

    revoke(compromised, "key_compromise", django_capture_on_commit_callbacks)
    revoke(superseded, "superseded", django_capture_on_commit_callbacks)

    crl = CertificateRevocationList.objects.get(ca=template.ca)
    text = crl_text(bytes(crl.der))
    assert sorted(listed_serials(text)) == sorted(
        [openssl_serial(compromised.serial), openssl_serial(superseded.serial)]
    )
    assert openssl_serial(good.serial) not in text
    entries = {format(e.serial_number, "x"): e for e in x509.load_der_x509_crl(bytes(crl.der))}
    reasons = {
        serial: entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
        for serial, entry in entries.items()
    }
    assert reasons == {compromised.serial: "key_compromise", superseded.serial: "superseded"}
    assert "Key Compromise" in text and "Superseded" in text
    assert crl.revoked_count == 2
    assert (
        crl_number(text)
        == crl.number
        == template.ca.__class__.objects.get(pk=template.ca.pk).crl_number
    )


def test_an_unspecified_reason_is_left_out_of_the_entry(
    template, django_capture_on_commit_callbacks
):
    certificate = force_certificate(template=template)

    revoke(certificate, "unspecified", django_capture_on_commit_callbacks)

    [entry] = x509.load_der_x509_crl(bytes(published_crl(template.ca).der))
    assert entry.serial_number == int(certificate.serial, 16)
    assert len(entry.extensions) == 0


def test_the_crl_number_grows_with_each_publication(template, django_capture_on_commit_callbacks):
    first = publish_crl(template.ca).number
    revoke(
        force_certificate(template=template), "key_compromise", django_capture_on_commit_callbacks
    )
    second = published_crl(template.ca).number
    third = publish_crl(template.ca).number

    assert [first, second, third] == [1, 2, 3]
    assert crl_number(crl_text(bytes(published_crl(template.ca).der))) == 3


def test_scep_getcrl_serves_the_published_crl_instead_of_signing_a_new_one(template):
    first = current_crl(template.ca)
    second = current_crl(template.ca)

    assert first == second == bytes(CertificateRevocationList.objects.get(ca=template.ca).der)
    assert crl_number(crl_text(first)) == 1


def test_openssl_verify_with_the_crl_rejects_the_revoked_and_accepts_the_good(
    template, django_capture_on_commit_callbacks, tmp_path
):
    revoked, good = force_certificate(template=template), force_certificate(template=template)
    revoke(revoked, "key_compromise", django_capture_on_commit_callbacks)
    (tmp_path / "ca.pem").write_text(template.ca.certificate_pem)
    (tmp_path / "crl.pem").write_text(published_crl(template.ca).pem)
    (tmp_path / "revoked.pem").write_text(revoked.certificate_pem)
    (tmp_path / "good.pem").write_text(good.certificate_pem)
    args = ["verify", "-crl_check", "-CAfile", str(tmp_path / "ca.pem")]
    args += ["-CRLfile", str(tmp_path / "crl.pem")]

    rejected = openssl(*args, str(tmp_path / "revoked.pem"))
    accepted = openssl(*args, str(tmp_path / "good.pem"))

    assert rejected.returncode != 0
    assert "certificate revoked" in (rejected.stdout + rejected.stderr).decode()
    assert accepted.returncode == 0, accepted.stderr.decode()


def test_the_crl_url_serves_der_with_caching_until_next_update(template, client):
    with time_machine.travel(datetime.datetime(2027, 3, 1, 12, tzinfo=datetime.UTC), tick=False):
        response = client.get(f"/pki/{template.ca.slug}/crl")

    crl = CertificateRevocationList.objects.get(ca=template.ca)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-crl"
    assert response.content == bytes(crl.der)
    assert crl.next_update == datetime.datetime(2027, 3, 8, 12, tzinfo=datetime.UTC)
    assert response["Cache-Control"] == f"public, max-age={int(CRL_VALIDITY.total_seconds())}"
    assert response["Expires"] == "Mon, 08 Mar 2027 12:00:00 GMT"
    assert response["ETag"] == f'"crl-{crl.number}"'


def test_the_crl_url_is_the_one_issued_certificates_carry(template, client):
    certificate = force_certificate(template=template).certificate
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = points[0].full_name[0].value

    response = client.get(url.removeprefix(settings.PUBLIC_BASE_URL))

    assert url == template.ca.public_url("crl")
    assert response.status_code == 200


def test_the_pem_url_serves_the_same_crl_in_pem(template, client):
    response = client.get(f"/pki/{template.ca.slug}/crl.pem")

    crl = CertificateRevocationList.objects.get(ca=template.ca)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pem-file"
    assert response.content.decode().startswith("-----BEGIN X509 CRL-----")
    pem = x509.load_pem_x509_crl(response.content)
    assert pem.public_bytes(serialization.Encoding.DER) == bytes(crl.der)


def test_an_unknown_ca_is_404_and_publishes_nothing(client):
    assert client.get("/pki/no-such-ca/crl").status_code == 404
    assert client.get("/pki/no-such-ca/crl.pem").status_code == 404
    assert CertificateRevocationList.objects.count() == 0


def test_the_crl_url_refuses_post(template, client):
    assert client.post(f"/pki/{template.ca.slug}/crl").status_code == 405
    assert CertificateRevocationList.objects.count() == 0


def test_the_sweep_republishes_only_crls_near_their_next_update():
    start = datetime.datetime(2027, 3, 1, 12, tzinfo=datetime.UTC)
    with time_machine.travel(start, tick=False):
        old, fresh = force_ca(), force_ca()
        publish_crl(old)
    with time_machine.travel(start + datetime.timedelta(days=5, hours=13), tick=False):
        publish_crl(fresh)
        now = timezone.now()
        published = publish_due_crls(now, margin=datetime.timedelta(days=2))
        again = publish_due_crls(now, margin=datetime.timedelta(days=2))

    assert [crl.ca_id for crl in published] == [old.pk]
    assert again == []
    assert CertificateRevocationList.objects.get(ca=old).number == 2
    assert CertificateRevocationList.objects.get(ca=fresh).number == 1


def test_the_sweep_publishes_a_first_crl_for_a_ca_that_has_none():
    ca = force_ca()

    published = publish_due_crls()

    assert [crl.ca_id for crl in published] == [ca.pk]
    assert published[0].number == 1


def test_a_stale_crl_is_republished_when_fetched(template):
    with time_machine.travel(datetime.datetime(2027, 3, 1, 12, tzinfo=datetime.UTC), tick=False):
        publish_crl(template.ca)
    with time_machine.travel(datetime.datetime(2027, 3, 9, 12, tzinfo=datetime.UTC), tick=False):
        crl = published_crl(template.ca)

    assert crl.number == 2
    assert crl.next_update == datetime.datetime(2027, 3, 16, 12, tzinfo=datetime.UTC)


@pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="SQLite's shared in-memory test database reports table locks instead of waiting",
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_publications_take_distinct_growing_numbers():
    ca = force_ca()
    numbers, errors = [], []

    def publish() -> None:
        try:
            numbers.append(publish_crl(ca).number)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=publish) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    assert CertificateRevocationList.objects.get(ca=ca).number == 6


def test_a_crl_of_10000_revoked_certificates_is_one_query_and_fast(
    template, django_assert_max_num_queries
):
    ca = template.ca
    now = timezone.now()
    Certificate.objects.bulk_create(
        [
            Certificate(
                ca=ca,
                serial=format(0x1000_0000_0000 + i, "x"),
                subject=f"CN=bulk-{i}",
                not_before=now,
                not_after=now + datetime.timedelta(days=365),
                fingerprint_sha256=format(i, "064x"),
                certificate_pem="",
                status=CertificateStatus.REVOKED,
                revoked_at=now,
                revocation_reason="key_compromise" if i % 2 else "unspecified",
                source=CertificateSource.MANUAL,
            )
            for i in range(10_000)
        ],
        batch_size=1000,
    )
    connection.queries_log.clear()

    started = time.perf_counter()
    # Lock the CA, read the CRL, bump its number, read the revoked, store the CRL
    # (and the savepoint around them).
    with django_assert_max_num_queries(7) as captured:
        crl = publish_crl(ca)
    elapsed = time.perf_counter() - started

    print(f"\nCRL of 10,000 revoked certificates published in {elapsed:.3f} s")
    inventory = [q for q in captured.captured_queries if "certificates_certificate" in q["sql"]]
    assert len(inventory) == 1
    assert crl.revoked_count == 10_000
    assert len(x509.load_der_x509_crl(bytes(crl.der))) == 10_000
    assert elapsed < 5
