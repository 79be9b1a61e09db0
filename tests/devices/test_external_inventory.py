"""Certificates an external SCEP CA issued in delegate or proxy mode, learned from the
device's inventory: recorded once, linked to the device, the template and the profile,
only when the pinned CA signed them and their subject is the template's for the device;
a renewal supersedes the certificate it renews.

Personas: dana's laptop reports (``tests/devices/conftest.py``); erin's is another.
"""

import datetime

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.certificates.models import Certificate
from apps.devices.models import InstalledCertificate
from apps.enrollment.choices import ExternalDelivery
from apps.pki import crypto
from tests.external_issuer import (
    carrying_profile,
    external_template,
    force_external_issuer,
    pem_entry,
)
from tests.factories import force_user

pytestmark = pytest.mark.django_db

DANAS_SUBJECT = "O=Zylker,OU=dana,CN=SN-DANA-1"


@pytest.fixture
def laptop(enroll):
    """dana's laptop, serial SN-DANA-1."""
    return enroll()


@pytest.fixture
def issuer(db):
    return force_external_issuer()


@pytest.fixture
def carried(issuer, laptop):
    """A delegate template of the external CA in a profile assigned to dana's laptop."""
    template = external_template(issuer.ca)
    return template, carrying_profile(template, laptop.device)


def report(laptop, *certificates) -> dict:
    return laptop.checkin({"installed_certificates": [pem_entry(c) for c in certificates]})


def learned_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(message__startswith="learned from the inventory"))


def test_a_reported_certificate_of_the_external_ca_is_learned_and_linked(
    issuer, carried, laptop, dana
):
    template, profile = carried
    cert = issuer.issue(DANAS_SUBJECT)

    report(laptop, cert)

    row = Certificate.objects.get()
    assert (row.ca, row.template, row.device, row.profile, row.user, row.source) == (
        issuer.ca,
        template,
        laptop.device,
        profile,
        dana,
        "scep",
    )
    assert (row.serial, row.fingerprint_sha256, row.subject, row.status) == (
        crypto.serial_hex(cert),
        crypto.fingerprint_sha256(cert),
        DANAS_SUBJECT,
        "active",
    )
    assert (row.not_before, row.not_after) == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    assert row.certificate == cert
    assert InstalledCertificate.objects.get().certificate == row
    (event,) = learned_events()
    assert (event.action, event.object_id) == ("create", str(row.pk))
    assert event.message == (
        f"learned from the inventory of device {laptop.device} (#{laptop.device.pk}): issued "
        f"by external CA server {issuer.ca} for request template {template}, profile {profile}"
    )


def test_a_certificate_reported_again_is_recorded_once(issuer, carried, laptop):
    cert = issuer.issue(DANAS_SUBJECT)
    report(laptop, cert)

    report(laptop, cert)

    assert Certificate.objects.count() == 1
    assert InstalledCertificate.objects.get().certificate == Certificate.objects.get()
    assert len(learned_events()) == 1


def test_a_proxy_templates_certificate_is_learned_too(issuer, laptop):
    template = external_template(issuer.ca, ExternalDelivery.PROXY)
    carrying_profile(template, laptop.device)

    report(laptop, issuer.issue(DANAS_SUBJECT))

    assert Certificate.objects.get().template == template


def test_a_forged_certificate_with_the_cas_name_is_not_learned(issuer, carried, laptop):
    forged = issuer.issue(DANAS_SUBJECT, key=ec.generate_private_key(ec.SECP256R1()))

    report(laptop, forged)

    assert not Certificate.objects.exists()
    row = InstalledCertificate.objects.get()
    assert (row.certificate, row.subject) == (None, DANAS_SUBJECT)
    assert learned_events() == []


def test_a_certificate_for_another_subject_is_not_learned(issuer, carried, laptop):
    report(laptop, issuer.issue("O=Zylker,OU=erin,CN=SN-ERIN-1"))

    assert not Certificate.objects.exists()
    assert InstalledCertificate.objects.get().certificate is None


def test_the_subject_is_compared_without_regard_to_case(issuer, carried, laptop):
    report(laptop, issuer.issue("O=ZYLKER,OU=Dana,CN=sn-dana-1"))

    assert Certificate.objects.get().device == laptop.device


def test_a_certificate_of_a_template_no_profile_targets_is_not_learned(issuer, laptop):
    external_template(issuer.ca)  # not in any profile of the device

    report(laptop, issuer.issue(DANAS_SUBJECT))

    assert not Certificate.objects.exists()


def test_a_server_side_template_learns_nothing(issuer, carried, laptop):
    template, _ = carried
    template.external_delivery = ExternalDelivery.SERVER_SIDE
    template.save()

    report(laptop, issuer.issue(DANAS_SUBJECT))

    assert not Certificate.objects.exists()


def test_the_cas_own_certificate_in_the_inventory_is_not_learned(issuer, carried, laptop):
    report(laptop, issuer.ca.certificate)

    assert not Certificate.objects.exists()
    assert InstalledCertificate.objects.get().subject == issuer.ca.subject


def test_a_fingerprint_alone_teaches_nothing(issuer, carried, laptop):
    cert = issuer.issue(DANAS_SUBJECT)

    laptop.checkin(
        {"installed_certificates": [{"fingerprint_sha256": crypto.fingerprint_sha256(cert)}]}
    )

    assert not Certificate.objects.exists()


def test_a_certificate_already_learned_from_another_device_is_linked_not_copied(
    issuer, carried, laptop, enroll
):
    cert = issuer.issue(DANAS_SUBJECT)
    report(laptop, cert)
    erins = enroll("SN-ERIN-1", owner=force_user("erin"))
    template, _ = carried
    carrying_profile(template, erins.device)

    report(erins, cert)

    row = Certificate.objects.get()
    assert row.device == laptop.device
    assert InstalledCertificate.objects.get(device=erins.device).certificate == row


def test_a_renewed_certificate_supersedes_the_one_whose_renewal_was_triggered(
    issuer, carried, laptop
):
    first = issuer.issue(DANAS_SUBJECT)
    report(laptop, first)
    old = Certificate.objects.get()
    old.renewal_triggered_at = timezone.now()
    old.save()
    later = timezone.now() + datetime.timedelta(days=1)

    with time_machine.travel(later, tick=False):
        report(laptop, issuer.issue(DANAS_SUBJECT, now=later))

    new = Certificate.objects.exclude(pk=old.pk).get()
    old.refresh_from_db()
    assert (new.replaces, new.status) == (old, "active")
    assert (old.status, old.pending_revocation_cause) == ("superseded", "superseded")
    assert InstalledCertificate.objects.get().certificate == new


def test_of_two_templates_asking_the_same_subject_the_one_without_a_certificate_gets_it(
    issuer, carried, laptop
):
    wifi, _ = carried
    vpn = external_template(issuer.ca)
    vpn_profile = carrying_profile(vpn, laptop.device)
    wifi_cert, vpn_cert = issuer.issue(DANAS_SUBJECT), issuer.issue(DANAS_SUBJECT)
    report(laptop, wifi_cert)

    report(laptop, wifi_cert, vpn_cert)

    learned = Certificate.objects.get(fingerprint_sha256=crypto.fingerprint_sha256(vpn_cert))
    assert (learned.template, learned.profile) == (vpn, vpn_profile)
    assert (
        Certificate.objects.get(fingerprint_sha256=crypto.fingerprint_sha256(wifi_cert)).template
        == wifi
    )
