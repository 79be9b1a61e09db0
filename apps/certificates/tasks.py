"""Celery tasks of the certificate lifecycle: thin wrappers of ``services`` (and of
``identities`` for server-generated keys), run by django-celery-beat.

Every task is idempotent and safe to run twice at once (the services claim their rows),
acknowledged late so that a worker lost mid-task leaves the message to another, and
retried a few times only for errors that a retry can cure: the database went away or
was busy.
"""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from apps.certificates import identities, services

RETRYABLE = (OperationalError, InterfaceError)
LIFECYCLE_TASK = {
    "acks_late": True,
    "autoretry_for": RETRYABLE,
    "max_retries": 3,
    "retry_backoff": 30,
    "retry_backoff_max": 600,
    "retry_jitter": True,
}


@shared_task(name="certificates.renewal_sweep", **LIFECYCLE_TASK)
def renewal_sweep() -> dict[str, int]:
    """Re-trigger the renewal of certificates inside their renewal window (hourly)."""
    return services.sweep_renewals()


@shared_task(name="certificates.revocation_sweep", **LIFECYCLE_TASK)
def revocation_sweep() -> dict[str, int]:
    """Start, cancel and end pending revocations; publish the CRLs they change (every
    15 minutes)."""
    return services.sweep_revocations()


@shared_task(name="certificates.expiry_sweep", **LIFECYCLE_TASK)
def expiry_sweep() -> dict[str, int]:
    """Mark expired certificates expired (hourly)."""
    return services.sweep_expired()


@shared_task(name="certificates.expiry_digest", **LIFECYCLE_TASK)
def expiry_digest() -> dict[str, int]:
    """Email the day's digest of certificates that expire without renewal (daily)."""
    return services.send_expiry_digest()


@shared_task(name="certificates.crl_republish", **LIFECYCLE_TASK)
def crl_republish() -> dict[str, int]:
    """Republish local CAs' CRLs before their nextUpdate (hourly)."""
    return services.sweep_crls()


@shared_task(name="certificates.generate_identities", **LIFECYCLE_TASK)
def generate_identities() -> dict[str, int]:
    """Generate server-side identities for devices that a profile targets (early)."""
    return {"identities generated": identities.generate_pending_identities()}


@shared_task(name="certificates.purge_identities", **LIFECYCLE_TASK)
def purge_identities() -> dict[str, int]:
    """Delete server-side identities not delivered in time, revoking their certificates
    (daily)."""
    return {"identities purged": identities.purge_undelivered_identities()}
