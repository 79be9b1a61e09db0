"""The lifecycle's periodic tasks in django-celery-beat, editable in the admin.

Each schedule is created once: a task an administrator changed or disabled is left as it
is when the migration runs again (a new database, a reinstall of the app's migrations).
"""

from django.db import migrations

HOURLY = ("interval", 1, "hours")
# (periodic task name, Celery task, schedule, description)
SCHEDULES = [
    (
        "Certificate renewal",
        "certificates.renewal_sweep",
        HOURLY,
        "Re-trigger delivery of certificates inside their template's renewal window.",
    ),
    (
        "Certificate revocation",
        "certificates.revocation_sweep",
        ("interval", 15, "minutes"),
        "Start, cancel and end revocation grace periods; publish the CRLs they change.",
    ),
    (
        "Certificate expiry",
        "certificates.expiry_sweep",
        HOURLY,
        "Mark certificates past their notAfter expired.",
    ),
    (
        "Certificate expiry digest",
        "certificates.expiry_digest",
        ("crontab", "0", "7"),
        "Email the certificates expiring soon that will not renew by themselves (07:00 UTC).",
    ),
    (
        "CRL republication",
        "certificates.crl_republish",
        HOURLY,
        "Republish local CAs' CRLs before their nextUpdate.",
    ),
    (
        "Identity generation",
        "certificates.generate_identities",
        HOURLY,
        "Generate server-side identities for devices targeted by a PKCS#12 payload.",
    ),
    (
        "Identity purge",
        "certificates.purge_identities",
        ("crontab", "30", "3"),
        "Delete identities not delivered in time and revoke their certificates (03:30 UTC).",
    ),
]


def _schedule(apps, spec):
    if spec[0] == "interval":
        IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
        every, period = spec[1:]
        return {"interval": IntervalSchedule.objects.get_or_create(every=every, period=period)[0]}
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    minute, hour = spec[1:]
    crontab = CrontabSchedule.objects.filter(
        minute=minute, hour=hour, day_of_week="*", day_of_month="*", month_of_year="*"
    ).first() or CrontabSchedule.objects.create(
        minute=minute, hour=hour, day_of_week="*", day_of_month="*", month_of_year="*"
    )
    return {"crontab": crontab}


def create_schedules(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, spec, description in SCHEDULES:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        PeriodicTask.objects.create(name=name, task=task, description=description, **_schedule(apps, spec))


def remove_schedules(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in SCHEDULES]).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("certificates", "0005_lifecycle"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
