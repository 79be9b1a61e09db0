"""The renewal sweep: certificates inside their renewal window get the profile that
carries them again (a new delivery generation, a fresh challenge), once; the device
enrolls again and the new certificate supersedes the old one."""

import datetime

import pytest
import time_machine

from apps.audit.services import history_for
from apps.certificates.models import Certificate
from apps.certificates.services import sweep_renewals, sweep_revocations
from apps.enrollment.models import Challenge
from tests.certificates.lifecycle_fixtures import *  # noqa: F403
from tests.certificates.lifecycle_fixtures import crl_serials, delivery_of

pytestmark = pytest.mark.django_db
DAY = datetime.timedelta(days=1)


def travel(moment: datetime.datetime):
    return time_machine.travel(moment, tick=False)


def test_a_certificate_inside_its_renewal_window_gets_its_profile_again(laptop, profile):
    moment = laptop.certificate.not_after - 29 * DAY

    with travel(moment):
        assert sweep_renewals() == {"renewals re-triggered": 1}
        answer = laptop.checkin()

    certificate = Certificate.objects.get(pk=laptop.certificate.pk)
    assert certificate.renewal_triggered_at == moment
    assert certificate.status == "active"
    assert [(item["profile_id"], item["generation"]) for item in answer.install] == [
        (profile.pk, 2)
    ]
    assert Challenge.objects.filter(device=laptop.device).count() == 2
    event = history_for(certificate).first()
    assert event.message == "renewal re-triggered: the profile that carries it is delivered again"
    assert event.actor_repr == "system"


def test_renewal_is_re_triggered_once_however_often_the_sweep_runs(laptop, profile):
    with travel(laptop.certificate.not_after - 20 * DAY):
        first = sweep_renewals()
        second = sweep_renewals()
    with travel(laptop.certificate.not_after - 10 * DAY):
        later = sweep_renewals()

    assert [first, second, later] == [{"renewals re-triggered": n} for n in (1, 0, 0)]
    assert delivery_of(laptop, profile).generation == 2


def test_a_certificate_before_its_renewal_window_is_left_alone(laptop, profile):
    with travel(laptop.certificate.not_after - 31 * DAY):
        assert sweep_renewals() == {"renewals re-triggered": 0}

    assert Certificate.objects.get().renewal_triggered_at is None
    assert delivery_of(laptop, profile).generation == 1


def test_a_validity_shorter_than_twice_the_window_renews_at_half_life(
    template, enroll_laptop, profile
):
    template.validity_days, template.renew_before_days = 10, 30
    template.save()
    laptop = enroll_laptop()
    cert = laptop.certificate
    half_life = cert.not_before + (cert.not_after - cert.not_before) / 2

    with travel(half_life - datetime.timedelta(minutes=1)):
        before = sweep_renewals()
    with travel(half_life + datetime.timedelta(minutes=1)):
        after = sweep_renewals()

    assert (before, after) == ({"renewals re-triggered": 0}, {"renewals re-triggered": 1})


def test_templates_without_automatic_renewal_are_not_renewed(template, laptop, profile):
    template.auto_renew = False
    template.save()

    with travel(laptop.certificate.not_after - DAY):
        assert sweep_renewals() == {"renewals re-triggered": 0}

    assert delivery_of(laptop, profile).generation == 1


def test_a_certificate_whose_profile_no_longer_reaches_the_device_is_not_renewed(
    laptop, profile, group
):
    group.devices.remove(laptop.device)
    laptop.checkin()  # the device is told to remove the profile

    with travel(laptop.certificate.not_after - DAY):
        assert sweep_renewals() == {"renewals re-triggered": 0}


def test_each_due_certificate_is_renewed_and_only_its_device_gets_the_profile_again(
    enroll_laptop, profile
):
    early, late = enroll_laptop("SN-EARLY"), enroll_laptop("SN-LATE")
    Certificate.objects.filter(pk=late.certificate.pk).update(
        not_after=late.certificate.not_after + 60 * DAY
    )

    with travel(early.certificate.not_after - DAY):
        assert sweep_renewals() == {"renewals re-triggered": 1}

    assert delivery_of(early, profile).generation == 2
    assert delivery_of(late, profile).generation == 1


def test_the_device_enrolls_again_and_the_new_certificate_supersedes_the_old_one(
    laptop, profile, ca
):
    old = laptop.certificate
    moment = old.not_after - 20 * DAY
    with travel(moment):
        sweep_renewals()
        new = laptop.enroll_from(laptop.checkin())

    old.refresh_from_db()
    assert new.replaces == old
    assert new.profile == profile and new.device == laptop.device
    assert (old.status, old.pending_revocation_cause) == ("superseded", "superseded")
    assert old.revoke_after == moment + datetime.timedelta(hours=24)

    with travel(moment + datetime.timedelta(hours=25)):
        assert sweep_renewals() == {"renewals re-triggered": 0}  # the new one is not due
        result = sweep_revocations()

    old.refresh_from_db()
    assert (result["revoked"], result["CRLs published"]) == (1, 1)
    assert (old.status, old.revocation_reason) == ("revoked", "superseded")
    assert crl_serials(ca) == {old.serial.lstrip("0"): "Superseded"}
    assert Certificate.objects.get(pk=new.pk).status == "active"


def test_an_enrollment_without_a_re_triggered_renewal_supersedes_nothing(laptop, profile):
    from apps.devices.services import redeliver_profiles

    redeliver_profiles(device=laptop.device)
    new = laptop.enroll_from(laptop.checkin())

    assert new.replaces is None
    assert Certificate.objects.get(pk=laptop.certificate.pk).status == "active"


def test_a_sweep_in_many_batches_moves_each_delivery_on_once(enroll_laptop, profile, monkeypatch):
    """Batches follow each other (keyset); a delivery carrying due certificates of two
    batches gets one new generation, not one per batch."""
    from apps.certificates import services

    monkeypatch.setattr(services, "LIFECYCLE_BATCH", 1)
    first, second = enroll_laptop("SN-ONE"), enroll_laptop("SN-TWO")
    twin = Certificate.objects.get(pk=first.certificate.pk)
    twin.pk, twin.serial, twin.fingerprint_sha256 = None, "ab" * 10, "cd" * 32
    twin.save(force_insert=True)  # a second due certificate on the same device and profile

    with travel(first.certificate.not_after - DAY):
        assert sweep_renewals() == {"renewals re-triggered": 3}

    assert delivery_of(first, profile).generation == 2
    assert delivery_of(second, profile).generation == 2
    assert Certificate.objects.filter(renewal_triggered_at__isnull=True).count() == 0
