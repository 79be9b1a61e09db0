"""The daily expiry digest: certificates expiring within the notice window that will not
renew by themselves, emailed once a day to the configured recipients or the superusers."""

import datetime

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from apps.certificates.services import lifecycle_settings, send_expiry_digest
from apps.devices import services as devices
from tests.certificates.lifecycle_fixtures import *  # noqa: F403
from tests.factories import force_certificate, force_template, force_user

pytestmark = pytest.mark.django_db
DAY = datetime.timedelta(days=1)


@pytest.fixture
def manual(ca, charlie):
    """A certificate issued by hand (no device, no renewal) for charlie."""
    template = force_template(ca=ca, auto_renew=False, validity_days=365)
    return force_certificate(template=template, user=charlie)


def test_it_lists_what_will_not_renew_by_itself(alice, manual, enroll_laptop):
    renews, stranded = enroll_laptop("SN-RENEWS"), enroll_laptop("SN-STRANDED")
    devices.unenroll(device=stranded.device)
    moment = renews.certificate.not_after - 10 * DAY  # all three expire within 30 days

    with time_machine.travel(moment, tick=False):
        assert send_expiry_digest() == {"digests sent": 1, "certificates listed": 1}

    [message] = mail.outbox
    assert message.to == ["alice@example.com"]
    assert message.subject == ("[mdmcerts] 1 certificate(s) expire within 30 days without renewal")
    assert manual.serial in message.body
    assert "(no automatic renewal)" in message.body
    assert renews.certificate.serial not in message.body
    assert stranded.certificate.serial not in message.body  # pending revocation, not active
    assert "/admin/certificates/certificate/?status__exact=active" in message.body


def test_an_auto_renewing_certificate_on_no_device_is_listed_with_the_reason(alice, ca, dana):
    template = force_template(ca=ca, auto_renew=True, validity_days=365)
    certificate = force_certificate(template=template, user=dana)  # SCEP, static challenge

    with time_machine.travel(certificate.not_after - DAY, tick=False):
        send_expiry_digest()

    assert f"serial {certificate.serial}" in mail.outbox[0].body
    assert "(on no managed device)" in mail.outbox[0].body


def test_it_is_sent_once_a_day(alice, manual):
    with time_machine.travel(manual.not_after - 5 * DAY, tick=False):
        first = send_expiry_digest()
        second = send_expiry_digest()
    with time_machine.travel(manual.not_after - 4 * DAY, tick=False):
        next_day = send_expiry_digest()

    assert [first["digests sent"], second["digests sent"], next_day["digests sent"]] == [1, 0, 1]
    assert len(mail.outbox) == 2


def test_nothing_is_sent_when_nothing_expires_without_renewal(alice, laptop, manual):
    with time_machine.travel(timezone.now() + DAY, tick=False):
        config = lifecycle_settings()
        config.expiry_notice_days = 7  # both expire in a year
        config.save()
        assert send_expiry_digest() == {"digests sent": 0, "certificates listed": 0}

    assert mail.outbox == []


def test_it_goes_to_the_configured_recipients_instead_of_the_superusers(alice, manual):
    config = lifecycle_settings()
    config.expiry_notice_recipients = "pki-team@zylker.com\n\n  secops@zylker.com \n"
    config.save()

    with time_machine.travel(manual.not_after - DAY, tick=False):
        send_expiry_digest()

    assert mail.outbox[0].to == ["pki-team@zylker.com", "secops@zylker.com"]


def test_inactive_superusers_and_those_without_email_get_nothing(alice, manual):
    force_user("olivia", is_superuser=True, is_active=False)
    force_user("quinn", is_superuser=True, email="")

    with time_machine.travel(manual.not_after - DAY, tick=False):
        send_expiry_digest()

    assert mail.outbox[0].to == ["alice@example.com"]
