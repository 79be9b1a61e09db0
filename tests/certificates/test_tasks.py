"""The lifecycle's Celery tasks and their beat schedules: thin wrappers of the sweeps,
acknowledged late, retried only for errors a retry cures, scheduled in the database."""

import importlib

import pytest
from django.apps import apps as django_apps
from django.db import InterfaceError, OperationalError
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from apps.certificates import tasks
from apps.devices import services as devices
from mdmcerts.celery import app as celery_app
from tests.certificates.lifecycle_fixtures import *  # noqa: F403

pytestmark = pytest.mark.django_db
LIFECYCLE_TASKS = [
    tasks.renewal_sweep,
    tasks.revocation_sweep,
    tasks.expiry_sweep,
    tasks.expiry_digest,
    tasks.crl_republish,
    tasks.generate_identities,
    tasks.purge_identities,
]
SCHEDULES = importlib.import_module("apps.certificates.migrations.0006_beat_schedules")


@pytest.mark.parametrize("task", LIFECYCLE_TASKS, ids=lambda task: task.name)
def test_each_task_is_acked_late_and_retries_only_database_errors(task):
    assert task.acks_late is True
    assert task.autoretry_for == (OperationalError, InterfaceError)
    assert task.max_retries == 3
    assert task.name in celery_app.tasks  # found by autodiscovery, as a worker finds it


def test_a_task_runs_its_sweep_and_reports_what_it_did(laptop):
    devices.unenroll(device=laptop.device)

    result = tasks.revocation_sweep.apply().get()

    assert result == {
        "revocations started": 0,  # unenroll started it already
        "pending revocations cancelled": 0,
        "revoked": 0,
        "removed": 0,
        "CRLs published": 0,
    }


def test_the_migration_schedules_every_lifecycle_task():
    scheduled = {
        row.task: (str(row.interval or row.crontab), row.enabled)
        for row in PeriodicTask.objects.filter(task__startswith="certificates.")
    }

    assert scheduled == {
        "certificates.renewal_sweep": ("every hour", True),
        "certificates.revocation_sweep": ("every 15 minutes", True),
        "certificates.expiry_sweep": ("every hour", True),
        "certificates.expiry_digest": ("0 7 * * * (m/h/dM/MY/d) UTC", True),
        "certificates.crl_republish": ("every hour", True),
        "certificates.generate_identities": ("every hour", True),
        "certificates.purge_identities": ("30 3 * * * (m/h/dM/MY/d) UTC", True),
    }
    assert set(scheduled) == {task.name for task in LIFECYCLE_TASKS}


def test_running_the_migration_again_keeps_what_an_administrator_changed():
    renewal = PeriodicTask.objects.get(task="certificates.renewal_sweep")
    renewal.interval = IntervalSchedule.objects.create(every=6, period="hours")
    renewal.enabled = False
    renewal.save()
    PeriodicTask.objects.filter(task="certificates.expiry_sweep").delete()

    SCHEDULES.create_schedules(django_apps, None)

    renewal.refresh_from_db()
    assert (str(renewal.interval), renewal.enabled) == ("every 6 hours", False)
    assert PeriodicTask.objects.filter(task="certificates.expiry_sweep").count() == 1
    assert PeriodicTask.objects.filter(task__startswith="certificates.").count() == 7
