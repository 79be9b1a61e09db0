"""The lifecycle in the console: renewal state and pending revocations per certificate,
list filters, and the one-row lifecycle settings."""

import datetime

import pytest
import time_machine
from django.utils import timezone

from apps.audit.services import history_for
from apps.certificates.models import Certificate, LifecycleSettings
from apps.certificates.services import lifecycle_settings, sweep_renewals
from apps.devices import services as devices
from tests.certificates.lifecycle_fixtures import *  # noqa: F403

pytestmark = pytest.mark.django_db
LIST = "/admin/certificates/certificate/"
SETTINGS = "/admin/certificates/lifecyclesettings/"
DAY = datetime.timedelta(days=1)


def listed(client, query: str) -> set[int]:
    response = client.get(LIST + query)
    assert response.status_code == 200
    return {row.pk for row in response.context["cl"].result_list}


@pytest.fixture
def renewed(laptop):
    """The laptop's certificate after a renewal: (old, new)."""
    with time_machine.travel(laptop.certificate.not_after - 20 * DAY, tick=False):
        sweep_renewals()
        new = laptop.enroll_from(laptop.checkin())
    return Certificate.objects.get(pk=laptop.certificate.pk), new


def test_a_certificate_shows_its_renewal_state(client, alice, renewed):
    old, new = renewed
    client.force_login(alice)

    page = client.get(f"{LIST}{old.pk}/change/").content.decode()

    assert "Lifecycle (renewal and revocation)" in page
    assert f'<a href="{LIST}{new.pk}/change/">{new}</a>' in page  # renewed by
    assert "Superseded by renewal" in page
    new_page = client.get(f"{LIST}{new.pk}/change/").content.decode()
    assert f'<a href="{LIST}{old.pk}/change/">{old}</a>' in new_page  # renews


def test_filters_find_renewals_and_pending_revocations(client, alice, enroll_laptop):
    due, gone, quiet = enroll_laptop("SN-DUE"), enroll_laptop("SN-GONE"), enroll_laptop("SN-Q")
    Certificate.objects.filter(pk=due.certificate.pk).update(
        not_before=timezone.now() - 355 * DAY, not_after=timezone.now() + 10 * DAY
    )
    devices.unenroll(device=gone.device)
    client.force_login(alice)

    assert listed(client, "?renewal=due") == {due.certificate.pk}
    assert listed(client, "?revocation_due=any") == {gone.certificate.pk}
    assert listed(client, "?revocation_due=past") == set()
    assert listed(client, "?pending_revocation_cause__exact=unenrolled") == {gone.certificate.pk}
    sweep_renewals()
    assert listed(client, "?renewal=triggered") == {due.certificate.pk}
    assert quiet.certificate.pk in listed(client, "")


def test_the_lifecycle_settings_are_one_row_changed_in_place(client, alice):
    client.force_login(alice)
    config = lifecycle_settings()

    assert client.get(SETTINGS).url == f"{SETTINGS}{config.pk}/change/"
    assert client.get(f"{SETTINGS}add/").status_code == 403
    assert client.post(f"{SETTINGS}{config.pk}/delete/", {"post": "yes"}).status_code == 403
    response = client.post(
        f"{SETTINGS}{config.pk}/change/",
        {
            "revocation_grace_hours": 48,
            "expiry_notice_days": 14,
            "expiry_notice_recipients": "pki@zylker.com",
            "identity_purge_days": 14,
        },
    )

    assert response.status_code == 302
    assert LifecycleSettings.objects.get().revocation_grace_hours == 48
    event = history_for(config).first()
    assert event.changes["revocation_grace_hours"] == [24, 48]


def test_without_a_row_the_add_form_offers_the_configured_grace_period(client, alice, settings):
    settings.MDMCERTS_REVOCATION_GRACE_HOURS = 12
    client.force_login(alice)

    response = client.get(f"{SETTINGS}add/")

    assert response.status_code == 200
    assert response.context["adminform"].form.initial["revocation_grace_hours"] == 12
