"""The production web tier as the README starts it: gunicorn's gevent worker with a pool of
PostgreSQL connections (``DATABASE_POOL_MAX_SIZE``), in a subprocess on the test database.

One worker process serves concurrent enrollments in greenlets, each with a pooled
connection; psycopg waits cooperatively, so a commit in one greenlet lets another run.
Exactly once and durability must hold there as they do under sync workers.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from apps.certificates.models import Certificate, CertificateRequest
from apps.scep.protocol import PKIStatus
from tests.scep.client import ScepClient, UrlTransport, make_csr, rsa_key
from tests.scep.conftest import STATIC_CHALLENGE, endpoint_path
from tests.subprocesses import database_url, free_port

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
ENROLLMENTS = 12
STARTUP_SECONDS = 60


def wait_until_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited {process.returncode}:\n{log.read_text()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not listen on {port}:\n{log.read_text()}")


@pytest.fixture
def gevent_server(transactional_db, tmp_path) -> Iterator[str]:
    """``http://127.0.0.1:<port>``: one gevent worker, 8 greenlets, a pool of 4."""
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL on PostgreSQL: the server process shares the database")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "DATABASE_POOL_MAX_SIZE": "4",
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,
        "MDMCERTS_KEK": settings.MDMCERTS_KEK,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "DJANGO_SETTINGS_MODULE": "mdmcerts.settings",
    }
    command = [
        sys.executable, "-m", "gunicorn", "mdmcerts.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gevent",
        "--worker-connections", "8", "--no-control-socket", "--limit-request-line", "16384",
    ]  # fmt: skip
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_listening(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_gevent_worker_with_pooled_connections_issues_each_concurrent_request_once(
    gevent_server, template_static
):
    client = ScepClient(UrlTransport(gevent_server), endpoint_path(template_static))
    assert client.ca_certs  # GetCACert once, before the burst
    keys = [rsa_key() for _ in range(ENROLLMENTS)]
    results: list = [None] * ENROLLMENTS
    barrier = threading.Barrier(ENROLLMENTS)

    def enroll(index: int) -> None:
        csr = make_csr(keys[index], challenge=STATIC_CHALLENGE)
        barrier.wait()
        try:
            results[index] = client.pkcs_req(csr, keys[index])
        except Exception as exc:  # shown in the assertion, not lost in the thread
            results[index] = exc

    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(ENROLLMENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert [getattr(r, "status", r) for r in results] == [PKIStatus.SUCCESS] * ENROLLMENTS
    serials = {r.certificates[0].serial_number for r in results}
    assert len(serials) == ENROLLMENTS
    recorded = Certificate.objects.filter(template=template_static)
    assert {int(serial, 16) for serial in recorded.values_list("serial", flat=True)} == serials
    assert CertificateRequest.objects.filter(status="issued").count() == ENROLLMENTS


def test_a_replayed_request_gets_the_same_certificate_from_the_gevent_worker(
    gevent_server, template_static
):
    client = ScepClient(UrlTransport(gevent_server), endpoint_path(template_static))
    key = rsa_key()
    csr = make_csr(key, challenge=STATIC_CHALLENGE)

    first = client.pkcs_req(csr, key)
    again = client.pkcs_req(csr, key)

    assert first.status is again.status is PKIStatus.SUCCESS
    assert again.certificates[0].serial_number == first.certificates[0].serial_number
    assert Certificate.objects.count() == 1
