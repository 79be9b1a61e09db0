"""The lifecycle tasks under a real Celery worker on Redis, against the test database on
PostgreSQL (the worker is another process: it needs a database server it can reach).

Ten renewal sweeps at once re-trigger each certificate once; a worker killed in the middle
of a renewal leaves exactly one re-trigger after the message comes back (acks_late and
reject_on_worker_lost); with the broker down SCEP enrollment goes on, and the lifecycle
catches up when the broker returns.

The worker runs at the real time, so certificates are made due by moving their validity
in the inventory (the sweeps read the inventory's dates, not the certificate's)."""

import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from celery import Celery
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerDown

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate
from apps.profiles.models import Delivery
from tests.certificates.lifecycle_fixtures import *  # noqa: F403
from tests.certificates.lifecycle_fixtures import Laptop, crl_serials
from tests.subprocesses import database_url, free_port

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 14  # apart from the development broker's db 0
DEADLINE = 90  # seconds for the worker to start or to finish what it was sent
RENEWAL_MESSAGE = "renewal re-triggered: the profile that carries it is delivered again"


def redis_address() -> tuple[str, int]:
    url = os.environ.get("CELERY_BROKER_URL", "")
    parsed = urllib.parse.urlsplit(url if url.startswith("redis://") else "redis://127.0.0.1")
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


def redis_reachable() -> bool:
    try:
        with socket.create_connection(redis_address(), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def postgresql(transactional_db) -> dict:
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL on PostgreSQL: the worker process shares the database")
    if not redis_reachable():
        pytest.skip("needs Redis at {}:{} (the Celery broker)".format(*redis_address()))
    return connection.settings_dict


@dataclass
class Worker:
    """``celery -A mdmcerts worker`` in a subprocess, consuming its own queue."""

    process: subprocess.Popen
    log: Path
    queue: str
    broker: str

    def sender(self, broker: str | None = None) -> Celery:
        """A Celery client that sends tasks as beat does (to ``broker``, default the
        worker's)."""
        # Not the current app: shared tasks elsewhere in the run must stay bound to mdmcerts'.
        return Celery("beat-in-the-test", broker=broker or self.broker, set_as_current=False)

    def send(self, name: str, *, times: int = 1) -> None:
        client = self.sender()
        for _ in range(times):
            client.send_task(name, queue=self.queue)
        client.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def succeeded(self, name: str) -> int:
        return len(re.findall(rf"Task {re.escape(name)}\[[^\]]+\] succeeded", self.text()))

    def wait_for(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not done():
            if self.process.poll() is not None:
                pytest.fail(f"the worker exited ({self.process.returncode}):\n{self.text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the worker did not {what} in {DEADLINE} s:\n{self.text()}")
            time.sleep(0.1)

    def pool_processes(self) -> list[int]:
        """The pids of the worker's pool (its child processes)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        client = self.sender()
        with client.connection_for_write() as conn:
            conn.default_channel.queue_delete(self.queue)
        client.close()


@pytest.fixture
def start_worker(postgresql, tmp_path, monkeypatch) -> Iterator[Callable[..., Worker]]:
    """``start_worker(concurrency)``: a worker on Redis and the test database, ready."""
    started: list[Worker] = []
    host, port = redis_address()
    # Celery prefers CELERY_BROKER_URL from the environment to a broker given in code
    # (``make test`` sets memory://, CI its Redis db): the senders here name their broker.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)

    def start(concurrency: int = 4) -> Worker:
        queue = f"lifecycle-test-{uuid.uuid4().hex[:12]}"
        broker = f"redis://{host}:{port}/{REDIS_DB}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url(postgresql),
            "CELERY_BROKER_URL": broker,
            "DJANGO_SETTINGS_MODULE": "mdmcerts.settings",
        }
        log = tmp_path / f"{queue}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "mdmcerts", "worker",
            "--queues", queue, "--concurrency", str(concurrency), "--pool", "prefork",
            "--hostname", f"{queue}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", "INFO",
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )  # fmt: skip
        worker = Worker(process=process, log=log, queue=queue, broker=broker)
        started.append(worker)
        worker.wait_for("start", lambda: " ready." in worker.text())
        return worker

    yield start
    for worker in started:
        worker.stop()


def make_due(*certificates: Certificate) -> None:
    """Move the certificates' validity in the inventory so that they are 10 days from
    expiry, well inside the 30-day renewal window, now."""
    now = timezone.now()
    Certificate.objects.filter(pk__in=[cert.pk for cert in certificates]).update(
        not_before=now - datetime.timedelta(days=355), not_after=now + datetime.timedelta(days=10)
    )


def renewal_events(certificate: Certificate) -> int:
    return AuditEvent.objects.filter(object_id=str(certificate.pk), message=RENEWAL_MESSAGE).count()


def test_ten_concurrent_renewal_sweeps_re_trigger_each_certificate_once(
    start_worker, enroll_laptop, profile
):
    laptops = [enroll_laptop(f"SN-{n:02}") for n in range(12)]
    make_due(*(laptop.certificate for laptop in laptops))
    worker = start_worker(concurrency=4)

    worker.send("certificates.renewal_sweep", times=10)
    worker.wait_for("run ten sweeps", lambda: worker.succeeded("certificates.renewal_sweep") == 10)

    for laptop in laptops:
        assert Certificate.objects.get(pk=laptop.certificate.pk).renewal_triggered_at
        assert renewal_events(laptop.certificate) == 1
    assert sorted(Delivery.objects.values_list("generation", flat=True)) == [2] * 12


def blocked_backends(database: str) -> set[int]:
    """Backends of ``database`` waiting for a lock on a profile delivery."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
            "AND query LIKE 'UPDATE \"profiles_delivery\"%%'",
            [database],
        )
        return {row[0] for row in cursor.fetchall()}


def test_a_worker_killed_in_the_middle_of_a_renewal_leaves_one_re_trigger(
    start_worker, enroll_laptop, profile, postgresql
):
    laptops = [enroll_laptop(f"SN-{n}") for n in range(3)]
    make_due(*(laptop.certificate for laptop in laptops))
    worker = start_worker(concurrency=1)
    database = postgresql["NAME"]
    holder = psycopg.connect(database_url(postgresql).replace("postgres://", "postgresql://"))
    try:
        # The test holds the deliveries, so the sweep stops half-way: certificates claimed
        # and marked, deliveries not yet redelivered, nothing committed.
        holder.execute("SELECT id FROM profiles_delivery FOR UPDATE")
        worker.send("certificates.renewal_sweep")
        worker.wait_for("block on the deliveries", lambda: blocked_backends(database))
        first = blocked_backends(database)
        [child] = worker.pool_processes()

        os.kill(child, signal.SIGKILL)
        # The database notices the lost client (TCP keepalive, or an administrator) and
        # rolls its transaction back; here the test is that administrator.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", [list(first)])
        worker.wait_for(
            "run the message again",
            lambda: blocked_backends(database) and not blocked_backends(database) & first,
        )
    finally:
        holder.rollback()
        holder.close()
    worker.wait_for("finish it", lambda: worker.succeeded("certificates.renewal_sweep") == 1)

    assert "WorkerLostError" in worker.text() or "signal 9" in worker.text()
    for laptop in laptops:
        assert renewal_events(laptop.certificate) == 1
        assert Certificate.objects.get(pk=laptop.certificate.pk).renewal_triggered_at
    assert sorted(Delivery.objects.values_list("generation", flat=True)) == [2, 2, 2]


def test_with_the_broker_down_enrollment_goes_on_and_the_lifecycle_catches_up(
    start_worker, enroll_laptop, profile, template, ca
):
    template.revocation_grace_hours = 0  # revoked at the first sweep after superseding
    template.save()
    laptop = enroll_laptop("SN-DUE")
    make_due(laptop.certificate)
    worker = start_worker(concurrency=2)

    down = worker.sender(broker=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(BrokerDown):
        down.send_task("certificates.renewal_sweep", queue=worker.queue, retry=False)
    down.close()
    newcomer: Laptop = enroll_laptop("SN-NEW")  # over SCEP, as ever
    assert newcomer.certificate.status == "active"

    worker.send("certificates.renewal_sweep")  # the broker is back: beat's next run
    worker.wait_for("renew", lambda: worker.succeeded("certificates.renewal_sweep") == 1)
    renewed = laptop.enroll_from(laptop.checkin())
    worker.send("certificates.revocation_sweep")
    worker.wait_for("revoke", lambda: worker.succeeded("certificates.revocation_sweep") == 1)

    old = Certificate.objects.get(pk=laptop.certificate.pk)
    assert renewed.replaces == old
    assert (old.status, old.revocation_reason) == ("revoked", "superseded")
    assert Certificate.objects.get(pk=newcomer.certificate.pk).renewal_triggered_at is None
    assert crl_serials(ca) == {old.serial.lstrip("0"): "Superseded"}
