"""Exactly once under concurrency, against the live server (``live_scep``).

On PostgreSQL every server thread has its own connection: copies of one PKCSReq race to
insert the request row, and the losers wait on its unique index, then answer what the
winner recorded. On SQLite's in-memory test database the server threads share the test's
one connection, so the fixture serves requests one at a time: there the copies arrive
together but are answered in turn (see ``tests/scep/conftest.py``).
"""

import threading

import pytest

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate, CertificateRequest
from apps.enrollment.choices import ChallengeType
from apps.scep.protocol import FailInfo, MessageType, PKIStatus
from apps.scep.protocol import client as protocol_client
from tests.scep.client import Identity, make_csr, rsa_key

pytestmark = pytest.mark.django_db(transaction=True)
COPIES = 20
DIFFERENT = 8


def all_at_once(count: int, work) -> list:
    """``work(i)`` for i in range(count), in threads released together; results in order."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as exc:  # reported in the assertion, not lost in a thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_twenty_copies_of_one_pkcsreq_yield_one_certificate(live_scep, template_static, capsys):
    client = live_scep.client(template_static)
    key = rsa_key()
    csr = make_csr(key, challenge="static-Challenge-7f3k")
    signer = Identity.self_signed(key, csr.subject)
    transaction_id = protocol_client.transaction_id_for(key.public_key())
    der, nonce = client.message(
        message_type=MessageType.PKCS_REQ,
        payload=protocol_client.pkcs_req_payload(csr),
        signer=signer,
        transaction_id=transaction_id,
    )

    replies = all_at_once(COPIES, lambda _: client.send(der))
    results = [
        client.read(reply, signer=signer, transaction_id=transaction_id, nonce=nonce)
        for reply in replies
    ]

    assert [result.status for result in results] == [PKIStatus.SUCCESS] * COPIES
    (certificate,) = {result.certificates[0] for result in results}
    assert certificate.public_key() == key.public_key()
    row = Certificate.objects.get()
    assert row.certificate == certificate
    assert CertificateRequest.objects.get().certificate == row
    assert AuditEvent.objects.filter(action="issue").count() == 1
    assert not AuditEvent.objects.filter(action="issue_failed").exists()
    assert live_scep.requests.count(("POST", "PKIOperation")) == COPIES
    with capsys.disabled():
        print(f"\n{COPIES} copies: at most {live_scep.most_in_flight} handled at the same time")


def test_eight_different_requests_at_once_all_succeed_with_distinct_serials(
    live_scep, template_none
):
    client = live_scep.client(template_none)
    client.ca_certs  # noqa: B018 -- GetCACert once, before the threads
    keys = [rsa_key() for _ in range(DIFFERENT)]

    results = all_at_once(DIFFERENT, lambda i: client.pkcs_req(make_csr(keys[i]), keys[i]))

    assert [result.status for result in results] == [PKIStatus.SUCCESS] * DIFFERENT
    assert [result.certificates[0].public_key() for result in results] == [
        key.public_key() for key in keys
    ]
    serials = {result.certificates[0].serial_number for result in results}
    assert len(serials) == DIFFERENT
    assert set(Certificate.objects.values_list("serial", flat=True)) == {
        format(serial, "x") for serial in serials
    }
    assert CertificateRequest.objects.filter(status="issued").count() == DIFFERENT


def test_requests_racing_for_one_dynamic_challenge_get_one_certificate(
    live_scep, make_template, challenge_for, device
):
    # Allow the losers' failures: all come from 127.0.0.1, which would be locked out.
    template = make_template(
        ChallengeType.DYNAMIC, subject="O=Zylker,CN=$DEVICE_SN$", max_failed_attempts=DIFFERENT
    )
    challenge = challenge_for(template)
    client = live_scep.client(template)
    client.ca_certs  # noqa: B018 -- GetCACert once, before the threads
    keys = [rsa_key() for _ in range(DIFFERENT)]
    csrs = [make_csr(key, challenge=challenge) for key in keys]

    results = all_at_once(DIFFERENT, lambda i: client.pkcs_req(csrs[i], keys[i]))

    statuses = [result.status for result in results]
    assert sorted(statuses) == [PKIStatus.SUCCESS] + [PKIStatus.FAILURE] * (DIFFERENT - 1)
    refused = [result for result in results if result.status is PKIStatus.FAILURE]
    assert {(r.fail_info, r.fail_info_text) for r in refused} == {
        (FailInfo.BAD_REQUEST, "the challenge password is wrong, expired or used")
    }
    row = Certificate.objects.get()
    assert row.device == device
    assert CertificateRequest.objects.count() == 1
    assert AuditEvent.objects.filter(action="issue_failed").count() == DIFFERENT - 1
