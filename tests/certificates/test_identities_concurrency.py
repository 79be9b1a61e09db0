"""Server-generated identities under concurrency, on PostgreSQL: sweeps and deliveries at
the same moment still give each device one identity per template, and two purges at once
delete and revoke each identity once.

Every thread has its own database connection, so the device row locks and the unique
constraint on current identities are what keeps the count right. SQLite (one writer at a
time, and one shared connection in the test database) cannot show a race: skipped there.

Persona: dana owns the laptops of the group."""

import datetime
import threading

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.certificates.identities import (
    current_identity,
    generate_pending_identities,
    purge_undelivered_identities,
)
from apps.certificates.models import Certificate, Identity
from apps.devices.models import DeviceGroup
from apps.profiles.models import ProfileAssignment
from tests.certificates.test_identities import laptop, pkcs12_profile, server_key_template
from tests.factories import force_ca, force_user

pytestmark = pytest.mark.django_db(transaction=True)
THREADS = 8


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the race needs PostgreSQL (separate connections, row locks)")


@pytest.fixture
def setup():
    """Three laptops of dana in a group, two profiles with a PKCS#12 payload of one
    template assigned to it (rows made directly: no generation is enqueued)."""
    dana = force_user("dana", email="dana@zylker.com")
    group = DeviceGroup.objects.create(name="Zylker laptops")
    group.devices.set([laptop(dana, f"SN-DANA-{n}") for n in range(3)])
    template = server_key_template(force_ca())
    for profile in (pkcs12_profile(template), pkcs12_profile(template)):
        ProfileAssignment.objects.create(profile=profile, group=group)
    return group, template


def all_at_once(count: int, work) -> list:
    """``work(i)`` for i in range(count) in threads released together; results in order
    (an exception is a result, so that it shows in the assertion)."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_sweeps_and_deliveries_at_once_generate_one_identity_per_device(setup):
    group, template = setup
    devices = list(group.devices.order_by("pk"))

    def work(index: int):
        if index % 2:
            return generate_pending_identities()
        return current_identity(device=devices[index % 3], template=template).pk

    results = all_at_once(THREADS, work)

    assert not [r for r in results if isinstance(r, Exception)], results
    assert Identity.objects.count() == 3
    assert sorted(Identity.objects.values_list("device", flat=True)) == [d.pk for d in devices]
    assert Certificate.objects.count() == 3
    assert AuditEvent.objects.filter(action="issue").count() == 3
    on_demand = {r for i, r in enumerate(results) if i % 2 == 0}
    assert on_demand <= set(Identity.objects.values_list("pk", flat=True))


def test_two_purges_at_once_delete_and_revoke_each_identity_once(setup):
    generate_pending_identities()
    later = timezone.now() + datetime.timedelta(days=15)

    results = all_at_once(2, lambda _: purge_undelivered_identities(now=later))

    assert all(isinstance(r, int) for r in results) and sum(results) == 3, results
    assert not Identity.objects.exists()
    assert set(Certificate.objects.values_list("status", flat=True)) == {"revoked"}
    assert AuditEvent.objects.filter(action="revoke").count() == 3
    assert AuditEvent.objects.filter(action="delete").count() == 3
