"""Revocation with grace periods: each cause starts a pending revocation, a cause that
clears within the grace period cancels it, and the revocation sweep revokes (or marks
removed) what is left, publishing each CA's CRL once."""

import datetime

import pytest
import time_machine
from django.utils import timezone

from apps.audit.services import history_for
from apps.certificates.models import Certificate
from apps.certificates.services import (
    lifecycle_settings,
    revoke_certificate,
    sweep_expired,
    sweep_revocations,
)
from apps.devices import services as devices
from apps.devices.models import Device
from apps.pki.models import CertificateRevocationList
from apps.profiles.models import ProfileAssignment
from apps.profiles.services import assign, unassign
from tests.certificates.lifecycle_fixtures import *  # noqa: F403
from tests.certificates.lifecycle_fixtures import crl_serials

pytestmark = pytest.mark.django_db
HOUR = datetime.timedelta(hours=1)


def travel(moment: datetime.datetime):
    return time_machine.travel(moment, tick=False)


def state(certificate: Certificate) -> tuple[str, str]:
    certificate.refresh_from_db()
    return certificate.status, certificate.pending_revocation_cause


def unassign_group(profile, group) -> None:
    unassign(assignment=ProfileAssignment.objects.get(profile=profile, group=group))


CAUSES = {
    "unenrolled": lambda laptop, profile, group: devices.unenroll(device=laptop.device),
    "wiped": lambda laptop, profile, group: devices.mark_wiped(device=laptop.device),
    "retired": lambda laptop, profile, group: devices.retire(device=laptop.device),
    "deleted": lambda laptop, profile, group: laptop.device.delete(),
    "unassigned": lambda laptop, profile, group: unassign_group(profile, group),
    "left its group": lambda laptop, profile, group: devices.save_group(
        group=group, before=None, devices=[]
    ),
    "missing": lambda laptop, profile, group: laptop.report(),
}
EXPECTED_CAUSE = {"left its group": "unassigned"}


@pytest.mark.parametrize("cause", CAUSES)
def test_each_cause_starts_a_grace_period_of_the_global_length(cause, laptop, profile, group):
    moment = (timezone.now() + datetime.timedelta(minutes=1)).replace(microsecond=0)
    if cause == "missing":
        laptop.report(laptop.certificate)  # seen installed first

    with travel(moment):
        CAUSES[cause](laptop, profile, group)

    certificate = Certificate.objects.get(pk=laptop.certificate.pk)
    assert (certificate.status, certificate.pending_revocation_cause) == (
        "pending_revocation",
        EXPECTED_CAUSE.get(cause, cause),
    )
    assert certificate.pending_revocation_since == moment
    assert certificate.revoke_after == moment + 24 * HOUR
    assert history_for(certificate).first().message.startswith("pending revocation (")


def test_a_certificate_never_seen_installed_does_not_go_missing(laptop):
    laptop.report()

    assert state(laptop.certificate) == ("active", "")


def test_a_deactivated_owner_is_found_by_the_sweep_and_reactivation_cancels(laptop, dana):
    dana.is_active = False
    dana.save()

    assert sweep_revocations()["revocations started"] == 1
    assert state(laptop.certificate) == ("pending_revocation", "owner_deactivated")

    dana.is_active = True
    dana.save()
    assert sweep_revocations()["pending revocations cancelled"] == 1
    assert state(laptop.certificate) == ("active", "")


def test_a_status_changed_without_the_service_is_found_by_the_sweep(laptop):
    Device.objects.filter(pk=laptop.device.pk).update(status="retired")

    assert sweep_revocations()["revocations started"] == 1
    assert state(laptop.certificate) == ("pending_revocation", "retired")


def test_reassigning_the_profile_within_the_grace_period_cancels(laptop, profile, group):
    unassign_group(profile, group)

    with travel(timezone.now() + 23 * HOUR):
        assign(profile=profile, device=laptop.device)
        result = sweep_revocations()

    assert state(laptop.certificate) == ("active", "")
    assert result["revoked"] == 0
    assert history_for(laptop.certificate).first().message == (
        "pending revocation cancelled: Profile unassigned from the device no longer holds"
    )


def test_rejoining_the_group_in_the_console_is_found_by_the_sweep(laptop, group):
    group.devices.remove(laptop.device)
    assert sweep_revocations()["revocations started"] == 1

    group.devices.add(laptop.device)

    assert sweep_revocations()["pending revocations cancelled"] == 1
    assert state(laptop.certificate) == ("active", "")


def test_a_certificate_seen_again_in_the_inventory_is_active_again(laptop):
    laptop.report(laptop.certificate)
    laptop.report()
    assert state(laptop.certificate) == ("pending_revocation", "missing")

    laptop.report(laptop.certificate)

    assert state(laptop.certificate) == ("active", "")


def test_a_cause_that_does_not_clear_ends_in_revocation_with_its_reason(laptop, ca):
    start = timezone.now()
    devices.unenroll(device=laptop.device)

    with travel(start + 23 * HOUR):
        early = sweep_revocations()
    with travel(start + 24 * HOUR + datetime.timedelta(seconds=1)):
        due = sweep_revocations()
        again = sweep_revocations()

    certificate = Certificate.objects.get(pk=laptop.certificate.pk)
    assert (early["revoked"], due["revoked"], again["revoked"]) == (0, 1, 0)
    assert (due["CRLs published"], again["CRLs published"]) == (1, 0)
    assert (certificate.status, certificate.revocation_reason) == (
        "revoked",
        "cessation_of_operation",
    )
    assert certificate.pending_revocation_cause == "unenrolled"  # why, kept
    assert crl_serials(ca) == {certificate.serial.lstrip("0"): "Cessation Of Operation"}
    event = history_for(certificate).first()
    assert (event.action, event.message) == (
        "revoke",
        "grace period over (Device unenrolled): revoked",
    )


def test_the_template_grace_period_overrides_the_global_one(template, laptop):
    template.revocation_grace_hours = 2
    template.save()
    lifecycle_settings().save()  # the global one stays 24 hours
    start = timezone.now()

    devices.mark_wiped(device=laptop.device)
    with travel(start + 1 * HOUR):
        assert sweep_revocations()["revoked"] == 0
    with travel(start + 2 * HOUR + datetime.timedelta(seconds=1)):
        assert sweep_revocations()["revoked"] == 1


def test_the_global_grace_period_comes_from_the_lifecycle_settings(laptop):
    config = lifecycle_settings()
    config.revocation_grace_hours = 72
    config.save()
    moment = timezone.now().replace(microsecond=0)

    with travel(moment):
        devices.unenroll(device=laptop.device)

    assert Certificate.objects.get().revoke_after == moment + 72 * HOUR


def test_without_revocation_the_certificate_is_only_marked_removed(template, laptop, ca):
    template.revocation_enabled = False
    template.save()
    devices.unenroll(device=laptop.device)

    with travel(timezone.now() + 25 * HOUR):
        result = sweep_revocations()

    certificate = Certificate.objects.get()
    assert (result["revoked"], result["removed"], result["CRLs published"]) == (0, 1, 0)
    assert (certificate.status, certificate.revocation_reason) == ("removed", "")
    assert certificate.removed_at is not None
    assert not CertificateRevocationList.objects.filter(ca=ca).exists()


def test_one_sweep_revokes_many_and_publishes_the_crl_once(enroll_laptop, ca):
    laptops = [enroll_laptop(f"SN-{n}") for n in range(3)]
    for laptop in laptops:
        devices.unenroll(device=laptop.device)

    with travel(timezone.now() + 25 * HOUR):
        result = sweep_revocations()

    crl = CertificateRevocationList.objects.get(ca=ca)
    assert (result["revoked"], result["CRLs published"]) == (3, 1)
    assert (crl.number, crl.revoked_count) == (ca.crl_number + 1, 3)
    assert set(crl_serials(ca)) == {lap.certificate.serial.lstrip("0") for lap in laptops}


def test_a_crl_missing_a_revocation_is_published_by_the_next_sweep(laptop, ca):
    devices.unenroll(device=laptop.device)
    with travel(timezone.now() + 25 * HOUR):
        sweep_revocations()
    CertificateRevocationList.objects.filter(ca=ca).delete()  # as if the sweep died there

    assert sweep_revocations()["CRLs published"] == 1
    assert list(crl_serials(ca)) == [laptop.certificate.serial.lstrip("0")]


def test_manual_revocation_is_immediate_even_during_a_grace_period(
    laptop, alice, ca, django_capture_on_commit_callbacks
):
    devices.unenroll(device=laptop.device)

    with django_capture_on_commit_callbacks(execute=True):
        revoke_certificate(certificate=laptop.certificate, reason="key_compromise", actor=alice)

    certificate = Certificate.objects.get()
    assert (certificate.status, certificate.revocation_reason) == ("revoked", "key_compromise")
    assert crl_serials(ca) == {certificate.serial.lstrip("0"): "Key Compromise"}
    with travel(timezone.now() + 25 * HOUR):
        assert sweep_revocations()["revoked"] == 0


def test_expired_certificates_are_marked_expired_pending_or_not(enroll_laptop):
    kept, pending = enroll_laptop("SN-KEPT"), enroll_laptop("SN-PENDING")
    devices.unenroll(device=pending.device)

    with travel(kept.certificate.not_after - HOUR):
        assert sweep_expired() == {"expired": 0}
    with travel(kept.certificate.not_after + HOUR):
        assert sweep_expired() == {"expired": 2}
        assert sweep_expired() == {"expired": 0}
        assert sweep_revocations()["revoked"] == 0  # an expired certificate is not revoked

    assert set(Certificate.objects.values_list("status", flat=True)) == {"expired"}
